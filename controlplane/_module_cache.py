"""The control plane's content-addressed cache of verified Wasm modules.

Layout under the cache root::

    sha256/<hex>            module bytes, named by their sha256 (written atomically, checked on load)
    origins/<key>.json      where a module came from: an OCI manifest digest or a URL, its
                            module digest and who signed it
    provenance/<hex>.txt    the signature material of a manifest digest, as sent to wasmesh
                            sidecars (see `wasmhost.sidecar._module_provenance`)

Only bytes that passed verification are ever written, so anything here may be served. The
origin records let a restarted control plane answer `IfNotPresent` pulls and known manifest
digests without asking the registry again; a record is only reused while its signers are
still trusted (the caller checks). Recently served modules stay in memory (bounded) so that
many proxies fetching the same module cost one disk read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from registry import Signer

_HEX = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_MEMORY_LIMIT = 256 * 1024 * 1024


@dataclass(frozen=True)
class Origin:
    """What a cache lookup by manifest digest or URL returns."""

    module_sha256: str
    manifest_digest: str | None
    signers: tuple[Signer, ...]
    url: str


def is_digest_hex(text: str) -> bool:
    return bool(_HEX.match(text))


class ModuleCache:
    """Thread-safe: resolutions write from worker threads while the module endpoint reads."""

    def __init__(self, root: Path, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> None:
        self.root = Path(root)
        self.memory_limit = memory_limit
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_size = 0
        self._lock = threading.Lock()

    # ---- module bytes ---------------------------------------------------------------------------
    def _module_path(self, sha256: str) -> Path:
        if not is_digest_hex(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / "sha256" / sha256

    def put(self, module: bytes) -> str:
        """Store verified bytes; returns their sha256 hex (idempotent)."""
        sha256 = hashlib.sha256(module).hexdigest()
        path = self._module_path(sha256)
        if not path.exists():
            _write_atomic(path, module)
        self._remember(sha256, module)
        return sha256

    def has(self, sha256: str) -> bool:
        return is_digest_hex(sha256) and (sha256 in self._memory or self._module_path(sha256).is_file())

    def read(self, sha256: str) -> bytes | None:
        """The module named `sha256`, or None if absent or if the file no longer has that digest."""
        if not is_digest_hex(sha256):
            return None
        with self._lock:
            data = self._memory.get(sha256)
            if data is not None:
                self._memory.move_to_end(sha256)
                return data
        try:
            data = self._module_path(sha256).read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            return None  # altered on disk: never serve it
        self._remember(sha256, data)
        return data

    def _remember(self, sha256: str, data: bytes) -> None:
        if len(data) > self.memory_limit:
            return
        with self._lock:
            if sha256 in self._memory:
                self._memory.move_to_end(sha256)
                return
            self._memory[sha256] = data
            self._memory_size += len(data)
            while self._memory_size > self.memory_limit:
                _, evicted = self._memory.popitem(last=False)
                self._memory_size -= len(evicted)

    # ---- origins ----------------------------------------------------------------------------------
    def _origin_path(self, key: str) -> Path:
        return self.root / "origins" / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def record(self, key: str, origin: Origin) -> None:
        doc = {"key": key, "module": origin.module_sha256, "manifest": origin.manifest_digest, "url": origin.url,
               "signers": [{"kind": s.kind, "identity": s.identity, "issuer": s.issuer} for s in origin.signers]}
        _write_atomic(self._origin_path(key), json.dumps(doc, indent=1).encode())

    def lookup(self, key: str) -> Origin | None:
        """The recorded origin for `key` whose module is still in the cache, or None."""
        try:
            doc = json.loads(self._origin_path(key).read_text())
            if doc.get("key") != key:
                return None
            origin = Origin(str(doc["module"]), doc.get("manifest"),
                            tuple(Signer(str(s["kind"]), str(s["identity"]), s.get("issuer")) for s in doc["signers"]),
                            str(doc.get("url", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return origin if self.has(origin.module_sha256) else None


    # ---- provenance -------------------------------------------------------------------------------
    def _provenance_path(self, manifest_digest: str) -> Path:
        return self.root / "provenance" / (hashlib.sha256(manifest_digest.encode()).hexdigest() + ".txt")

    def put_provenance(self, manifest_digest: str, carrier: str) -> None:
        _write_atomic(self._provenance_path(manifest_digest), carrier.encode())

    def provenance(self, manifest_digest: str | None) -> str:
        """The recorded carrier of `manifest_digest`'s signature material, or "" (the sidecar checks it)."""
        if not manifest_digest:
            return ""
        try:
            return self._provenance_path(manifest_digest).read_text()
        except (OSError, UnicodeDecodeError):
            return ""


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


__all__ = ["ModuleCache", "Origin", "is_digest_hex"]
