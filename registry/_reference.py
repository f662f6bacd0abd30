"""Repository names, tags and image references (``oci://host[:port]/repo[:tag][@digest]``).

The name and tag grammars are the distribution spec's; a reference without a scheme is
treated as ``oci://`` (as Istio does), and without tag or digest it means ``:latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._digest import Digest
from ._errors import RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN = rf"{_COMPONENT}(?:/{_COMPONENT})*"
TAG_PATTERN = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
_NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
_TAG_RE = re.compile(rf"^{TAG_PATTERN}$")
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise RegistryError("NAME_INVALID", f"invalid repository name {name[:100]!r}")
    return name


def validate_tag(tag: str) -> str:
    if not _TAG_RE.match(tag):
        raise RegistryError("TAG_INVALID", f"invalid tag {tag[:140]!r}")
    return tag


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: registry host, repository, and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``[oci://]host/repo[:tag][@digest]``; raise ``ValueError`` naming the bad part."""
        rest = text.strip()
        if "://" in rest:
            scheme, rest = rest.split("://", 1)
            if scheme != "oci":
                raise ValueError(f"reference {text!r}: scheme must be oci://, not {scheme}://")
        digest: Digest | None = None
        if "@" in rest:
            rest, digest_text = rest.split("@", 1)
            try:
                digest = Digest.parse(digest_text)
            except RegistryError as err:
                raise ValueError(f"reference {text!r}: {err.message}") from None
        if "/" not in rest:
            raise ValueError(f"reference {text!r}: expected HOST/REPOSITORY")
        host, path = rest.split("/", 1)
        if not host or not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?|\[[0-9a-fA-F:]+\](:[0-9]+)?", host):
            raise ValueError(f"reference {text!r}: invalid registry host {host!r}")
        tag: str | None = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
            if not _TAG_RE.match(tag):
                raise ValueError(f"reference {text!r}: invalid tag {tag!r}")
        if not _NAME_RE.match(path) or len(path) > MAX_NAME_LENGTH:
            raise ValueError(f"reference {text!r}: invalid repository {path!r} (lowercase a-z 0-9 . _ - /)")
        if tag is None and digest is None:
            tag = "latest"
        return cls(host, path, tag, digest)

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        assert self.tag is not None
        return self.tag

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    @property
    def name(self) -> str:
        """``host/repo`` — the docker-reference identity cosign signs."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = f"oci://{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
