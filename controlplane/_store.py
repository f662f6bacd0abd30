"""The config store: the resources every source contributes, with change notification.

Sources (a folder of YAML, Kubernetes, the operator API) each replace their own slice of
resources; the store keeps one resource per key, stamps a new resource version only when
content changes (so unchanged resources do not trigger Always pulls or pushes), and calls
its listeners after every change. Findings from the sources (bad files, rejected documents)
are kept next to the resources so `analyze` and the API can show them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace

from controlplane._resources import Resource, ResourceKey
from controlplane._validation import Diagnostic, check_references

Listener = Callable[[], None]


class ConfigStore:
    """Resources by key across sources; thread-safe, listeners run outside the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_source: dict[str, dict[ResourceKey, Resource]] = {}
        self._findings: dict[str, list[Diagnostic]] = {}
        self._listeners: list[Listener] = []
        self.generation = 0

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def replace_source(self, source: str, resources: Iterable[Resource], findings: Iterable[Diagnostic] = ()) -> bool:
        """Set everything `source` contributes; returns whether any resource changed."""
        with self._lock:
            old = self._by_source.get(source, {})
            new: dict[ResourceKey, Resource] = {}
            for res in resources:
                previous = old.get(res.key)
                if previous is not None and previous.same_content(res):
                    new[res.key] = replace(previous, origin=res.origin)
                elif previous is not None:
                    new[res.key] = replace(res, creation_timestamp=previous.creation_timestamp).with_version()
                else:
                    new[res.key] = res.with_version()
            changed = set(old) != set(new) or any(new[k].resource_version != old[k].resource_version for k in new)
            self._by_source[source] = new
            findings_changed = self._findings.get(source) != list(findings)
            self._findings[source] = list(findings)
            if changed:
                self.generation += 1
        if changed or findings_changed:
            for listener in list(self._listeners):
                listener()
        return changed

    def resources(self, kind: str | None = None) -> list[Resource]:
        with self._lock:
            merged: dict[ResourceKey, Resource] = {}
            for source in sorted(self._by_source):
                for key, res in self._by_source[source].items():
                    merged.setdefault(key, res)
        return sorted((r for r in merged.values() if kind is None or r.kind == kind),
                      key=lambda r: (r.kind, r.namespace, r.name))

    def get(self, key: ResourceKey) -> Resource | None:
        return next((r for r in self.resources(key.kind) if r.key == key), None)

    def source_of(self, key: ResourceKey) -> str | None:
        with self._lock:
            return next((s for s, items in sorted(self._by_source.items()) if key in items), None)

    def findings(self) -> list[Diagnostic]:
        """Source findings plus cross-resource checks over the current set."""
        with self._lock:
            found = [d for source in sorted(self._findings) for d in self._findings[source]]
        return found + check_references(self.resources())


__all__ = ["ConfigStore"]
