"""Where a plugin's module comes from, and what the fetch must honour (Istio semantics).

``url`` schemes: ``oci://`` (also the default with no scheme), ``https://``, ``http://``,
``file:///abs/path``. ``sha256`` is the manifest digest for OCI and the module bytes'
digest otherwise. ``IfNotPresent`` never re-fetches a cached URL; ``Always`` re-fetches
when the plugin's resource version changes; unset means IfNotPresent, except an OCI
``:latest`` tag means Always.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from enum import Enum

from registry import Reference

from ._transport import ClusterTransport


class PullPolicy(Enum):
    UNSPECIFIED = "UNSPECIFIED_POLICY"
    IF_NOT_PRESENT = "IfNotPresent"
    ALWAYS = "Always"

    @classmethod
    def parse(cls, value: str | None) -> PullPolicy:
        if not value:
            return cls.UNSPECIFIED
        for member in cls:
            if member.value == value:
                return member
        raise ValueError(f"imagePullPolicy: {value!r} is not IfNotPresent, Always or UNSPECIFIED_POLICY")


@dataclass(frozen=True)
class ModuleRequest:
    """One plugin's module as the WasmPlugin / ECDS config names it."""

    url: str
    sha256: str | None = None
    pull_policy: PullPolicy = PullPolicy.UNSPECIFIED
    pull_secret: str | None = None  # docker config JSON, as istiod inlines it
    resource_version: str = ""
    # connect through this cluster (its endpoint and TLS transport socket) rather than to the URL's host
    transport: ClusterTransport | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"sha256: {self.sha256[:80]!r} is not 64 lowercase hex digits")
        source = self.source  # validates the URL
        if source.kind == "oci" and source.reference is not None and source.reference.digest is not None \
                and self.sha256 and source.reference.digest.hex != self.sha256:
            raise ValueError(f"url is pinned to {source.reference.digest} but sha256 is {self.sha256}")

    @property
    def source(self) -> ModuleSource:
        return ModuleSource.parse(self.url)

    @property
    def always_pull(self) -> bool:
        source = self.source
        if self.pull_policy is PullPolicy.ALWAYS:
            return True
        if self.pull_policy is PullPolicy.UNSPECIFIED and source.reference is not None:
            return source.reference.digest is None and source.reference.tag == "latest"
        return False

    @property
    def pinned(self) -> str | None:
        """The checksum that identifies the content without asking the server, if any."""
        if self.sha256:
            return self.sha256
        ref = self.source.reference
        return ref.digest.hex if ref is not None and ref.digest is not None else None


@dataclass(frozen=True)
class ModuleSource:
    kind: str  # "oci", "http" or "file"
    url: str
    reference: Reference | None = None
    path: str | None = None

    @classmethod
    def parse(cls, url: str) -> ModuleSource:
        text = url.strip()
        if not text:
            raise ValueError("url: empty")
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme in ("", "oci"):
            ref = Reference.parse(text if scheme else f"oci://{text}")
            return cls("oci", str(ref), reference=ref)
        if scheme in ("http", "https"):
            parts = urllib.parse.urlsplit(text)
            if not parts.hostname:
                raise ValueError(f"url {text!r}: no host")
            return cls("http", text)
        if scheme == "file":
            parts = urllib.parse.urlsplit(text)
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise ValueError(f"url {text!r}: file URLs must be file:///absolute/path")
            return cls("file", text, path=urllib.parse.unquote(parts.path))
        raise ValueError(f"url {text!r}: scheme {scheme}:// is not oci, http, https or file")

    @property
    def cache_name(self) -> str:
        """What the cache groups entries by: the OCI repository without tag/digest, else the URL."""
        if self.reference is not None:
            return f"{self.reference.registry}/{self.reference.repository}"
        return self.url
