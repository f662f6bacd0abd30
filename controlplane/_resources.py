"""Mesh resources as the control plane holds them, and loading them from YAML manifests.

A `Resource` is one Istio object (kind, namespace, name, spec) plus where it came from
(file, document index, line) so every later error can point back at the manifest. YAML is
parsed node by node to keep the line of every field; a document that does not parse becomes
a `ParseProblem` instead of an exception, because manifests are untrusted input.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_NAMESPACE = "default"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_versions = itertools.count(1)


@dataclass(frozen=True)
class Origin:
    """Where a document came from: file (or other source name), document index, first line."""

    file: str = ""
    document: int = 0
    line: int = 0
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, path: str) -> int:
        """Line of the field at dotted `path` (or its nearest parent that has one)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.line

    def describe(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class ResourceKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Resource:
    """One mesh object. `spec` is the parsed YAML mapping; treat it as read-only."""

    kind: str
    api_version: str
    name: str
    namespace: str
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    creation_timestamp: float = 0.0
    resource_version: str = ""
    origin: Origin = field(default_factory=Origin, compare=False)

    @property
    def key(self) -> ResourceKey:
        return ResourceKey(self.kind, self.namespace, self.name)

    def same_content(self, other: Resource) -> bool:
        return (self.api_version, self.spec, self.labels, self.annotations) == (
            other.api_version, other.spec, other.labels, other.annotations)

    def with_version(self, created: float | None = None) -> Resource:
        """A copy with a fresh resource version (and creation time when it has none)."""
        return replace(self, resource_version=str(next(_versions)),
                       creation_timestamp=self.creation_timestamp or created or time.time())

    def to_manifest(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        if self.resource_version:
            metadata["resourceVersion"] = self.resource_version
        if self.creation_timestamp:
            metadata["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.creation_timestamp))
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": metadata, "spec": self.spec}


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest file: the parsed body (None if empty) and its origin."""

    body: Any
    origin: Origin


@dataclass(frozen=True)
class ParseProblem:
    """A document (or a whole file) that is not valid YAML."""

    message: str
    origin: Origin


def _field_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                out[path] = key_node.start_mark.line + 1
                _field_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = f"{prefix}[{index}]"
            out[path] = item.start_mark.line + 1
            _field_lines(item, path, out)


def parse_documents(text: str, file: str = "") -> Iterator[Document | ParseProblem]:
    """Every document of a (multi-document) YAML text, each with its field lines."""
    loader = yaml.SafeLoader(text)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            lines: dict[str, int] = {}
            _field_lines(node, "", lines)
            body = loader.construct_document(node)
            yield Document(body, Origin(file, index, node.start_mark.line + 1, lines))
            index += 1
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(err, "problem", None) or str(err)
        yield ParseProblem(f"invalid YAML: {problem}", Origin(file, index, line))
    finally:
        loader.dispose()


def manifest_files(path: Path) -> list[Path]:
    """The manifest files of a file or a directory (recursively, sorted, hidden ones skipped)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def resource_from_body(body: Mapping[str, Any], origin: Origin, default_namespace: str = DEFAULT_NAMESPACE) -> Resource:
    """Build a Resource from a document already checked by validation (shape assumed)."""
    metadata = body.get("metadata") or {}
    return Resource(
        kind=str(body["kind"]),
        api_version=str(body["apiVersion"]),
        name=str(metadata["name"]),
        namespace=str(metadata.get("namespace") or default_namespace),
        spec=body.get("spec") or {},
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        origin=origin,
    )


__all__ = [
    "DEFAULT_NAMESPACE",
    "Document",
    "Origin",
    "ParseProblem",
    "Resource",
    "ResourceKey",
    "manifest_files",
    "parse_documents",
    "resource_from_body",
]
