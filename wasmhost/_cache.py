"""Compiled modules on disk, so a restart or a second sidecar does not recompile.

Compiling a real plugin with Cranelift takes from tens of milliseconds to seconds; loading
a compiled artifact is an mmap. Rules:

1. An entry is keyed by the module's sha256 and the *engine fingerprint*: the wasmtime
   version plus a hash of what this engine emits for an empty module. That artifact
   embeds the target, the Cranelift flags and every tunable the Runtime sets (epoch
   interruption, memory reservation, ...), so any setting that changes code generation
   changes the key, without this module having to know the settings.
2. Each entry is two files: ``<key>.cwasm`` (wasmtime's own artifact, loaded with
   ``Module.deserialize_file``, i.e. mmapped) and ``<key>.json`` (our header: format,
   module sha256, engine fingerprint, artifact size and sha256). wasmtime trusts an
   artifact's bytes completely, so an entry is only loaded after its size and checksum
   match; a mismatch, an unreadable header or a deserialize error means the entry is
   corrupt and is rebuilt.
3. Files are written to a temporary name in the cache directory and renamed into place,
   artifact first, header last: readers never see half a file, and an artifact without a
   matching header is a miss.
4. A hit never compiles. A failure to write is logged and otherwise ignored: the cache is
   an optimisation, the compiled module is returned either way.
5. When the artifacts exceed ``max_bytes``, the least recently used entries are deleted
   (a hit refreshes the header's mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from .limits import MODULE_CACHE_MAX_BYTES

_LOGGER = logging.getLogger("wasmhost.cache")

CACHE_FORMAT = 1
ARTIFACT_SUFFIX = ".cwasm"
HEADER_SUFFIX = ".json"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600.0
_EMPTY_MODULE = b"\0asm\x01\0\0\0"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def engine_fingerprint(engine: wasmtime.Engine) -> str:
    """Identify everything about ``engine`` that decides whether an artifact is usable."""
    try:
        version = importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - vendored copy
        version = "unknown"
    probe = wasmtime.Module(engine, _EMPTY_MODULE).serialize()
    return hashlib.sha256(version.encode() + b"\0" + bytes(probe)).hexdigest()


@dataclass(slots=True)
class CacheStats:
    """What the cache did since it was opened (exported as metrics, asserted by tests)."""

    hits: int = 0
    misses: int = 0
    compiles: int = 0
    rebuilds: int = 0  # a corrupt or incompatible entry was replaced
    evictions: int = 0
    write_errors: int = 0


class CorruptEntry(Exception):
    """An entry exists but cannot be trusted; the message says why."""


class ModuleCache:
    """Load compiled modules from ``cache_dir``, compiling and storing them on a miss."""

    def __init__(
        self, cache_dir: str | os.PathLike[str], engine: wasmtime.Engine, *, max_bytes: int = MODULE_CACHE_MAX_BYTES
    ) -> None:
        self.directory = Path(cache_dir)
        self.engine = engine
        self.max_bytes = max_bytes
        self.fingerprint = engine_fingerprint(engine)
        self.stats = CacheStats()
        self.last_error: str | None = None

    # -- public ----------------------------------------------------------------------------------
    def load_or_compile(self, wasm: bytes, sha256_hex: str) -> wasmtime.Module:
        """The compiled module for ``wasm`` (whose sha256 is ``sha256_hex``): from disk if possible."""
        if not _SHA256_HEX.fullmatch(sha256_hex):
            raise ValueError(f"module digest {sha256_hex!r} is not a lower-case sha256 hex string")
        artifact, header = self.paths(sha256_hex)
        if header.exists() or artifact.exists():
            try:
                module = self._load(artifact, header, sha256_hex)
            except CorruptEntry as err:
                self.last_error = str(err)
                _LOGGER.warning("module cache entry %s is unusable (%s); rebuilding it", artifact.name, err)
                self.stats.rebuilds += 1
            else:
                self.stats.hits += 1
                return module
        else:
            self.stats.misses += 1
        module = self._compile(wasm)
        self._store(module, artifact, header, sha256_hex)
        return module

    def paths(self, sha256_hex: str) -> tuple[Path, Path]:
        """Where the entry for a module digest lives: (artifact, header)."""
        stem = f"{sha256_hex}-{self.fingerprint[:16]}"
        return self.directory / (stem + ARTIFACT_SUFFIX), self.directory / (stem + HEADER_SUFFIX)

    # -- compile (a seam: tests count calls here) ------------------------------------------------
    def _compile(self, wasm: bytes) -> wasmtime.Module:
        self.stats.compiles += 1
        return wasmtime.Module(self.engine, wasm)

    # -- load ------------------------------------------------------------------------------------
    def _load(self, artifact: Path, header: Path, sha256_hex: str) -> wasmtime.Module:
        meta = self._read_header(header)
        expected = {"format": CACHE_FORMAT, "module_sha256": sha256_hex, "engine": self.fingerprint}
        for field, value in expected.items():
            if meta.get(field) != value:
                raise CorruptEntry(f"header field {field!r} is {meta.get(field)!r}, expected {value!r}")
        size, digest = meta.get("artifact_size"), meta.get("artifact_sha256")
        if not isinstance(size, int) or not isinstance(digest, str):
            raise CorruptEntry("header lacks artifact_size/artifact_sha256")
        try:
            actual_size = artifact.stat().st_size
            if actual_size != size:
                raise CorruptEntry(f"artifact is {actual_size} bytes, header says {size}")
            if _file_sha256(artifact) != digest:
                raise CorruptEntry("artifact checksum does not match its header")
        except OSError as err:
            raise CorruptEntry(f"artifact unreadable: {err.strerror or err}") from None
        try:
            module = wasmtime.Module.deserialize_file(self.engine, str(artifact))
        except wasmtime.WasmtimeError as err:
            raise CorruptEntry(f"wasmtime rejected the artifact: {_first_cause(err)}") from None
        with contextlib.suppress(OSError):
            os.utime(header)  # LRU: a hit is a use
        return module

    @staticmethod
    def _read_header(header: Path) -> dict[str, Any]:
        try:
            meta = json.loads(header.read_bytes())
        except FileNotFoundError:
            raise CorruptEntry("artifact has no header") from None
        except (OSError, ValueError) as err:
            raise CorruptEntry(f"header unreadable: {err}") from None
        if not isinstance(meta, dict):
            raise CorruptEntry("header is not a JSON object")
        return meta

    # -- store -----------------------------------------------------------------------------------
    def _store(self, module: wasmtime.Module, artifact: Path, header: Path, sha256_hex: str) -> None:
        try:
            data = bytes(module.serialize())
            self.directory.mkdir(parents=True, exist_ok=True)
            header.unlink(missing_ok=True)  # a stale header must never vouch for the new artifact
            self._write_atomically(artifact, data)
            meta = {
                "format": CACHE_FORMAT,
                "module_sha256": sha256_hex,
                "engine": self.fingerprint,
                "artifact_size": len(data),
                "artifact_sha256": hashlib.sha256(data).hexdigest(),
                "created": time.time(),
            }
            self._write_atomically(header, json.dumps(meta, sort_keys=True).encode())
        except (OSError, wasmtime.WasmtimeError) as err:
            self.stats.write_errors += 1
            self.last_error = f"cannot write {artifact.name}: {err}"
            _LOGGER.warning("module cache: %s", self.last_error)
            return
        self._evict(keep=artifact)

    def _write_atomically(self, target: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- eviction --------------------------------------------------------------------------------
    def _evict(self, *, keep: Path) -> None:
        """Delete least recently used entries until the artifacts fit in ``max_bytes``."""
        entries: list[tuple[float, int, Path]] = []
        total = 0
        now = time.time()
        try:
            with os.scandir(self.directory) as listing:
                for item in listing:
                    path = Path(item.path)
                    if item.name.startswith(_TMP_PREFIX):
                        with contextlib.suppress(OSError):
                            if now - item.stat().st_mtime > _STALE_TMP_S:
                                path.unlink()  # left behind by a crashed writer
                        continue
                    if not item.name.endswith(ARTIFACT_SUFFIX):
                        continue
                    size = item.stat().st_size
                    header = path.with_suffix(HEADER_SUFFIX)
                    try:
                        used = header.stat().st_mtime
                    except OSError:
                        used = item.stat().st_mtime
                    total += size
                    entries.append((used, size, path))
        except OSError as err:
            _LOGGER.warning("module cache: cannot scan %s: %s", self.directory, err)
            return
        if total <= self.max_bytes:
            return
        for _used, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(OSError):
                path.with_suffix(HEADER_SUFFIX).unlink(missing_ok=True)
                path.unlink()
                total -= size
                self.stats.evictions += 1


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_cause(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
