"""Compiled ``*_headers_to_add`` / ``*_headers_to_remove`` at one level of a route config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._errors import ConfigError
from ._filter_api import StreamInfo
from ._format import Formatter
from ._headers import HeaderMap

APPEND_IF_EXISTS_OR_ADD = 0
ADD_IF_ABSENT = 1
OVERWRITE_IF_EXISTS_OR_ADD = 2
OVERWRITE_IF_EXISTS = 3


class HeaderOps:
    """Removals then additions, applied in place (Envoy ``HeaderParser``)."""

    __slots__ = ("_adds", "_removes")

    def __init__(self, adds: Sequence[tuple[bytes, Formatter, int, bool]], removes: Sequence[bytes]) -> None:
        self._adds = tuple(adds)
        self._removes = tuple(removes)

    def __bool__(self) -> bool:
        return bool(self._adds or self._removes)

    def apply(
        self,
        headers: HeaderMap,
        info: StreamInfo,
        request: HeaderMap | None,
        response: HeaderMap | None,
    ) -> None:
        for name in self._removes:
            headers.remove(name)
        for name, formatter, action, keep_empty in self._adds:
            value = formatter.format(info, request, response).encode("latin-1", "replace")
            if not value and not keep_empty:
                continue
            if action == APPEND_IF_EXISTS_OR_ADD:
                headers.add(name, value)
            elif action == ADD_IF_ABSENT:
                headers.set_default(name, value)
            elif action == OVERWRITE_IF_EXISTS_OR_ADD:
                headers.set(name, value)
            elif name in headers:
                headers.set(name, value)


EMPTY_OPS = HeaderOps((), ())

_FORBIDDEN = (b"host",)


def compile_header_ops(options: Sequence[Any], removes: Sequence[str], path: str, field: str) -> HeaderOps:
    """Compile a list of ``HeaderValueOption`` and names to remove; refuse pseudo-headers and ``host``."""
    adds: list[tuple[bytes, Formatter, int, bool]] = []
    for index, option in enumerate(options):
        where = f"{path}.{field}_to_add[{index}]"
        key = option.header.key.lower()
        if not key:
            raise ConfigError(f"{where}.header.key", "header name must not be empty")
        if key.startswith(":") or key.encode() in _FORBIDDEN:
            raise ConfigError(f"{where}.header.key", f"':'-prefixed or host headers may not be modified: {key}")
        value = option.header.value if option.header.value else option.header.raw_value.decode("latin-1")
        if option.HasField("append") and option.append_action != APPEND_IF_EXISTS_OR_ADD:
            raise ConfigError(where, "append and append_action are mutually exclusive")
        if option.HasField("append"):
            action = APPEND_IF_EXISTS_OR_ADD if option.append.value else OVERWRITE_IF_EXISTS_OR_ADD
        else:
            action = int(option.append_action)
        adds.append((key.encode(), Formatter(value, f"{where}.header.value", missing=""), action, option.keep_empty_value))
    names: list[bytes] = []
    for index, name in enumerate(removes):
        lowered = name.lower()
        if not lowered or lowered.startswith(":") or lowered.encode() in _FORBIDDEN:
            raise ConfigError(f"{path}.{field}_to_remove[{index}]", f"header {name!r} may not be removed")
        names.append(lowered.encode())
    if not adds and not names:
        return EMPTY_OPS
    return HeaderOps(adds, names)
