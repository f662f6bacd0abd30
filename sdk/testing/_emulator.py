"""HostEmulator: drive any proxy-wasm module event by event from a test, and inspect the host.

The emulator owns one runtime (engine, shared data, metrics), one plugin (root context)
and a :class:`~sdk.testing._state.HostState` (streams keyed by the id
:meth:`HostEmulator.initialize_http_context` returned, pending callouts, the clock).
Every ``call_*`` runs plugin code, then carries out the effects it queued before
returning; nothing happens between calls unless the test asks (``advance_time``,
``answer_callout`` ...). Only the public ``wasmhost`` API is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from wasmhost import (
    DEFAULT_LIMITS,
    Action,
    FailurePolicy,
    Limits,
    LogLevel,
    ModuleError,
    Plugin,
    PluginSpec,
    PropertyError,
    Runtime,
    StreamInfo,
    StreamType,
    WasmVM,
    apply_properties,
)

from ._bridge import DISPATCH_FUNCTION, bridge_module
from ._environment import EmulatorEnvironment, ForeignCallable
from ._python_mode import PythonPlugin
from ._records import Callout, GrpcCall, Headers, LocalResponse, LogEntry
from ._state import (
    EmulatorError,
    HeadersInput,
    HostState,
    StreamState,
    as_bytes,
    drain,
    to_pairs,
    to_strings,
)

_CONTINUE_STATUSES = frozenset({0, 2})  # Envoy's Continue and ContinueAndEndStream
PYTHON_DEADLINE_MS = 3_600_000


class HostEmulator:
    """A proxy-wasm host for tests, modelled on proxy-wasm-go-sdk's ``proxytest``.

    Typical use::

        with HostEmulator.load("build/plugins/local_reply.wasm") as host:
            host.start_plugin()
            stream = host.initialize_http_context()
            action = host.call_on_request_headers(stream, {"x-deny": "1"}, end_of_stream=True)
            assert action is Action.PAUSE
            assert host.local_response(stream).status == 403

    Names follow ``proxytest``: ``call_*`` runs plugin code, ``current_*`` reads host state.
    Header arguments are a mapping or ``(name, value)`` pairs; names are lower-cased.
    """

    def __init__(
        self,
        wasm: bytes,
        *,
        plugin_config: bytes | str = b"",
        vm_config: bytes | str = b"",
        root_id: str = "",
        vm_id: str = "",
        name: str = "plugin",
        properties: Mapping[str, object] | None = None,
        clusters: Iterable[str] | None = None,
        log_level: LogLevel = LogLevel.TRACE,
        failure_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED,
        foreign_functions: Mapping[str, ForeignCallable] | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Prefer :meth:`load`. ``clusters=None`` means every callout cluster exists."""
        #: "wasm" for a module, "python" for a plugin's source run in CPython (:meth:`load_python`)
        self.mode = "wasm"
        self.python: PythonPlugin | None = None
        self.state = HostState()
        self.environment = EmulatorEnvironment(
            log_level=log_level, clusters=clusters, foreign_functions=foreign_functions or {}, state=self.state
        )
        self.properties: dict[str, object] = dict(properties or {})
        self._check_properties()
        self.runtime = Runtime(limits=limits, environment=self.environment)
        try:
            compiled = self.runtime.compile(wasm)
        except ModuleError:
            self.runtime.close()
            raise
        self.spec = PluginSpec(
            name=name,
            root_id=root_id,
            vm_id=vm_id,
            configuration=as_bytes(plugin_config),
            vm_configuration=as_bytes(vm_config),
            failure_policy=failure_policy,
        )
        #: the plugin's VM (one entry; replaced when FAIL_RELOAD rebuilds it)
        self.vms: dict[object, WasmVM] = {}
        self.plugin = Plugin(self.runtime, compiled, self.spec, shared_vms=self.vms)
        self._next_stream_id = 1

    @classmethod
    def load(cls, module: str | Path | bytes | bytearray, **options: Any) -> HostEmulator:
        """Compile ``module`` (a path or the bytes of a .wasm); options as for the constructor.

        Raises ``wasmhost.ModuleError`` for a module no host could run (not wasm, no ABI
        marker, no allocator). The plugin is not started yet: call :meth:`start_plugin`.
        """
        if not isinstance(module, bytes | bytearray) and Path(module).suffix == ".py":
            return cls.load_python(module, **options)
        wasm = bytes(module) if isinstance(module, bytes | bytearray) else Path(module).read_bytes()
        return cls(wasm, **options)

    @classmethod
    def load_python(cls, source: str | Path, **options: Any) -> HostEmulator:
        """Run a Python SDK plugin's source in CPython against the same host (CPython mode).

        The plugin is imported now (an import error is raised here, with its traceback);
        every callback then runs its Python code, with ``sdk.proxywasm`` calling the real
        host functions (see ``sdk.testing._python_mode``). Everything else — options,
        ``call_*``, ``current_*`` — is as for the compiled module. The callback deadline
        defaults to an hour, so a debugger can stop inside the plugin.
        """
        foreign = dict(options.pop("foreign_functions", None) or {})
        options.setdefault("limits", replace(DEFAULT_LIMITS, callback_deadline_ms=PYTHON_DEADLINE_MS))
        slot: list[PythonPlugin] = []
        foreign[DISPATCH_FUNCTION] = lambda args: slot[0](args)
        emulator = cls(bridge_module(), foreign_functions=foreign, **options)
        try:
            emulator.python = PythonPlugin(source, emulator.vms)
        except BaseException:
            emulator.close()
            raise
        slot.append(emulator.python)
        emulator.mode = "python"
        return emulator

    @property
    def python_errors(self) -> list[BaseException]:
        """CPython mode: exceptions the plugin's code raised (each trapped the VM)."""
        return list(self.python.errors) if self.python is not None else []

    def __enter__(self) -> HostEmulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the runtime's background epoch thread; the emulator is unusable afterwards."""
        if self.python is not None:
            self.python.close()
        self.runtime.close()

    # -- plugin lifecycle -------------------------------------------------------------------------
    def start_plugin(self) -> None:
        """``on_context_create`` → ``on_vm_start`` → ``on_configure``; raises PluginStartError."""
        self.environment.node = self._node()
        self.plugin.start()
        self._drain()

    def shutdown_plugin(self) -> None:
        """Envoy's root shutdown: ``on_done``, and ``on_delete`` now or after ``proxy_done``."""
        self._require_started()
        self.plugin.shutdown()
        self._drain()

    @property
    def trap(self) -> str | None:
        """Why the plugin's VM failed (trap, CPU deadline, memory cap), or None.

        In CPython mode a trap caused by the plugin's code also names the Python exception.
        """
        vm = self.plugin.vm
        reason = vm.failed if vm is not None else None
        if reason is not None and self.python is not None and self.python.errors:
            error = self.python.errors[-1]
            reason += f" (Python: {type(error).__name__}: {error})"
        return reason

    @property
    def root_deleted(self) -> bool:
        """True once the root context got ``on_delete`` (after :meth:`shutdown_plugin`)."""
        root = self.plugin.root
        return root is not None and root.deleted

    # -- HTTP streams --------------------------------------------------------------------------------
    def initialize_http_context(self) -> int:
        """Open a stream; returns its id for the ``call_*``/``current_*`` methods.

        The plugin's own context is created lazily on the first event, as in Envoy; its
        StreamInfo is built from :attr:`properties` as they are now.
        """
        self._require_started()
        info = StreamInfo(start_time_ns=self.environment.now_ns())
        try:
            apply_properties(self.properties, info)
        except PropertyError as err:
            raise EmulatorError(str(err)) from None
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        self.state.streams[stream_id] = StreamState(stream_id, self.plugin.new_http_stream(info))
        return stream_id

    def call_on_request_headers(self, stream_id: int, headers: HeadersInput, end_of_stream: bool) -> Action:
        """Request headers arrive; PAUSE means the plugin holds the request (or answered it)."""
        state = self._stream(stream_id)
        status = state.stream.on_request_headers(to_pairs(headers), end_of_stream)
        state.request_paused = status not in _CONTINUE_STATUSES
        return self._after(status)

    def call_on_request_body(self, stream_id: int, body: bytes, end_of_stream: bool) -> Action:
        """A request body chunk; on PAUSE the host keeps it and the next chunk adds to it."""
        state = self._stream(stream_id)
        verdict = state.stream.on_request_body(body, end_of_stream)
        if verdict.forward is not None:
            state.request_forwarded += verdict.forward
        state.request_paused = verdict.status != 0
        return self._after(verdict.status)

    def call_on_request_trailers(self, stream_id: int, trailers: HeadersInput) -> Action:
        state = self._stream(stream_id)
        return self._after(state.stream.on_request_trailers(to_pairs(trailers)))

    def call_on_response_headers(self, stream_id: int, headers: HeadersInput, end_of_stream: bool) -> Action:
        """Response headers arrive (include ``:status``)."""
        state = self._stream(stream_id)
        status = state.stream.on_response_headers(to_pairs(headers), end_of_stream)
        state.response_paused = status not in _CONTINUE_STATUSES
        return self._after(status)

    def call_on_response_body(self, stream_id: int, body: bytes, end_of_stream: bool) -> Action:
        state = self._stream(stream_id)
        verdict = state.stream.on_response_body(body, end_of_stream)
        if verdict.forward is not None:
            state.response_forwarded += verdict.forward
        state.response_paused = verdict.status != 0
        return self._after(verdict.status)

    def call_on_response_trailers(self, stream_id: int, trailers: HeadersInput) -> Action:
        state = self._stream(stream_id)
        return self._after(state.stream.on_response_trailers(to_pairs(trailers)))

    def complete_http_context(self, stream_id: int) -> None:
        """End the stream: ``on_log``, ``on_done``, ``on_delete`` (Envoy's order)."""
        state = self._stream(stream_id)
        state.stream.finish()
        state.completed = True
        self._drain()

    def current_request_headers(self, stream_id: int) -> Headers:
        """The request headers as the plugin left them (what would go upstream)."""
        return to_strings(self._stream(stream_id).stream.request_headers or [])

    def current_response_headers(self, stream_id: int) -> Headers:
        return to_strings(self._stream(stream_id).stream.response_headers or [])

    def current_request_trailers(self, stream_id: int) -> Headers:
        ctx = self._stream(stream_id).stream.ctx
        return to_strings(ctx.request_trailers or []) if ctx is not None else []

    def current_response_trailers(self, stream_id: int) -> Headers:
        ctx = self._stream(stream_id).stream.ctx
        return to_strings(ctx.response_trailers or []) if ctx is not None else []

    def current_request_body(self, stream_id: int) -> bytes:
        """Body bytes released upstream so far, followed by any the host still holds."""
        state = self._stream(stream_id)
        held = state.stream.ctx.request_body if state.stream.ctx is not None else None
        return bytes(state.request_forwarded) + bytes(held or b"")

    def current_response_body(self, stream_id: int) -> bytes:
        state = self._stream(stream_id)
        held = state.stream.ctx.response_body if state.stream.ctx is not None else None
        return bytes(state.response_forwarded) + bytes(held or b"")

    def local_response(self, stream_id: int) -> LocalResponse | None:
        """The local reply the plugin (or the failure policy) sent on this stream, if any."""
        return self._stream(stream_id).local_response

    def is_paused(self, stream_id: int, direction: StreamType = StreamType.HTTP_REQUEST) -> bool:
        """Whether the last callback stopped this direction and no ``continue_stream`` followed."""
        state = self._stream(stream_id)
        return state.request_paused if direction is StreamType.HTTP_REQUEST else state.response_paused

    def is_reset(self, stream_id: int) -> bool:
        """Whether the plugin reset the stream with ``proxy_close_stream``."""
        return self._stream(stream_id).reset

    def route_cache_clears(self, stream_id: int) -> int:
        return self._stream(stream_id).route_cache_clears

    def http_context_ids(self) -> list[int]:
        """Ids of streams not completed yet."""
        return [sid for sid, state in self.state.streams.items() if not state.completed]

    # -- time -------------------------------------------------------------------------------------------
    @property
    def tick_period_ms(self) -> int:
        """The period the plugin set with ``proxy_set_tick_period_milliseconds`` (0 = none)."""
        root = self.plugin.root
        return root.tick_period_ms if root is not None else 0

    def tick(self) -> None:
        """Call ``on_tick`` once, now, whatever the period (the clock does not move)."""
        self._require_started()
        self.plugin.on_tick()
        self._drain()

    def advance_time(self, ms: int) -> int:
        """Move the clock by ``ms``, firing ``on_tick`` at every period boundary passed.

        Returns how many ticks fired. The plugin's clocks (``proxy_get_current_time``,
        WASI clocks) only move through this method.
        """
        if ms < 0:
            raise EmulatorError("time only moves forward")
        state = self.state
        target = state.elapsed_ns + ms * 1_000_000
        fired = 0
        while state.next_tick_ns is not None and state.next_tick_ns <= target:
            state.elapsed_ns = state.next_tick_ns
            state.next_tick_ns += self.tick_period_ms * 1_000_000
            self.plugin.on_tick()
            fired += 1
            self._drain()  # a SetTickPeriod here re-arms the schedule from now
        state.elapsed_ns = target
        return fired

    def now_ns(self) -> int:
        """The wall clock the plugin sees (nanoseconds since the epoch)."""
        return self.environment.now_ns()

    # -- callouts -----------------------------------------------------------------------------------------
    def pending_callouts(self) -> list[Callout]:
        """HTTP callouts dispatched and not answered yet, oldest first."""
        return list(self.state.callouts.values())

    def answer_callout(
        self,
        token: int,
        status: int = 200,
        headers: HeadersInput = (),
        body: bytes = b"",
        trailers: HeadersInput = (),
    ) -> None:
        """Deliver a callout's response to the root (``:status`` is added from ``status``)."""
        self._take_callout(token)
        pairs = [(b":status", str(status).encode()), *to_pairs(headers)]
        self.plugin.on_http_call_response(token, pairs, body, to_pairs(trailers))
        self._drain()

    def fail_callout(self, token: int, reason: str = "reset") -> None:
        """The callout failed (reset, timeout): the plugin gets 0 headers and status 11."""
        self._take_callout(token)
        self.plugin.on_http_call_response(token, None, failure=reason)
        self._drain()

    def pending_grpc_calls(self) -> list[GrpcCall]:
        """gRPC calls and streams that are open (not closed, cancelled or answered)."""
        return list(self.state.grpc.values())

    def answer_grpc_call(self, token: int, message: bytes) -> None:
        """A unary call succeeds: ``on_grpc_receive`` only, which ends the call.

        As in Envoy, a unary call reports no metadata; to fail it use ``close_grpc_call``.
        """
        call = self._grpc_call(token)
        if call.is_stream:
            raise EmulatorError(f"gRPC token {token} is a stream: use send_grpc_message and close_grpc_call")
        del self.state.grpc[token]
        self.plugin.on_grpc_receive(token, message)
        self._drain()

    def send_grpc_metadata(self, token: int, metadata: HeadersInput, *, trailing: bool = False) -> None:
        """The server sends initial (or trailing) metadata on an open gRPC stream."""
        if not self._grpc_call(token).is_stream:
            raise EmulatorError(f"gRPC token {token} is a unary call: Envoy reports no metadata for it")
        if trailing:
            self.plugin.on_grpc_receive_trailing_metadata(token, to_pairs(metadata))
        else:
            self.plugin.on_grpc_receive_initial_metadata(token, to_pairs(metadata))
        self._drain()

    def send_grpc_message(self, token: int, message: bytes) -> None:
        """The server sends one message on an open gRPC stream."""
        self._grpc_call(token)
        self.plugin.on_grpc_receive(token, message)
        self._drain()

    def close_grpc_call(self, token: int, status: int, message: str = "") -> None:
        """The call ends with gRPC ``status`` (``on_grpc_close``); non-zero fails a unary call."""
        self._grpc_call(token)
        del self.state.grpc[token]
        self.plugin.on_grpc_close(token, status, message.encode())
        self._drain()

    # -- logs, metrics, shared state ------------------------------------------------------------------
    def logs(self, level: LogLevel | str | None = None) -> list[str]:
        """Messages the plugin logged, optionally only those at exactly ``level``."""
        wanted = _level(level) if level is not None else None
        return [e.message for e in self.environment.entries if wanted is None or e.level == wanted]

    def log_entries(self) -> list[LogEntry]:
        return list(self.environment.entries)

    def clear_logs(self) -> None:
        self.environment.entries.clear()

    def metrics(self) -> dict[str, Any]:
        """name → value (counters, gauges) or ``{"count", "sum"}`` (histograms)."""
        return self.runtime.metrics.snapshot()

    def metric(self, name: str) -> Any:
        """One metric's value; KeyError names the metrics that exist."""
        values = self.metrics()
        if name not in values:
            raise KeyError(f"no metric {name!r}; defined: {sorted(values)}")
        return values[name]

    def shared_data(self, key: str | bytes) -> bytes | None:
        """The value stored under ``key`` for this plugin's vm_id, or None."""
        entry = self.runtime.shared.data(self.spec.vm_id).get(as_bytes(key))
        return entry[0] if entry is not None else None

    def set_shared_data(self, key: str | bytes, value: bytes | str) -> None:
        self.runtime.shared.data(self.spec.vm_id).set(as_bytes(key), as_bytes(value), 0)

    def queue_items(self, name: str) -> list[bytes]:
        """Items waiting in the shared queue ``name`` (empty if it is not registered)."""
        queue_id = self.runtime.shared.resolve_queue(self.spec.vm_id, name)
        queue = self.runtime.shared.queue(queue_id) if queue_id is not None else None
        return list(queue.items) if queue is not None else []

    def enqueue(self, name: str, value: bytes | str) -> None:
        """Another VM enqueues ``value``: the registering root gets ``on_queue_ready``."""
        queue_id = self.runtime.shared.resolve_queue(self.spec.vm_id, name)
        if queue_id is None:
            raise EmulatorError(f"no shared queue {name!r} is registered")
        queue = self.runtime.shared.enqueue(queue_id, as_bytes(value))
        if queue is not None and queue.owner is self.plugin.root:
            self.plugin.on_queue_ready(queue_id)
        self._drain()

    def call_on_foreign_function(self, function_id: int, args: bytes) -> None:
        """The host invokes the plugin's ``proxy_on_foreign_function``."""
        self._require_started()
        self.plugin.on_foreign_function(function_id, args)
        self._drain()

    def set_property(self, path: str, value: object) -> None:
        """Serve ``path`` to streams opened from now on (and ``node.*`` to the root)."""
        self.properties[path] = value
        self._check_properties()
        self.environment.node = self._node()

    # -- internals ------------------------------------------------------------------------------------
    def _check_properties(self) -> None:
        try:
            apply_properties(self.properties, StreamInfo())
        except PropertyError as err:
            raise EmulatorError(str(err)) from None

    def _node(self) -> dict[str, Any]:
        return apply_properties(self.properties, StreamInfo())

    def _require_started(self) -> None:
        if self.plugin.root is None:
            raise EmulatorError("the plugin is not started: call start_plugin() first")

    def _stream(self, stream_id: int) -> StreamState:
        state = self.state.streams.get(stream_id)
        if state is None:
            raise EmulatorError(f"no HTTP stream {stream_id}: use an id from initialize_http_context()")
        return state

    def _take_callout(self, token: int) -> Callout:
        callout = self.state.callouts.pop(token, None)
        if callout is None:
            raise EmulatorError(f"no pending callout with token {token}; pending: {sorted(self.state.callouts)}")
        return callout

    def _grpc_call(self, token: int) -> GrpcCall:
        call = self.state.grpc.get(token)
        if call is None:
            raise EmulatorError(f"no open gRPC call with token {token}; open: {sorted(self.state.grpc)}")
        return call

    def _drain(self) -> None:
        drain(self.runtime, self.plugin, self.state)

    def _after(self, status: int) -> Action:
        self._drain()
        return Action.CONTINUE if status in _CONTINUE_STATUSES else Action.PAUSE

def _level(level: LogLevel | str) -> LogLevel:
    if isinstance(level, LogLevel):
        return level
    name = level.upper()
    if name == "WARNING":
        name = "WARN"
    try:
        return LogLevel[name]
    except KeyError:
        raise EmulatorError(f"unknown log level {level!r}: use trace, debug, info, warn, error, critical") from None


