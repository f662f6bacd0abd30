"""One request through one plugin, without a proxy: the engine of ``wasmesh plugin run``.

Sans-io: :func:`run_request` takes the module bytes and a scripted exchange
(:class:`RunRequest`) and returns what happened (:class:`RunResult`). It follows Envoy's
HTTP filter manager for a single Wasm filter between an HTTP/1.1 client and an upstream:

1. The plugin sees the request Envoy's connection manager hands its filters:
   ``:authority :path :method :scheme``, the given headers, ``content-length`` when there
   is a body, ``x-forwarded-proto``. Headers carry end_of_stream when there is no body;
   the body arrives as one chunk with end_of_stream.
2. After every callback the commands it queued are carried out: a local reply answers
   the client, ``continue_stream`` resumes, ``close_stream`` resets (no response),
   callouts are recorded and answered from :attr:`RunRequest.callouts` (a cluster that is
   not listed does not exist, so dispatching to it fails with BAD_ARGUMENT).
3. A paused stream waits: pending callout answers are delivered one at a time, then, if
   the plugin set a tick period, ``on_tick`` fires (the virtual clock moves one period)
   at most :attr:`RunRequest.max_ticks` times in all. A stream still paused after that
   gets Envoy's stream idle timeout: 408 ``stream timeout``.
4. A local reply sent while the request is processed passes through the plugin's own
   response callbacks, as in Envoy; one sent while the response is processed replaces it
   directly. Envoy's framing applies: the plugin's headers, then ``content-length`` and
   ``content-type: text/plain`` when the body is not empty.
5. Unless the client was already answered, the scripted upstream response goes through
   the response callbacks; then the stream ends (``on_log``, ``on_done``, ``on_delete``)
   and callouts still outstanding are answered to the root.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ._abi import LogLevel, Pairs, StreamType
from ._commands import (
    CancelGrpc,
    CloseStream,
    Command,
    DeleteRootContext,
    DispatchGrpcCall,
    DispatchHttpCall,
    NotifyQueueReady,
    ResumeStream,
    SendGrpcMessage,
    SendLocalReply,
)
from ._context import StreamInfo
from ._filter_status import DATA_CONTINUE, HEADERS_CONTINUE, HEADERS_CONTINUE_AND_END_STREAM
from ._http_stream import HttpStream
from ._plugin import Plugin, PluginSpec, PluginStartError
from ._runner_env import LogRecord, PropertyError, RunEnvironment, apply_properties
from ._runner_framing import (
    NO_BODY_STATUSES,
    client_response,
    grpc_status_for_http,
    local_reply_message,
    request_headers,
    strings,
    upstream_response,
)
from ._runner_types import (
    DEFAULT_MAX_TICKS,
    CalloutAnswer,
    CalloutRecord,
    ClientResponse,
    HttpMessage,
    PluginRunError,
    RunRequest,
    RunResult,
)
from ._vm import ModuleError, Runtime

_MAX_COMMAND_ROUNDS = 10_000
_FAILURE_DETAILS = "wasm_fail_stream"

__all__ = [
    "DEFAULT_MAX_TICKS",
    "CalloutAnswer",
    "CalloutRecord",
    "ClientResponse",
    "HttpMessage",
    "PluginRunError",
    "RunRequest",
    "RunResult",
    "run_request",
]


def run_request(request: RunRequest) -> RunResult:
    """Start the plugin, drive one exchange through it, and report; raises PluginRunError."""
    info = StreamInfo()
    try:
        node = apply_properties(request.properties, info)
    except PropertyError as err:
        raise PluginRunError(str(err)) from None
    environment = RunEnvironment(log_level=request.log_level, clusters=request.callouts, node=node)
    runtime = Runtime(limits=request.limits, environment=environment)
    try:
        try:
            compiled = runtime.compile(request.module)
        except ModuleError as err:
            raise PluginRunError(str(err)) from None
        spec = PluginSpec(
            name=request.name,
            root_id=request.root_id,
            vm_id=request.vm_id,
            configuration=request.configuration,
            vm_configuration=request.vm_configuration,
            failure_policy=request.failure_policy,
            fail_open=request.fail_open,
        )
        plugin = Plugin(runtime, compiled, spec)
        try:
            plugin.start()
        except PluginStartError as err:
            raise PluginRunError(_with_last_error(str(err), environment.logs)) from None
        runtime.take_commands()  # start-up effects (tick period) are read from the root itself
        info.start_time_ns = environment.now_ns()
        result = _Exchange(request, runtime, plugin, environment, info).run()
        result.abi = compiled.abi.value.removeprefix("proxy_abi_version_").replace("_", ".")
        return result
    finally:
        runtime.close()


def _with_last_error(message: str, logs: list[LogRecord]) -> str:
    errors = [r for r in logs if r.level >= LogLevel.ERROR]
    if not errors:
        return message
    last = errors[-1]
    return f"{message} (last plugin log, {last.level_name}: {' '.join(last.message.split())})"


@dataclass(slots=True)
class _GrpcCall:
    token: int
    record: CalloutRecord
    stream: bool


class _Exchange:
    """Drives one stream through the plugin and carries out the commands it produces."""

    def __init__(
        self, request: RunRequest, runtime: Runtime, plugin: Plugin, environment: RunEnvironment, info: StreamInfo
    ) -> None:
        self.request = request
        self.runtime = runtime
        self.plugin = plugin
        self.environment = environment
        self.stream: HttpStream = plugin.new_http_stream(info)
        self.callouts: list[CalloutRecord] = []
        self._pending: deque[tuple[str, int]] = deque()  # ("http"|"grpc", token)
        self._http_clusters: dict[int, str] = {}
        self._grpc: dict[int, _GrpcCall] = {}
        self._resumed = {StreamType.HTTP_REQUEST: False, StreamType.HTTP_RESPONSE: False}
        self._local_reply: SendLocalReply | None = None
        self._reset = False
        self.ticks = 0
        self.trap: str | None = None
        self.request_in: HttpMessage | None = None
        self.upstream_response: HttpMessage | None = None

    # -- the exchange ----------------------------------------------------------------------
    def run(self) -> RunResult:
        upstream = self._request_path()
        response: ClientResponse | None = None
        if upstream is not None:
            self._deliver_all()  # callouts answer while the upstream works
            if not self._reset and self._local_reply is None:
                response = self._response_path(upstream_response(self.request), details="")
            elif self._local_reply is not None:
                response = self._answer_request_locally()
        elif not self._reset:
            response = self._answer_request_locally()
        if self._reset:
            response = None
        self.stream.finish()
        self._pump()
        self._deliver_all()
        self._note_trap()
        return RunResult(
            upstream_request=upstream,
            response=response,
            callouts=self.callouts,
            logs=self.environment.logs,
            metrics=self.runtime.metrics.snapshot(),
            trap=self.trap,
            ticks=self.ticks,
            request_in=self.request_in,
            upstream_response=self.upstream_response,
        )

    def _request_path(self) -> HttpMessage | None:
        """Headers then body; the request as it goes upstream, or None if it never does."""
        headers = request_headers(self.request, self.stream.info.scheme)
        body = self.request.body
        self.request_in = HttpMessage(strings(headers), body)
        status = self._call(lambda: self.stream.on_request_headers(headers, not body))
        if not self._proceed(status != HEADERS_CONTINUE and status != HEADERS_CONTINUE_AND_END_STREAM,
                             StreamType.HTTP_REQUEST):
            return None
        forwarded: bytes | None = b""
        if body and status != HEADERS_CONTINUE_AND_END_STREAM:
            # as Envoy's HTTP/1.1 server codec: the data, then an empty end-of-stream chunk
            forwarded = self._body([(body, False), (b"", True)], StreamType.HTTP_REQUEST)
        return None if forwarded is None else HttpMessage(strings(headers), forwarded)

    def _answer_request_locally(self) -> ClientResponse:
        """The request never went upstream: the client gets the plugin's (or the idle) reply."""
        reply = self._take_local_reply()
        if reply is None:
            return self._passthrough_reply(408, b"stream timeout", [], "stream_idle_timeout", None)
        if reply.details == _FAILURE_DETAILS and self.plugin.failed is not None:
            return self._direct_reply(reply.status, reply.body, reply.headers, reply.details, reply.grpc_status)
        return self._passthrough_reply(reply.status, reply.body, reply.headers, reply.details, reply.grpc_status)

    def _response_path(self, response: tuple[Pairs, bytes], details: str) -> ClientResponse | None:
        """The upstream response through the response callbacks; None after a reset."""
        headers, body = response
        self.upstream_response = HttpMessage(strings(headers), body)
        status = self._call(lambda: self.stream.on_response_headers(headers, not body))
        stopped = status != HEADERS_CONTINUE and status != HEADERS_CONTINUE_AND_END_STREAM
        if not self._proceed(stopped, StreamType.HTTP_RESPONSE):
            return self._response_interrupted()
        out: bytes | None = b""
        if body and status != HEADERS_CONTINUE_AND_END_STREAM:
            # Envoy's HTTP/1.1 client codec passes the data, then an empty end-of-stream chunk
            out = self._body([(body, False), (b"", True)], StreamType.HTTP_RESPONSE)
        return self._response_interrupted() if out is None else client_response(headers, out, details)

    def _body(self, chunks: list[tuple[bytes, bool]], direction: StreamType) -> bytes | None:
        """Feed body chunks; what the plugin lets through, or None if the stream went no further.

        A chunk the plugin stops is kept by the host and handed over with the next one; at
        end of stream a stopped body waits for a resume, then is released.
        """
        request = direction is StreamType.HTTP_REQUEST
        feed = self.stream.on_request_body if request else self.stream.on_response_body
        out = b""
        for data, end_stream in chunks:
            verdict = self._call(lambda data=data, end_stream=end_stream: feed(data, end_stream))
            if verdict.status == DATA_CONTINUE:
                out += verdict.forward or b""
                if not self._proceed(False, direction):
                    return None
            elif not self._proceed(end_stream, direction):
                return None
            elif end_stream:
                out += self.stream.resume_body(request=request)
        return out

    def _response_interrupted(self) -> ClientResponse | None:
        if self._reset:
            return None
        reply = self._take_local_reply()
        if reply is None:
            return self._direct_reply(408, b"stream timeout", [], "stream_idle_timeout", None)
        return self._direct_reply(reply.status, reply.body, reply.headers, reply.details, reply.grpc_status)

    def _passthrough_reply(
        self, status: int, body: bytes, headers: Pairs, details: str, grpc_status: int | None
    ) -> ClientResponse:
        """Envoy sends a local reply from the request path through the encoder filters too."""
        pairs, body = local_reply_message(status, body, headers, grpc_status, self.stream.request_headers or [])
        self._call(lambda: self.stream.on_response_headers(pairs, not body))
        self._pump()
        out = b""
        if body and not self._reset:
            verdict = self._call(lambda: self.stream.on_response_body(body, True))
            self._pump()
            out = verdict.forward if verdict.forward is not None else self.stream.resume_body(request=False)
        return client_response(pairs, out, details)

    def _direct_reply(
        self, status: int, body: bytes, headers: Pairs, details: str, grpc_status: int | None
    ) -> ClientResponse:
        """A reply that bypasses the plugin (it failed, or the response was already under way)."""
        pairs, body = local_reply_message(status, body, headers, grpc_status, self.stream.request_headers or [])
        return client_response(pairs, body, details)

    # -- waiting, commands, callouts ------------------------------------------------------------
    def _call(self, callback: Any) -> Any:
        """Run one stream callback with fresh resume flags (a resume counts only after it)."""
        self._resumed[StreamType.HTTP_REQUEST] = self._resumed[StreamType.HTTP_RESPONSE] = False
        return callback()

    def _proceed(self, stopped: bool, direction: StreamType) -> bool:
        """Carry out the callback's commands; True when the stream goes on in ``direction``."""
        self._pump()
        if self._ended():
            return False
        if not stopped:
            return True
        while True:
            if self._resumed[direction]:
                self._resumed[direction] = False
                return True
            if self._pending:
                self._deliver(*self._pending.popleft())
            elif self._tick_period() > 0 and self.ticks < self.request.max_ticks:
                self.ticks += 1
                self.environment.advance(self._tick_period())
                self.plugin.on_tick()
            else:
                return False
            self._pump()
            if self._ended():
                return False

    def _ended(self) -> bool:
        return self._reset or self._local_reply is not None

    def _tick_period(self) -> int:
        root = self.plugin.root
        return root.tick_period_ms if root is not None and not root.deleted else 0

    def _take_local_reply(self) -> SendLocalReply | None:
        reply, self._local_reply = self._local_reply, None
        return reply

    def _pump(self) -> None:
        """Carry out queued commands until none are left (bounded against ping-pong)."""
        for _ in range(_MAX_COMMAND_ROUNDS):
            commands = self.runtime.take_commands()
            if not commands:
                break
            for command in commands:
                self._carry_out(command)
        self._note_trap()

    def _carry_out(self, command: Command) -> None:
        mine = getattr(command, "stream", None) is self.stream.ctx and self.stream.ctx is not None
        if isinstance(command, SendLocalReply):
            if mine and self._local_reply is None:
                self._local_reply = command
        elif isinstance(command, ResumeStream):
            if mine and command.direction in self._resumed:
                self._resumed[command.direction] = True
        elif isinstance(command, CloseStream):
            if mine:
                self._reset = True
        elif isinstance(command, DispatchHttpCall):
            self.callouts.append(CalloutRecord(command.cluster, strings(command.headers), command.body))
            self._http_clusters[command.token] = command.cluster
            self._pending.append(("http", command.token))
        elif isinstance(command, DispatchGrpcCall):
            self._dispatch_grpc(command)
        elif isinstance(command, SendGrpcMessage):
            call = self._grpc.get(command.token)
            if call is not None:
                call.record.body += command.message
        elif isinstance(command, CancelGrpc):
            if not command.half_close:
                self._grpc.pop(command.token, None)
        elif isinstance(command, NotifyQueueReady):
            if command.root is self.plugin.root:
                self.plugin.on_queue_ready(command.queue_id)
        elif isinstance(command, DeleteRootContext):
            if command.root is self.plugin.root:
                self.plugin.delete_root()
        # SetTickPeriod is read from the root; ClearRouteCache has no route to clear here

    def _dispatch_grpc(self, command: DispatchGrpcCall) -> None:
        headers = [
            (":method", "POST"),
            (":path", f"/{command.service}/{command.method}"),
            (":authority", command.cluster),
            ("content-type", "application/grpc"),
            *strings(command.initial_metadata),
        ]
        record = CalloutRecord(command.cluster, headers, command.message or b"", kind="grpc")
        self.callouts.append(record)
        self._grpc[command.token] = _GrpcCall(command.token, record, command.message is None)
        self._pending.append(("grpc", command.token))

    def _deliver(self, kind: str, token: int) -> None:
        if kind == "http":
            answer = self.request.callouts[self._http_clusters[token]]
            headers: Pairs = [(b":status", str(answer.status).encode())]
            if answer.status not in NO_BODY_STATUSES:
                headers.append((b"content-length", str(len(answer.body)).encode()))
            headers.append((b"x-envoy-upstream-service-time", b"0"))  # Envoy's async client adds it
            self.plugin.on_http_call_response(token, headers, answer.body, [])
            return
        call = self._grpc.pop(token, None)
        if call is None:
            return  # cancelled
        answer = self.request.callouts[call.record.cluster]
        if answer.status == 200:
            self.plugin.on_grpc_receive(token, answer.body)
            if call.stream:
                self.plugin.on_grpc_close(token, 0)
        else:
            self.plugin.on_grpc_close(token, grpc_status_for_http(answer.status))

    def _deliver_all(self) -> None:
        while self._pending:
            self._deliver(*self._pending.popleft())
            self._pump()

    def _note_trap(self) -> None:
        vm = self.plugin.vm
        if self.trap is None and vm is not None and vm.failed is not None:
            self.trap = vm.failed

    # -- messages ---------------------------------------------------------------------------------
