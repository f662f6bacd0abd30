"""An Envoy-shaped embedder for the conformance suite: one plugin, requests in, JSON shape out.

The host core is sans-io; something has to turn its commands into a request's outcome. This
driver does it the way Envoy 1.40 does (measured with ``tests/e2e/_envoy.py``), so conformance
tests can assert a plugin's documented behaviour and differential tests can compare with Envoy:

- request headers: ``:authority, :path, :method, :scheme``, the client's headers, then
  ``content-length`` (non-empty body) and ``x-forwarded-proto``; response headers ``:status``,
  the upstream's headers, then ``content-length`` (as the scripted upstream sends it);
- a body arrives as one chunk with ``end_stream`` false, then an empty chunk with it true
  (HTTP/1.1 with content-length); after a header pause the held body comes in one final call;
- a local reply sent from a request callback goes back through the plugin's response callbacks
  (headers: plugin headers, ``content-length``, ``content-type: text/plain`` when there is a
  body); one sent from a response callback replaces the response without re-entering the plugin;
  one sent after the response headers went out resets the stream;
- ``proxy_close_stream`` on an HTTP stream resets it (no response);
- a paused stream waits for its callouts (answered from ``callouts`` with ``:status``,
  ``content-length`` and the ``x-envoy-upstream-service-time`` Envoy's async client adds; an
  undeclared cluster does not exist), queue notifications and then ticks of armed roots, like
  a proxy whose clock runs; it fails if nothing resumes it.

Results use the ``wasmesh plugin run --json`` shape: ``upstream_request``, ``response``,
``callouts``, ``logs``, ``metrics``, ``trap``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmhost import (
    CancelGrpc,
    ClearRouteCache,
    CloseStream,
    Command,
    DeleteRootContext,
    DispatchGrpcCall,
    DispatchHttpCall,
    Environment,
    FailurePolicy,
    HttpStream,
    Limits,
    LogLevel,
    NotifyQueueReady,
    Plugin,
    PluginSpec,
    ResumeStream,
    Runtime,
    SendGrpcMessage,
    SendLocalReply,
    SetTickPeriod,
    StreamInfo,
    StreamType,
)
from wasmhost._filter_status import HEADERS_CONTINUE
from wasmhost._http_stream import local_reply_headers

LEVEL_NAMES = {
    LogLevel.TRACE: "trace",
    LogLevel.DEBUG: "debug",
    LogLevel.INFO: "info",
    LogLevel.WARN: "warn",
    LogLevel.ERROR: "error",
    LogLevel.CRITICAL: "critical",
}
#: ticks a paused stream may wait before the driver gives up (a plugin that never resumes)
MAX_TICKS_WHILE_PAUSED = 50
HostHeaders = Sequence[tuple[str, str]] | Sequence[list[str]]
#: how the host announces a failed VM through the plugin log (reported as ``trap`` instead)
HOST_FAILURE_PREFIX = "VM failed: "


class StuckStream(Exception):
    """A paused stream was never resumed: the plugin waits for something that cannot come."""


class CapturingEnvironment(Environment):
    """Logs into a list (at trace, like the Envoy harness), known clusters, a fixed node."""

    log_level = LogLevel.TRACE

    def __init__(self, clusters: Iterable[str] = (), foreign: Mapping[str, Any] | None = None) -> None:
        self.lines: list[dict[str, str]] = []
        self.clusters = set(clusters)
        self.foreign = dict(foreign or {})

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        if level is LogLevel.CRITICAL and message.startswith(HOST_FAILURE_PREFIX):
            return  # the host's own report of a failed VM: Envoy's "Function: ... failed", not a plugin line
        self.lines.append({"level": LEVEL_NAMES[level], "message": message})

    def has_cluster(self, name: str) -> bool:
        return name in self.clusters

    def foreign_function(self, name: str) -> Any:
        return self.foreign.get(name)

    def take(self) -> list[dict[str, str]]:
        lines, self.lines = self.lines, []
        return lines


def _b(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


def _s(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


def _pairs_to_json(pairs: Iterable[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[_s(k), _s(v)] for k, v in pairs]


@dataclass
class _Exchange:
    """What happened to one stream so far."""

    stream: HttpStream
    request_paused: bool = False
    response_paused: bool = False
    resumed: set[StreamType] = field(default_factory=set)
    local_reply: SendLocalReply | None = None
    reset: bool = False
    callouts: list[dict[str, Any]] = field(default_factory=list)


class ConformanceHost:
    """One runtime and one started plugin; ``request()`` runs a whole exchange through it."""

    def __init__(
        self,
        wasm: Path | bytes,
        *,
        name: str = "plugin",
        root_id: str = "",
        vm_id: str = "",
        configuration: str | bytes = "",
        vm_configuration: str | bytes = "",
        failure_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED,
        callouts: Mapping[str, tuple[int, str | bytes]] | None = None,
        env: Mapping[str, str] | None = None,
        limits: Limits | None = None,
        foreign: Mapping[str, Any] | None = None,
        runtime: Runtime | None = None,
        info: StreamInfo | None = None,
    ) -> None:
        self.callout_answers = dict(callouts or {})
        shared_env = runtime.environment if runtime is not None else None
        if isinstance(shared_env, CapturingEnvironment):
            self.environment = shared_env  # hosts on one runtime log into one list
            shared_env.clusters.update(self.callout_answers)
        else:
            self.environment = CapturingEnvironment(self.callout_answers, foreign)
        self._own_runtime = runtime is None
        self.runtime = runtime or Runtime(limits=limits or Limits(), environment=self.environment)
        self.spec = PluginSpec(
            name=name,
            root_id=root_id,
            vm_id=vm_id,
            configuration=_b(configuration),
            vm_configuration=_b(vm_configuration),
            failure_policy=failure_policy,
            env=tuple((env or {}).items()),
        )
        code = wasm if isinstance(wasm, bytes) else Path(wasm).read_bytes()
        try:
            compiled = self.runtime.compile(code)
        except BaseException:
            self.close()
            raise
        self.plugin = Plugin(self.runtime, compiled, self.spec)
        self.info = info or StreamInfo()
        self.tick_periods: dict[int, int] = {}
        self.grpc: list[Command] = []
        self.route_cache_clears = 0
        self.startup_logs: list[dict[str, str]] = []
        self._queue_ready: list[int] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ConformanceHost:
        """Start the plugin (raises PluginStartError) and keep its start-up logs apart."""
        try:
            self.plugin.start()
        finally:
            self.startup_logs = self.environment.take()
        self._drain(None)
        return self

    def close(self) -> None:
        if self._own_runtime:
            self.runtime.close()

    def __enter__(self) -> ConformanceHost:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def metrics(self) -> dict[str, int]:
        """Counters and gauges by name (histograms left out, as the Envoy harness does)."""
        return {k: v for k, v in self.runtime.metrics.snapshot().items() if isinstance(v, int)}

    # -- async events ------------------------------------------------------------------------------
    def tick(self, count: int = 1) -> list[dict[str, str]]:
        """Fire ``count`` timer periods for every root with a tick armed; returns their logs."""
        for _ in range(count):
            self._tick_once(None)
        return self.environment.take()

    def _tick_once(self, exchange: _Exchange | None) -> None:
        root = self.plugin.root
        if root is not None and self.tick_periods.get(id(root), 0) > 0:
            self.plugin.on_tick()
            self._drain(exchange)

    def shutdown(self, *, max_ticks: int = 10) -> list[dict[str, str]]:
        """Envoy's root shutdown, ticking while the plugin defers it; returns the logs."""
        self.plugin.shutdown()
        self._drain(None)
        for _ in range(max_ticks):
            root = self.plugin.root
            if root is None or root.deleted:
                break
            self._tick_once(None)
        return self.environment.take()

    # -- commands ------------------------------------------------------------------------------
    def _drain(self, exchange: _Exchange | None) -> None:
        """Carry out queued commands; answer callouts at once (loopback peers answer fast)."""
        while True:
            commands = self.runtime.take_commands()
            if not commands and self._queue_ready:
                self.plugin.on_queue_ready(self._queue_ready.pop(0))
                continue
            if not commands:
                return
            for command in commands:
                self._apply(command, exchange)

    def _apply(self, command: Command, exchange: _Exchange | None) -> None:
        mine = exchange is not None and getattr(command, "stream", None) is exchange.stream.ctx
        if isinstance(command, SendLocalReply):
            if mine and exchange is not None and exchange.local_reply is None:
                exchange.local_reply = command
        elif isinstance(command, ResumeStream):
            if mine and exchange is not None:
                exchange.resumed.add(command.direction)
        elif isinstance(command, CloseStream):
            if (
                mine
                and exchange is not None
                and command.direction in (StreamType.HTTP_REQUEST, StreamType.HTTP_RESPONSE)
            ):
                exchange.reset = True
        elif isinstance(command, DispatchHttpCall):
            self._answer_callout(command, exchange)
        elif isinstance(command, SetTickPeriod):
            self.tick_periods[id(command.root)] = command.period_ms
        elif isinstance(command, NotifyQueueReady):
            self._queue_ready.append(command.queue_id)
        elif isinstance(command, DeleteRootContext):
            self.plugin.delete_root()
        elif isinstance(command, ClearRouteCache):
            self.route_cache_clears += 1
        elif isinstance(command, DispatchGrpcCall | SendGrpcMessage | CancelGrpc):
            self.grpc.append(command)

    def _answer_callout(self, call: DispatchHttpCall, exchange: _Exchange | None) -> None:
        record = {"cluster": call.cluster, "headers": _pairs_to_json(call.headers), "body": _s(call.body)}
        if exchange is not None:
            exchange.callouts.append(record)
        answer = self.callout_answers.get(call.cluster)
        if answer is None:
            self.plugin.on_http_call_response(call.token, None, failure="reset")
            return
        status, body = answer[0], _b(answer[1])
        headers = [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode())]
        headers.append((b"x-envoy-upstream-service-time", b"0"))  # added by Envoy's async client
        self.plugin.on_http_call_response(call.token, headers, body)

    # -- one exchange ----------------------------------------------------------------------------
    def _wait(self, exchange: _Exchange, direction: StreamType) -> None:
        """Let async work happen until the paused direction resumes (or the stream ends)."""
        self._drain(exchange)
        for _ in range(MAX_TICKS_WHILE_PAUSED):
            if direction in exchange.resumed or exchange.local_reply is not None or exchange.reset:
                return
            root = self.plugin.root
            if root is None or self.tick_periods.get(id(root), 0) <= 0 or self.plugin.failed:
                break
            self._tick_once(exchange)
        if direction not in exchange.resumed and exchange.local_reply is None and not exchange.reset:
            raise StuckStream(f"the plugin paused the {direction.name} and nothing resumed it")

    def request(
        self,
        *,
        method: str = "GET",
        path: str = "/",
        authority: str = "example.com",
        headers: HostHeaders = (),
        body: str | bytes = "",
        response_status: int = 200,
        response_headers: HostHeaders = (),
        response_body: str | bytes = "",
        callouts: Mapping[str, tuple[int, str | bytes]] | None = None,
        info: StreamInfo | None = None,
    ) -> dict[str, Any]:
        """One request through the plugin; returns the ``wasmesh plugin run --json`` shape.

        ``callouts`` changes the answers of known clusters for this and later requests.
        """
        unknown = set(callouts or {}) - set(self.callout_answers)
        if unknown:
            raise ValueError(f"callout clusters {sorted(unknown)} were not declared when the host started")
        self.callout_answers.update(callouts or {})
        self.environment.take()
        failed_before = self.plugin.vm.failed if self.plugin.vm is not None else None
        stream_info = dataclasses.replace(info or self.info)
        if not stream_info.start_time_ns:
            stream_info.start_time_ns = time.time_ns()  # Envoy stamps every stream's start
        stream = self.plugin.new_http_stream(stream_info)
        exchange = _Exchange(stream)
        request_body = _b(body)
        request_headers = [
            (b":authority", _b(authority)),
            (b":path", _b(path)),
            (b":method", _b(method)),
            (b":scheme", b"http"),
        ]
        request_headers += [(_b(n).lower(), _b(v)) for n, v in headers]
        if request_body and not any(_b(n).lower() == b"content-length" for n, _ in headers):
            request_headers.append((b"content-length", str(len(request_body)).encode()))
        request_headers.append((b"x-forwarded-proto", b"http"))
        upstream_body = bytearray()
        try:
            sent = self._request_path(exchange, request_headers, request_body, upstream_body)
            response = None
            if exchange.local_reply is not None:
                response = self._local_reply_path(exchange, exchange.local_reply)
            elif sent and not exchange.reset:
                response = self._response_path(exchange, response_status, response_headers, _b(response_body))
        finally:
            stream.finish()
            self._drain(None)
        upstream = None
        if sent:
            upstream = {"headers": _pairs_to_json(request_headers), "body": _s(upstream_body)}
        if exchange.reset:
            response = None
        failed_after = self.plugin.vm.failed if self.plugin.vm is not None else None
        trap = failed_after if failed_after != failed_before else None
        return {
            "upstream_request": upstream,
            "response": response,
            "callouts": exchange.callouts,
            "logs": self.environment.take(),
            "metrics": self.metrics(),
            "trap": trap,
        }

    def _request_path(
        self, exchange: _Exchange, headers: list[tuple[bytes, bytes]], body: bytes, upstream_body: bytearray
    ) -> bool:
        """Run the request callbacks; True when the request reaches the upstream."""
        stream = exchange.stream
        status = stream.on_request_headers(headers, not body)
        self._drain(exchange)
        if exchange.local_reply is not None or exchange.reset:
            return False
        paused = status != HEADERS_CONTINUE
        if paused:
            self._wait(exchange, StreamType.HTTP_REQUEST)
            if exchange.local_reply is not None or exchange.reset:
                return False
            exchange.resumed.discard(StreamType.HTTP_REQUEST)
        if not body:
            return True
        chunks = [(body, True)] if paused else [(body, False), (b"", True)]
        for data, end in chunks:
            verdict = stream.on_request_body(data, end)
            self._drain(exchange)
            if exchange.local_reply is not None or exchange.reset:
                return False
            if verdict.forward is not None:
                upstream_body += verdict.forward
            elif end:
                self._wait(exchange, StreamType.HTTP_REQUEST)
                if exchange.local_reply is not None or exchange.reset:
                    return False
                upstream_body += stream.resume_body(request=True)
        return True

    def _response_path(
        self, exchange: _Exchange, status: int, headers: HostHeaders, body: bytes
    ) -> dict[str, Any] | None:
        stream = exchange.stream
        response_headers = [(b":status", str(status).encode())]
        response_headers += [(_b(n).lower(), _b(v)) for n, v in headers]
        framed = any(_b(n).lower() in (b"content-length", b"transfer-encoding") for n, _ in headers)
        if not framed and status not in (204, 304) and status >= 200:
            response_headers.append((b"content-length", str(len(body)).encode()))
        result = stream.on_response_headers(response_headers, not body)
        self._drain(exchange)
        if exchange.local_reply is not None:
            return self._reply_as_is(exchange.local_reply)
        if exchange.reset:
            return None
        if result != HEADERS_CONTINUE:
            self._wait(exchange, StreamType.HTTP_RESPONSE)
            if exchange.local_reply is not None:
                return self._reply_as_is(exchange.local_reply)
            if exchange.reset:
                return None
            exchange.resumed.discard(StreamType.HTTP_RESPONSE)
        client_body = bytearray()
        for data, end in [(body, False), (b"", True)] if body else []:
            verdict = stream.on_response_body(data, end)
            self._drain(exchange)
            if exchange.local_reply is not None or exchange.reset:
                exchange.reset = True  # the response headers are already on their way
                return None
            if verdict.forward is not None:
                client_body += verdict.forward
            elif end:
                self._wait(exchange, StreamType.HTTP_RESPONSE)
                if exchange.local_reply is not None or exchange.reset:
                    exchange.reset = True
                    return None
                client_body += stream.resume_body(request=False)
        return _client_response(response_headers, bytes(client_body))

    def _local_reply_path(self, exchange: _Exchange, reply: SendLocalReply) -> dict[str, Any] | None:
        """A reply sent on the request path runs through the plugin's response callbacks."""
        stream = exchange.stream
        headers = local_reply_headers(reply)
        if self.plugin.failed:
            return _client_response(headers, reply.body, frame=True)
        stream.on_response_headers(headers, not reply.body)
        self._drain(exchange)
        body = reply.body
        if reply.body:
            verdict = stream.on_response_body(reply.body, True)
            self._drain(exchange)
            body = verdict.forward if verdict.forward is not None else stream.resume_body(request=False)
        if exchange.reset:
            return None
        return _client_response(headers, body, frame=True)

    def _reply_as_is(self, reply: SendLocalReply) -> dict[str, Any]:
        return _client_response(local_reply_headers(reply), reply.body, frame=True)


def _client_response(
    headers: list[tuple[bytes, bytes]], body: bytes, *, frame: bool = False
) -> dict[str, Any]:
    if frame and not any(k in (b"content-length", b"transfer-encoding") for k, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]  # the HTTP/1.1 codec frames it
    status = next((v for k, v in headers if k == b":status"), b"0")
    return {
        "status": int(status) if status.isdigit() else 0,
        "headers": _pairs_to_json([(k, v) for k, v in headers if k != b":status"]),
        "body": _s(body),
    }
