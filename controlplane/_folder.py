"""The folder source: a directory of YAML manifests, watched by polling file stamps.

A file that changed is parsed and validated again. A document with errors is reported and
the resource it names keeps its last good version; a file that is not YAML at all keeps
everything it last defined. Deleting a file removes its resources. Resources applied through
the operator API are written under `applied/` in the same folder, so the folder stays the one
source of truth and survives a restart.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from controlplane._resources import (
    DEFAULT_NAMESPACE,
    Origin,
    ParseProblem,
    Resource,
    ResourceKey,
    manifest_files,
    parse_documents,
)
from controlplane._secrets import SecretError, is_secret, pull_secret
from controlplane._store import ConfigStore
from controlplane._validation import ERROR, PARSE_ERROR, SCHEMA_ERROR, Diagnostic, validate_document

SOURCE = "folder"
APPLIED_DIR = "applied"


@dataclass
class _FileState:
    stamp: tuple[int, int]
    resources: dict[ResourceKey, Resource] = field(default_factory=dict)
    findings: list[Diagnostic] = field(default_factory=list)


class FolderSource:
    """Keeps the store in step with a directory; `scan()` once, or `watch()` forever."""

    def __init__(self, directory: Path, store: ConfigStore, default_namespace: str = DEFAULT_NAMESPACE) -> None:
        self.directory = Path(directory)
        self.store = store
        self.default_namespace = default_namespace
        self._files: dict[Path, _FileState] = {}

    def scan(self) -> bool:
        """Re-read changed, new and deleted files; returns whether the store changed."""
        current = {p: self._stamp(p) for p in manifest_files(self.directory)} if self.directory.is_dir() else {}
        dirty = False
        for path in list(self._files):
            if path not in current:
                del self._files[path]
                dirty = True
        for path, stamp in current.items():
            state = self._files.get(path)
            if state is not None and state.stamp == stamp:
                continue
            self._files[path] = self._load(path, stamp, state)
            dirty = True
        if not dirty:
            return False
        resources = [r for state in self._files.values() for r in state.resources.values()]
        findings = [d for path in sorted(self._files) for d in self._files[path].findings]
        return self.store.replace_source(SOURCE, resources, findings)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        try:
            info = path.stat()
        except OSError:
            return (0, 0)
        return (info.st_mtime_ns, info.st_size)

    def _label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.directory))
        except ValueError:
            return str(path)

    def _load(self, path: Path, stamp: tuple[int, int], previous: _FileState | None) -> _FileState:
        label = self._label(path)
        last_good = previous.resources if previous is not None else {}
        state = _FileState(stamp)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            state.findings.append(Diagnostic(ERROR, PARSE_ERROR, f"cannot read: {err}", Origin(label)))
            state.resources = dict(last_good)
            return state
        for doc in parse_documents(text, label):
            if isinstance(doc, ParseProblem):
                state.findings.append(Diagnostic(ERROR, PARSE_ERROR, doc.message + " (keeping the last good version)",
                                                 doc.origin))
                for key, res in last_good.items():
                    state.resources.setdefault(key, res)
                continue
            if is_secret(doc.body):
                try:
                    secret = pull_secret(doc.body, doc.origin, self.default_namespace)
                except SecretError as err:
                    state.findings.append(Diagnostic(ERROR, SCHEMA_ERROR, str(err), doc.origin))
                    continue
                if secret is not None:
                    state.resources[secret.key] = secret
                continue
            resource, found = validate_document(doc, self.default_namespace)
            state.findings.extend(found)
            if resource is not None:
                state.resources[resource.key] = resource
                continue
            named = _key_of(doc.body, self.default_namespace)
            if named is not None and named in last_good:
                state.resources[named] = last_good[named]  # an invalid edit keeps the last good version
        return state

    async def watch(self, interval: float = 0.2) -> None:
        """Poll the folder's file stamps forever (cancel the task to stop)."""
        while True:
            self.scan()
            await asyncio.sleep(interval)

    # ---- writes from the operator API --------------------------------------------------------
    def applied_path(self, key: ResourceKey) -> Path:
        return self.directory / APPLIED_DIR / f"{key.kind.lower()}.{key.namespace}.{key.name}.yaml"

    def write(self, resource: Resource) -> Path:
        """Persist an applied resource (replacing a previous apply of the same key)."""
        path = self.applied_path(resource.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = resource.to_manifest()
        manifest["metadata"].pop("resourceVersion", None)
        manifest["metadata"].pop("creationTimestamp", None)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        os.replace(temporary, path)
        return path

    def owner_file(self, key: ResourceKey) -> Path | None:
        for path, state in self._files.items():
            if key in state.resources:
                return path
        return None

    def remove(self, key: ResourceKey) -> Path:
        """Delete an applied resource; resources from operators' own files are theirs to edit."""
        owner = self.owner_file(key)
        if owner is None:
            raise KeyError(str(key))
        if owner != self.applied_path(key):
            raise PermissionError(f"{key} is defined in {self._label(owner)}; edit or remove that file")
        owner.unlink()
        return owner


def _key_of(body: object, default_namespace: str) -> ResourceKey | None:
    if not isinstance(body, dict):
        return None
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(body.get("kind"), str) or not metadata.get("name"):
        return None
    return ResourceKey(body["kind"], str(metadata.get("namespace") or default_namespace), str(metadata["name"]))


__all__ = ["APPLIED_DIR", "SOURCE", "FolderSource"]
