"""Content digests (``algorithm:hex``) as the OCI image spec defines them.

Every blob and manifest is addressed by its digest; parsing is strict because a digest
from a request ends up in a file path.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ._errors import RegistryError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(?P<algo>[a-z0-9]+(?:[.+_-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)$")


@dataclass(frozen=True, order=True)
class Digest:
    """A validated digest; ``str(d)`` is the wire form ``sha256:<hex>``."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        match = _DIGEST_RE.match(text)
        if not match:
            raise RegistryError("DIGEST_INVALID", f"malformed digest {text[:100]!r}")
        algo, hexpart = match.group("algo"), match.group("hex")
        if algo not in _HEX_LENGTH:
            raise RegistryError("DIGEST_INVALID", f"unsupported digest algorithm {algo!r}")
        if len(hexpart) != _HEX_LENGTH[algo] or not re.fullmatch(r"[0-9a-f]+", hexpart):
            raise RegistryError("DIGEST_INVALID", f"digest {text[:100]!r}: expected {_HEX_LENGTH[algo]} lowercase hex digits")
        return cls(algo, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def is_digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except RegistryError:
        return False
    return True
