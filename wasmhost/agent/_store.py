"""The agent's on-disk module cache, laid out like istio-agent's.

``<root>/<sha256(name)>/<checksum>.wasm`` with a ``<checksum>.json`` header (URL, module
sha256, signers, times), where ``name`` is the OCI repository without tag/digest or the
full URL. ``urls.json`` remembers the checksum last fetched for each URL and the plugin
resource version it was fetched for. Entries untouched for ``ttl`` seconds are purged and
the least recently used go first when the total exceeds ``max_bytes``. Every read
re-checks the module's sha256, so a corrupted entry is a miss, never a load.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CachedModule:
    """A module file ready to load, and where it came from."""

    path: Path
    checksum: str
    module_sha256: str
    signers: tuple[str, ...] = ()
    stale: bool = False  # served from cache because the source could not be reached


class ModuleStore:
    def __init__(self, root: Path | str, *, ttl: float = 24 * 3600, max_bytes: int = 1 << 30,
                 clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.clock = clock
        self._lock = threading.Lock()

    def _dir(self, name: str) -> Path:
        return self.root / hashlib.sha256(name.encode()).hexdigest()

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _urls(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.root / "urls.json").read_text())
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, name: str, checksum: str) -> CachedModule | None:
        header_path = self._dir(name) / f"{checksum}.json"
        module_path = header_path.with_suffix(".wasm")
        try:
            header = json.loads(header_path.read_text())
            data = module_path.read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != header.get("module_sha256"):
            self._remove(header_path)  # corrupted on disk: a miss, refetched
            return None
        header["last_used"] = self.clock()
        self._write(header_path, json.dumps(header).encode())
        return CachedModule(module_path, checksum, header["module_sha256"], tuple(header.get("signers", ())))

    def put(self, name: str, url: str, checksum: str, module: bytes, signers: tuple[str, ...],
            resource_version: str) -> CachedModule:
        directory = self._dir(name)
        directory.mkdir(exist_ok=True)
        module_sha = hashlib.sha256(module).hexdigest()
        now = self.clock()
        with self._lock:
            self._write(directory / f"{checksum}.wasm", module)
            header = {"url": url, "checksum": checksum, "module_sha256": module_sha, "signers": list(signers),
                      "fetched": now, "last_used": now, "size": len(module)}
            self._write(directory / f"{checksum}.json", json.dumps(header).encode())
            urls = self._urls()
            urls[url] = {"checksum": checksum, "name": name, "resource_version": resource_version}
            self._write(self.root / "urls.json", json.dumps(urls).encode())
        self.purge()
        return CachedModule(directory / f"{checksum}.wasm", checksum, module_sha, signers)

    def latest(self, url: str) -> tuple[str, str] | None:
        """(checksum, resource version) last fetched for ``url``."""
        entry = self._urls().get(url)
        if not isinstance(entry, dict):
            return None
        return str(entry.get("checksum")), str(entry.get("resource_version", ""))

    def _remove(self, header_path: Path) -> int:
        size = 0
        for path in (header_path, header_path.with_suffix(".wasm")):
            try:
                size += path.stat().st_size if path.suffix == ".wasm" else 0
                path.unlink()
            except FileNotFoundError:
                pass
        return size

    def purge(self) -> int:
        """Drop expired entries, then least recently used ones above ``max_bytes``; returns bytes freed."""
        now = self.clock()
        entries: list[tuple[float, int, Path]] = []
        for header_path in self.root.glob("*/*.json"):
            try:
                header = json.loads(header_path.read_text())
                entries.append((float(header["last_used"]), int(header["size"]), header_path))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        freed = 0
        kept: list[tuple[float, int, Path]] = []
        for last_used, size, path in entries:
            if now - last_used > self.ttl:
                freed += self._remove(path)
            else:
                kept.append((last_used, size, path))
        total = sum(size for _, size, _ in kept)
        for _last_used, size, path in sorted(kept):
            if total <= self.max_bytes:
                break
            freed += self._remove(path)
            total -= size
        return freed
