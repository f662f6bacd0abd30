"""What ``wasmesh plugin run`` takes and gives: the scripted exchange and its outcome.

:class:`RunRequest` is everything the command line can say; :class:`RunResult` is what
happened, and :meth:`RunResult.to_json` is the ``--json`` object. Plain data, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._abi import FailurePolicy, LogLevel
from ._runner_env import LogRecord
from .limits import DEFAULT_LIMITS, Limits

#: Ticks fired at most while a stream waits, across the whole run.
DEFAULT_MAX_TICKS = 10


class PluginRunError(Exception):
    """The module or the plugin cannot run at all: bad module, missing export, start failure."""


@dataclass(frozen=True, slots=True)
class CalloutAnswer:
    """How the fake upstream cluster answers every callout sent to it."""

    status: int = 200
    body: bytes = b""


@dataclass(frozen=True)
class RunRequest:
    """The plugin to start and the exchange to drive through it."""

    module: bytes
    name: str = "plugin"
    root_id: str = ""
    vm_id: str = ""
    configuration: bytes = b""
    vm_configuration: bytes = b""
    failure_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED
    #: Envoy's older ``fail_open: true`` flag (also passes the stream that met the failure)
    fail_open: bool = False
    log_level: LogLevel = LogLevel.TRACE
    method: str = "GET"
    path: str = "/"
    authority: str = "example.com"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    response_status: int = 200
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: bytes = b""
    callouts: Mapping[str, CalloutAnswer] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)
    max_ticks: int = DEFAULT_MAX_TICKS
    limits: Limits = DEFAULT_LIMITS


@dataclass(slots=True)
class HttpMessage:
    """Headers (names lower-case, in order) and body of a request or response."""

    headers: list[tuple[str, str]]
    body: bytes


@dataclass(slots=True)
class ClientResponse:
    """What the client receives; ``details`` is Envoy's response code details ("" = upstream)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    details: str = ""


@dataclass(slots=True)
class CalloutRecord:
    """One HTTP or gRPC callout the plugin dispatched, as it went to the cluster."""

    cluster: str
    headers: list[tuple[str, str]]
    body: bytes
    kind: str = "http"


@dataclass(slots=True)
class RunResult:
    """What happened: what went upstream, what the client got, callouts, logs, metrics, trap."""

    upstream_request: HttpMessage | None
    response: ClientResponse | None
    callouts: list[CalloutRecord]
    logs: list[LogRecord]
    metrics: dict[str, Any]
    trap: str | None
    ticks: int = 0
    abi: str = ""
    #: the request as the plugin first saw it, and the upstream's response before the plugin
    request_in: HttpMessage | None = None
    upstream_response: HttpMessage | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``wasmesh plugin run --json`` object (bodies decoded as UTF-8, lossy)."""
        upstream = self.upstream_request
        response = self.response
        return {
            "upstream_request": None
            if upstream is None
            else {"headers": _json_headers(upstream.headers), "body": _text(upstream.body)},
            "response": None
            if response is None
            else {
                "status": response.status,
                "headers": _json_headers(response.headers),
                "body": _text(response.body),
            },
            "callouts": [
                {"cluster": c.cluster, "headers": _json_headers(c.headers), "body": _text(c.body)}
                for c in self.callouts
            ],
            "logs": [{"level": r.level_name, "message": r.message} for r in self.logs],
            "metrics": dict(self.metrics),
            "trap": self.trap,
        }


def _json_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    return [[k, v] for k, v in headers]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
