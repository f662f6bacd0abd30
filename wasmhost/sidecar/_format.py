"""Envoy command operators (``%REQ(x-request-id)%``, ``%RESPONSE_CODE%``...) compiled once.

Used by header values (``request_headers_to_add`` ...) and by access-log formats.
A format string compiles into a list of literal bytes and operator functions; an
unknown operator is refused at load with the field path.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from ._errors import ConfigError
from ._filter_api import StreamInfo
from ._headers import HeaderMap

# (stream info, request headers, response headers, response trailers) -> value or None (missing)
Operator = Callable[[StreamInfo, HeaderMap | None, HeaderMap | None, HeaderMap | None], str | None]

DEFAULT_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)

_TOKEN = re.compile(r"%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%")
_HOSTNAME = socket.gethostname()


def _addr(value: tuple[str, int] | None) -> str | None:
    if value is None:
        return None
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ms(start: float | None, end: float | None) -> str | None:
    if start is None or end is None:
        return None
    return str(int((end - start) * 1000))


def _start_time(fmt: str) -> Operator:
    def op(info: StreamInfo, *_: Any) -> str:
        seconds = info.start_time
        if not fmt:
            base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            return f"{base}.{int((seconds % 1) * 1000):03d}Z"
        text = fmt.replace("%3f", f"{int((seconds % 1) * 1000):03d}").replace(
            "%6f", f"{int((seconds % 1) * 1_000_000):06d}"
        )
        return time.strftime(text, time.gmtime(seconds))

    return op


def _header_operator(which: str, arg: str, path: str) -> Operator:
    if not arg:
        raise ConfigError(path, f"%{which}(...)% needs a header name")
    main, _, alternative = arg.partition("?")
    names = [main.strip().lower().encode()] + ([alternative.strip().lower().encode()] if alternative else [])

    def pick(headers: HeaderMap | None) -> str | None:
        if headers is None:
            return None
        for name in names:
            value = headers.get(name)
            if value is not None:
                return value.decode("latin-1")
        return None

    if which == "REQ":
        return lambda info, req, resp, trl: pick(req)
    if which == "RESP":
        return lambda info, req, resp, trl: pick(resp)
    return lambda info, req, resp, trl: pick(trl)


def _simple(name: str) -> Operator | None:
    table: dict[str, Operator] = {
        "PROTOCOL": lambda i, *_: i.protocol,
        "RESPONSE_CODE": lambda i, *_: str(i.response_code),
        "RESPONSE_FLAGS": lambda i, *_: i.flags_string(),
        "RESPONSE_CODE_DETAILS": lambda i, *_: i.response_code_details or None,
        "BYTES_RECEIVED": lambda i, *_: str(i.bytes_received),
        "BYTES_SENT": lambda i, *_: str(i.bytes_sent),
        "DURATION": lambda i, *_: _ms(i.start_monotonic, i.last_downstream_tx_at),
        "REQUEST_DURATION": lambda i, *_: _ms(i.start_monotonic, i.request_complete_at),
        "RESPONSE_DURATION": lambda i, *_: _ms(i.start_monotonic, i.first_upstream_rx_at),
        "RESPONSE_TX_DURATION": lambda i, *_: _ms(i.first_upstream_rx_at, i.last_downstream_tx_at),
        "UPSTREAM_HOST": lambda i, *_: _addr(i.upstream_host),
        "UPSTREAM_REMOTE_ADDRESS": lambda i, *_: _addr(i.upstream_host),
        "UPSTREAM_CLUSTER": lambda i, *_: i.cluster_name or None,
        "UPSTREAM_LOCAL_ADDRESS": lambda i, *_: _addr(i.upstream_local_address),
        "UPSTREAM_TRANSPORT_FAILURE_REASON": lambda i, *_: i.upstream_transport_failure_reason or None,
        "UPSTREAM_REQUEST_ATTEMPT_COUNT": lambda i, *_: str(i.attempt_count),
        "DOWNSTREAM_REMOTE_ADDRESS": lambda i, *_: _addr(i.downstream_remote_address),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda i, *_: i.downstream_remote_address[0],
        "DOWNSTREAM_REMOTE_PORT": lambda i, *_: str(i.downstream_remote_address[1]),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": lambda i, *_: _addr(i.downstream_direct_remote_address),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": lambda i, *_: i.downstream_direct_remote_address[0],
        "DOWNSTREAM_LOCAL_ADDRESS": lambda i, *_: _addr(i.downstream_local_address),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": lambda i, *_: i.downstream_local_address[0],
        "DOWNSTREAM_LOCAL_PORT": lambda i, *_: str(i.downstream_local_address[1]),
        "ROUTE_NAME": lambda i, *_: i.route_name or None,
        "VIRTUAL_HOST_NAME": lambda i, *_: i.virtual_host_name or None,
        "CONNECTION_ID": lambda i, *_: str(i.connection_id),
        "HOSTNAME": lambda i, *_: _HOSTNAME,
        "REQUESTED_SERVER_NAME": lambda i, *_: None,
    }
    return table.get(name)


def compile_format(text: str, path: str) -> list[str | Operator]:
    """Split a format string into literal text and operators; ``%%`` is a literal ``%``."""
    parts: list[str | Operator] = []
    index = 0
    literal: list[str] = []
    while index < len(text):
        char = text[index]
        if char != "%":
            literal.append(char)
            index += 1
            continue
        if text.startswith("%%", index):
            literal.append("%")
            index += 2
            continue
        match = _TOKEN.match(text, index)
        if match is None:
            raise ConfigError(path, f"malformed command operator at offset {index} in {text!r}")
        name, arg, limit = match.group(1), match.group(2), match.group(3)
        operator = _operator(name, arg or "", path)
        if limit is not None:
            operator = _truncated(operator, int(limit))
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(operator)
        index = match.end()
    if literal:
        parts.append("".join(literal))
    return parts


def _truncated(operator: Operator, limit: int) -> Operator:
    def op(i: StreamInfo, a: HeaderMap | None, b: HeaderMap | None, c: HeaderMap | None) -> str | None:
        value = operator(i, a, b, c)
        return None if value is None else value[:limit]

    return op


def _operator(name: str, arg: str, path: str) -> Operator:
    if name in ("REQ", "RESP", "TRAILER"):
        return _header_operator(name, arg, path)
    if name == "START_TIME":
        return _start_time(arg)
    simple = _simple(name)
    if simple is None:
        raise ConfigError(path, f"unsupported command operator %{name}%")
    return simple


class Formatter:
    """A compiled text format; ``missing`` replaces operators without a value ("-" in access logs)."""

    __slots__ = ("_parts", "_missing", "static")

    def __init__(self, text: str, path: str, missing: str = "-") -> None:
        self._parts = compile_format(text, path)
        self._missing = missing
        self.static: str | None = (
            "".join(p for p in self._parts if isinstance(p, str)) if all(isinstance(p, str) for p in self._parts) else None
        )

    def format(
        self,
        info: StreamInfo,
        request: HeaderMap | None,
        response: HeaderMap | None,
        trailers: HeaderMap | None = None,
    ) -> str:
        if self.static is not None:
            return self.static
        out: list[str] = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part(info, request, response, trailers)
                out.append(self._missing if value is None else value)
        return "".join(out)


class JsonFormatter:
    """Envoy ``json_format``: each string value is a format; missing values become null."""

    def __init__(self, template: dict[str, Any], path: str) -> None:
        self._template = self._compile(template, path)

    def _compile(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {k: self._compile(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, str):
            return Formatter(value, path, missing="\x00")
        return value

    def _render(self, value: Any, args: tuple[Any, ...]) -> Any:
        if isinstance(value, dict):
            return {k: self._render(v, args) for k, v in value.items()}
        if isinstance(value, Formatter):
            text = value.format(*args)
            return None if text == "\x00" else text
        return value

    def format(
        self,
        info: StreamInfo,
        request: HeaderMap | None,
        response: HeaderMap | None,
        trailers: HeaderMap | None = None,
    ) -> str:
        return json.dumps(self._render(self._template, (info, request, response, trailers)), separators=(",", ":")) + "\n"
