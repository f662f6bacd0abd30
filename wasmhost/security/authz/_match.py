"""Istio's value matching: exact, ``abc*`` prefix, ``*abc`` suffix, ``*`` presence; IPs; paths.

Paths also accept Istio's templates: ``{*}`` is one whole path segment, ``{**}`` (last
operator only) is the rest of the path including slashes; a template cannot also use ``*``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class StringPattern:
    """One value from a policy, compiled."""

    text: str
    ignore_case: bool = False

    def matches(self, value: str) -> bool:
        pattern, candidate = self.text, value
        if self.ignore_case:
            pattern, candidate = pattern.lower(), candidate.lower()
        if pattern == "*":
            return candidate != ""
        if pattern.startswith("*"):
            return candidate.endswith(pattern[1:])
        if pattern.endswith("*"):
            return candidate.startswith(pattern[:-1])
        return candidate == pattern


_TEMPLATE = re.compile(r"\{\*\*?\}")


@dataclass(frozen=True)
class PathPattern:
    """A ``paths`` value: Istio wildcards or a ``{*}``/``{**}`` template."""

    text: str
    regex: re.Pattern[str] | None

    @classmethod
    def compile(cls, text: str, where: str) -> PathPattern:
        if not _TEMPLATE.search(text):
            return cls(text, None)
        if "*" in _TEMPLATE.sub("", text):
            raise ValueError(f"{where}: {text!r} mixes a path template with a '*' wildcard")
        operators = _TEMPLATE.findall(text)
        if "{**}" in operators[:-1]:
            raise ValueError(f"{where}: {{**}} must be the last operator in {text!r}")
        pieces: list[str] = []
        last = 0
        for found in _TEMPLATE.finditer(text):
            pieces.append(re.escape(text[last:found.start()]))
            pieces.append("[^/]+" if found.group() == "{*}" else ".*")
            last = found.end()
        pieces.append(re.escape(text[last:]))
        return cls(text, re.compile("".join(pieces)))

    def matches(self, path: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(path) is not None
        return StringPattern(self.text).matches(path)


def parse_ip_block(text: str, where: str) -> IpNetwork:
    """A single IP or a CIDR; raise ValueError naming ``where``."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{where}: {text!r} is not an IP address or CIDR block") from exc


def ip_in(value: str, blocks: list[IpNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(address in block for block in blocks)
