"""The proxy-wasm lifecycle: plugins (root contexts) and the streams that run through them.

Transition rules (Envoy's order, reference §2.2-§2.5):

1. VM: instantiate → ``_initialize`` (+ ``main``/``__main_void``) or ``_start``.
2. Plugin: ``proxy_on_context_create(root, 0)`` → ``proxy_on_vm_start(root, vm_cfg_len)``
   → ``proxy_on_configure(root, cfg_len)``; a false result fails the plugin.
3. HTTP stream: context created lazily on its first event → request headers → body* →
   trailers? → response headers → body* → trailers? → ``on_log`` → ``on_done`` →
   ``on_delete``. A callback the module does not export means Continue.
4. Side effects (local reply, resume, close, callouts, timers) are queued as commands
   and carried out by the embedder after the callback returns; never re-entrantly.
   A local reply stops only the callback that sent it. One sent from a request callback
   is then fed back through the same stream's ``on_response_headers``/``on_response_body``
   (Envoy runs its encoder filters on local replies; headers from
   :func:`local_reply_headers`); one sent from a response callback is not.
5. A failed VM is never called again. The plugin's failure policy decides what its
   streams see: FAIL_OPEN passes through, FAIL_CLOSED answers 503 ``wasm_fail_stream``,
   FAIL_RELOAD fails the current stream closed and builds a fresh VM (with backoff) for
   the next ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ._abi import AbiVersion, FailurePolicy, Pairs
from ._commands import DeleteRootContext, SendLocalReply
from ._context import CalloutResponse, HttpContext, RootContext, StreamInfo, TcpContext
from ._vm import CompiledModule, ModuleError, Runtime, VmFailed, WasmVM

# Envoy filter statuses returned to the embedder
HEADERS_CONTINUE = 0
HEADERS_STOP_ITERATION = 1
HEADERS_CONTINUE_AND_END_STREAM = 2
HEADERS_STOP_ALL_BUFFER = 3
HEADERS_STOP_ALL_WATERMARK = 4
DATA_CONTINUE = 0
DATA_STOP_BUFFER = 1
DATA_STOP_WATERMARK = 2
DATA_STOP_NO_BUFFER = 3
TRAILERS_CONTINUE = 0
TRAILERS_STOP = 1


class PluginStartError(Exception):
    """The plugin could not start: bad module, a trap, or on_vm_start/on_configure said no."""


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """Everything that identifies one configured plugin (Envoy's PluginConfig + VmConfig)."""

    name: str = ""
    root_id: str = ""
    vm_id: str = ""
    configuration: bytes = b""
    vm_configuration: bytes = b""
    failure_policy: FailurePolicy = FailurePolicy.FAIL_CLOSED
    #: Envoy's older ``fail_open: true``: also pass through the stream that met the failure
    fail_open: bool = False
    env: tuple[tuple[str, str], ...] = ()
    allow_on_headers_stop_iteration: bool = False

    def vm_key(self, code_sha256: str) -> tuple[str, bytes, str, tuple[tuple[str, str], ...]]:
        """VMs are shared by plugins with the same vm_id, VM config, code and env."""
        return (self.vm_id, self.vm_configuration, code_sha256, self.env)


@dataclass(slots=True)
class BodyVerdict:
    """What to do with body bytes: ``status`` (Envoy FilterDataStatus) and what to send on now."""

    status: int
    forward: bytes | None = None


@dataclass(slots=True)
class _ReloadState:
    failures: int = 0  # consecutive: reloads or failed rebuilds close together
    next_attempt: float = 0.0
    last_error: str = ""


class Plugin:
    """One configured plugin on one VM: start it, open streams, deliver async events."""

    def __init__(
        self,
        runtime: Runtime,
        compiled: CompiledModule,
        spec: PluginSpec,
        *,
        shared_vms: dict[object, WasmVM] | None = None,
    ) -> None:
        self.runtime = runtime
        self.compiled = compiled
        self.spec = spec
        self._shared_vms = shared_vms
        self.vm: WasmVM | None = None
        self.root: RootContext | None = None
        self._reload = _ReloadState()
        self._loaded_at = float("-inf")
        self.reloads = 0

    # -- start / stop --------------------------------------------------------------------
    def start(self) -> None:
        """Create (or join) the VM and bring the root context up; raises PluginStartError."""
        vm = self._obtain_vm()
        root = RootContext(id=vm.next_context_id(), vm=vm, spec=self.spec)
        vm.contexts[root.id] = root
        try:
            vm.call(root, "proxy_on_context_create", root.id, 0)
            root.vm_starting = True
            try:
                ok = vm.call(root, "proxy_on_vm_start", root.id, len(vm.vm_configuration))
            finally:
                root.vm_starting = False
            if ok is not None and ok == 0:
                raise PluginStartError(f"plugin {self.spec.name!r}: proxy_on_vm_start returned false")
            root.configuring = True
            try:
                ok = vm.call(root, "proxy_on_configure", root.id, len(self.spec.configuration))
            finally:
                root.configuring = False
            if ok is not None and ok == 0:
                raise PluginStartError(f"plugin {self.spec.name!r}: proxy_on_configure rejected the configuration")
        except VmFailed as err:
            raise PluginStartError(f"plugin {self.spec.name!r}: {err}") from None
        self.vm = vm
        self.root = root
        self._loaded_at = time.monotonic()

    def _obtain_vm(self) -> WasmVM:
        key = self.spec.vm_key(self.compiled.sha256)
        if self._shared_vms is not None:
            existing = self._shared_vms.get(key)
            if existing is not None and existing.failed is None:
                return existing
        try:
            vm = WasmVM(
                self.runtime,
                self.compiled,
                vm_id=self.spec.vm_id,
                vm_configuration=self.spec.vm_configuration,
                env=dict(self.spec.env),
                log_spec=self.spec,
            )
            vm.start()
        except ModuleError as err:
            raise PluginStartError(f"plugin {self.spec.name!r}: {err}") from None
        except VmFailed as err:
            raise PluginStartError(f"plugin {self.spec.name!r}: VM start failed: {err}") from None
        if self._shared_vms is not None:
            self._shared_vms[key] = vm
        return vm

    @property
    def failed(self) -> str | None:
        """Why this plugin's VM is unusable, or None while it is healthy."""
        if self.vm is None:
            return "plugin not started"
        return self.vm.failed

    def shutdown(self) -> None:
        """Envoy's root shutdown: ``on_done``; true → ``on_delete`` now, false → wait for ``proxy_done``."""
        root, vm = self.root, self.vm
        if root is None or vm is None or vm.failed is not None or root.deleted:
            return
        try:
            done = vm.call(root, "proxy_on_done", root.id)
            if done is None or done != 0:
                self.delete_root()
            else:
                root.pending_done = True
        except VmFailed:
            pass

    def delete_root(self) -> None:
        root, vm = self.root, self.vm
        if root is None or vm is None or root.deleted:
            return
        root.deleted = True
        root.pending_done = False
        try:
            if vm.failed is None:
                vm.call(root, "proxy_on_delete", root.id)
        except VmFailed:
            pass
        vm.contexts.pop(root.id, None)

    # -- failure policy --------------------------------------------------------------------
    def healthy(self) -> bool:
        """True when streams may run the plugin now; FAIL_RELOAD rebuilds the VM here.

        As Envoy's ``reload_config``: a failed VM is rebuilt for a new stream only once
        the backoff has passed since the current VM was loaded (1 s by default), and a
        VM that fails again soon after a rebuild doubles the wait (capped), so a plugin
        that traps on every request costs one VM per backoff period, not one per request.
        Streams refused while backing off are answered 503 (``vm_reload_backoff``).
        """
        if self.vm is not None and self.vm.failed is None:
            return True
        if self.spec.failure_policy is not FailurePolicy.FAIL_RELOAD:
            return False
        now = time.monotonic()
        state = self._reload
        limits = self.runtime.limits
        delay = min(limits.reload_backoff_max_s, limits.reload_backoff_initial_s * (2 ** state.failures))
        if now < self._loaded_at + delay or now < state.next_attempt:
            self.runtime.counters.bump(self.spec.name, "reload_backoff")
            return False
        previous_load = self._loaded_at
        try:
            self.start()
        except PluginStartError as err:
            state.last_error = str(err)
            state.failures += 1
            state.next_attempt = now + delay
            self.runtime.counters.reload_failures += 1
            self.runtime.counters.bump(self.spec.name, "reload_failures")
            return False
        quick = now - previous_load < limits.reload_backoff_max_s
        state.failures = state.failures + 1 if quick else 0
        self.reloads += 1
        self.runtime.counters.reloads += 1
        self.runtime.counters.bump(self.spec.name, "reloads")
        return True

    # -- streams ------------------------------------------------------------------------------
    def new_http_stream(self, info: StreamInfo | None = None) -> HttpStream:
        return HttpStream(self, info or StreamInfo())

    def new_tcp_stream(self, info: StreamInfo | None = None) -> TcpStream:
        return TcpStream(self, info or StreamInfo())

    # -- async events delivered to the root --------------------------------------------------
    def _root_call(self, export: str, *args: int) -> None:
        root, vm = self.root, self.vm
        if root is None or vm is None or vm.failed is not None or root.deleted:
            return
        try:
            vm.call(root, export, root.id, *args)
        except VmFailed:
            pass

    def on_tick(self) -> None:
        self._root_call("proxy_on_tick")

    def on_queue_ready(self, queue_id: int) -> None:
        self._root_call("proxy_on_queue_ready", queue_id)

    def on_http_call_response(
        self, token: int, headers: Pairs | None, body: bytes = b"", trailers: Pairs | None = None,
        *, failure: str = "",
    ) -> None:
        """Deliver a callout's answer (``headers`` None = failed/timeout) to the issuing root."""
        root = self.root
        if root is None or token not in root.http_calls:
            return
        del root.http_calls[token]
        if headers is None:
            root.callout = CalloutResponse([], b"", [])
            root.status = (11, (failure or "reset").encode())
            nh = nb = nt = 0
        else:
            root.callout = CalloutResponse(list(headers), body, list(trailers or []))
            root.status = (0, b"")
            nh, nb, nt = len(headers), len(body), len(trailers or [])
        try:
            self._root_call("proxy_on_http_call_response", token, nh, nb, nt)
        finally:
            root.callout = None

    def on_grpc_receive_initial_metadata(self, token: int, metadata: Pairs) -> None:
        root = self.root
        if root is None or token not in root.grpc_calls:
            return
        root.grpc_metadata = list(metadata)
        try:
            self._root_call("proxy_on_grpc_receive_initial_metadata", token, len(metadata))
        finally:
            root.grpc_metadata = None

    def on_grpc_receive(self, token: int, message: bytes) -> None:
        root = self.root
        if root is None or token not in root.grpc_calls:
            return
        root.grpc_message = message
        try:
            self._root_call("proxy_on_grpc_receive", token, len(message))
        finally:
            root.grpc_message = None

    def on_grpc_receive_trailing_metadata(self, token: int, metadata: Pairs) -> None:
        root = self.root
        if root is None or token not in root.grpc_calls:
            return
        root.grpc_metadata = list(metadata)
        try:
            self._root_call("proxy_on_grpc_receive_trailing_metadata", token, len(metadata))
        finally:
            root.grpc_metadata = None

    def on_grpc_close(self, token: int, grpc_status: int, message: bytes = b"") -> None:
        root = self.root
        if root is None or token not in root.grpc_calls:
            return
        del root.grpc_calls[token]
        root.status = (grpc_status, message)
        self._root_call("proxy_on_grpc_close", token, grpc_status)

    def on_foreign_function(self, function_id: int, args: bytes) -> None:
        root = self.root
        if root is None or self.compiled.abi is AbiVersion.V0_1_0:
            return
        root.foreign_args = args
        try:
            self._root_call("proxy_on_foreign_function", function_id, len(args))
        finally:
            root.foreign_args = None

    def handle_proxy_done(self) -> None:
        """The plugin called ``proxy_done`` after deferring its shutdown."""
        if self.root is not None and self.root.pending_done:
            self.runtime.commands.push(DeleteRootContext(self.root))


class HttpStream:
    """One HTTP stream through one plugin; the embedder feeds events in Envoy's order."""

    __slots__ = (
        "plugin", "info", "ctx", "_vm", "_passthrough", "_skip_plugin", "_v01", "_replied_before",
        "request_headers", "response_headers",
    )

    def __init__(self, plugin: Plugin, info: StreamInfo) -> None:
        self.plugin = plugin
        self.info = info
        self.ctx: HttpContext | None = None
        self._vm: WasmVM | None = None
        self._passthrough = False
        self._skip_plugin = False  # FAIL_OPEN: this stream started after the VM failed
        self._v01 = plugin.compiled.abi is AbiVersion.V0_1_0
        self._replied_before = False
        self.request_headers: Pairs | None = None
        self.response_headers: Pairs | None = None

    # -- plumbing -----------------------------------------------------------------------------
    def _context(self) -> HttpContext | None:
        """The stream's context, created lazily on its first event."""
        ctx = self.ctx
        if ctx is not None:
            return ctx if not self._passthrough else None
        if self._passthrough:
            return None
        plugin = self.plugin
        if not plugin.healthy():
            self._apply_failure(None)
            return None
        vm, root = plugin.vm, plugin.root
        assert vm is not None and root is not None
        ctx = HttpContext(id=vm.next_context_id(), root=root, info=self.info)
        vm.contexts[ctx.id] = ctx
        vm.active_streams += 1
        self.ctx, self._vm = ctx, vm
        try:
            vm.call(ctx, "proxy_on_context_create", ctx.id, root.id)
            ctx.created = True
        except VmFailed:
            self._apply_failure(ctx)
            return None
        return ctx

    def _apply_failure(self, ctx: HttpContext | None) -> None:
        """The VM is (or just became) unusable: follow the plugin's failure policy.

        As Envoy 1.40: a stream that already had a context on the failed VM (the one that
        trapped, and any in flight) is answered 503 whatever the policy; a stream that
        starts after the failure passes through under FAIL_OPEN and is answered 503
        otherwise (FAIL_RELOAD while its rebuild backs off).
        """
        self._passthrough = True
        spec = self.plugin.spec
        if spec.fail_open or (ctx is None and spec.failure_policy is FailurePolicy.FAIL_OPEN):
            self._skip_plugin = True
            return
        target = ctx or HttpContext(id=0, root=self.plugin.root or _detached_root(self.plugin), info=self.info)
        if ctx is None:
            self.ctx = target
        target.local_reply_sent = True
        self.plugin.runtime.commands.push(
            SendLocalReply(target, 503, b"", [], "wasm_fail_stream", 14)
        )

    def _failed_status(self, stop: int) -> int:
        return 0 if self._skip_plugin else stop

    def _invoke(self, ctx: HttpContext, export: str, *args: int) -> int | None:
        vm = self._vm
        assert vm is not None
        self._replied_before = ctx.local_reply_sent
        try:
            return vm.call(ctx, export, ctx.id, *args)
        except VmFailed:
            self._apply_failure(ctx)
            raise

    # -- request path ---------------------------------------------------------------------------
    def on_request_headers(self, headers: Pairs, end_stream: bool) -> int:
        """Headers arrived (mutated in place by the plugin); returns an Envoy FilterHeadersStatus."""
        self.request_headers = headers
        ctx = self._context()
        if ctx is None:
            return self._failed_status(HEADERS_STOP_ALL_WATERMARK)
        ctx.request_headers = headers
        ctx.request_headers_writable = True
        try:
            if self._v01:
                result = self._invoke(ctx, "proxy_on_request_headers", len(headers))
            else:
                result = self._invoke(ctx, "proxy_on_request_headers", len(headers), int(end_stream))
        except VmFailed:
            return self._failed_status(HEADERS_STOP_ALL_WATERMARK)
        finally:
            ctx.request_headers_writable = False
        return self._headers_status(ctx, result)

    def on_request_body(self, data: bytes, end_stream: bool) -> BodyVerdict:
        ctx = self._context()
        if ctx is None:
            return BodyVerdict(self._failed_status(DATA_STOP_NO_BUFFER), data if self._open() else None)
        return self._body(ctx, data, end_stream, request=True)

    def on_request_trailers(self, trailers: Pairs) -> int:
        ctx = self._context()
        if ctx is None:
            return self._failed_status(TRAILERS_STOP)
        ctx.request_trailers = trailers
        ctx.request_trailers_writable = True
        try:
            result = self._invoke(ctx, "proxy_on_request_trailers", len(trailers))
        except VmFailed:
            return self._failed_status(TRAILERS_STOP)
        finally:
            ctx.request_trailers_writable = False
        return self._trailers_status(ctx, result)

    # -- response path --------------------------------------------------------------------------
    def on_response_headers(self, headers: Pairs, end_stream: bool) -> int:
        self.response_headers = headers
        ctx = self._context()
        if ctx is None:
            return self._failed_status(HEADERS_STOP_ALL_WATERMARK)
        ctx.response_headers = headers
        ctx.response_headers_writable = True
        try:
            if self._v01:
                result = self._invoke(ctx, "proxy_on_response_headers", len(headers))
            else:
                result = self._invoke(ctx, "proxy_on_response_headers", len(headers), int(end_stream))
        except VmFailed:
            return self._failed_status(HEADERS_STOP_ALL_WATERMARK)
        finally:
            ctx.response_headers_writable = False
            ctx.response_headers_sent = True
        return self._headers_status(ctx, result)

    def on_response_body(self, data: bytes, end_stream: bool) -> BodyVerdict:
        ctx = self._context()
        if ctx is None:
            return BodyVerdict(self._failed_status(DATA_STOP_NO_BUFFER), data if self._open() else None)
        return self._body(ctx, data, end_stream, request=False)

    def on_response_trailers(self, trailers: Pairs) -> int:
        ctx = self._context()
        if ctx is None:
            return self._failed_status(TRAILERS_STOP)
        ctx.response_trailers = trailers
        ctx.response_trailers_writable = True
        try:
            result = self._invoke(ctx, "proxy_on_response_trailers", len(trailers))
        except VmFailed:
            return self._failed_status(TRAILERS_STOP)
        finally:
            ctx.response_trailers_writable = False
        return self._trailers_status(ctx, result)

    # -- HTTP/2 METADATA ---------------------------------------------------------------------------
    def on_request_metadata(self, count: int) -> None:
        """A METADATA frame with ``count`` entries on the request; the result is always Continue."""
        self._metadata("proxy_on_request_metadata", count)

    def on_response_metadata(self, count: int) -> None:
        """A METADATA frame with ``count`` entries on the response; the result is always Continue."""
        self._metadata("proxy_on_response_metadata", count)

    def _metadata(self, export: str, count: int) -> None:
        ctx = self._context()
        if ctx is None:
            return
        try:
            self._invoke(ctx, export, count)
        except VmFailed:
            pass

    # -- end of stream ---------------------------------------------------------------------------
    def finish(self) -> None:
        """Access-log hook then destruction: ``on_log``, ``on_done``, ``on_delete``."""
        ctx, vm = self.ctx, self._vm
        if ctx is None or vm is None or ctx.done or not ctx.created:
            return
        ctx.done = True
        try:
            if vm.failed is None:
                ctx.in_log = True
                try:
                    vm.call(ctx, "proxy_on_log", ctx.id)
                finally:
                    ctx.in_log = False
                vm.call(ctx, "proxy_on_done", ctx.id)
                vm.call(ctx, "proxy_on_delete", ctx.id)
        except VmFailed:
            pass
        finally:
            vm.contexts.pop(ctx.id, None)
            vm.active_streams -= 1

    # -- helpers -----------------------------------------------------------------------------
    def _open(self) -> bool:
        return self._skip_plugin

    def _replied_now(self, ctx: HttpContext) -> bool:
        """Whether the callback that just returned sent a local reply (cpp-host then stops)."""
        return ctx.local_reply_sent and not self._replied_before

    def _headers_status(self, ctx: HttpContext, result: int | None) -> int:
        if self._replied_now(ctx):
            return HEADERS_STOP_ALL_WATERMARK
        if not result:
            return HEADERS_CONTINUE
        if result == 1:
            if self.plugin.spec.allow_on_headers_stop_iteration:
                return HEADERS_STOP_ITERATION
            return HEADERS_STOP_ALL_WATERMARK
        return result if result <= 4 else HEADERS_STOP_ALL_WATERMARK

    def _trailers_status(self, ctx: HttpContext, result: int | None) -> int:
        if self._replied_now(ctx) or (result or 0) >= 1:
            return TRAILERS_STOP
        return TRAILERS_CONTINUE

    def _body(self, ctx: HttpContext, data: bytes, end_stream: bool, *, request: bool) -> BodyVerdict:
        limit = self.plugin.runtime.limits.max_body_bytes
        buffer = ctx.request_body if request else ctx.response_body
        if buffer is None:
            buffer = bytearray(data)
        else:
            buffer += data
        if len(buffer) > limit:
            ctx.local_reply_sent = True
            status = 413 if request else 500
            details = "request_payload_too_large" if request else "response_payload_too_large"
            self.plugin.runtime.commands.push(SendLocalReply(ctx, status, b"", [], details, None))
            return BodyVerdict(DATA_STOP_NO_BUFFER)
        if request:
            ctx.request_body = buffer
            ctx.request_body_open = True
            ctx.request_trailers_writable = end_stream and ctx.request_trailers is None
        else:
            ctx.response_body = buffer
            ctx.response_body_open = True
            ctx.response_trailers_writable = end_stream and ctx.response_trailers is None
        export = "proxy_on_request_body" if request else "proxy_on_response_body"
        try:
            result = self._invoke(ctx, export, len(buffer), int(end_stream))
        except VmFailed:
            return BodyVerdict(self._failed_status(DATA_STOP_NO_BUFFER), bytes(buffer) if self._open() else None)
        finally:
            if request:
                ctx.request_body_open = False
                ctx.request_trailers_writable = False
            else:
                ctx.response_body_open = False
                ctx.response_trailers_writable = False
        current = ctx.request_body if request else ctx.response_body
        if self._replied_now(ctx):
            return BodyVerdict(DATA_STOP_NO_BUFFER)
        if not result:
            out = bytes(current) if current is not None else b""
            if request:
                ctx.request_body = None
                ctx.request_body_size += len(out)
            else:
                ctx.response_body = None
                ctx.response_body_size += len(out)
            return BodyVerdict(DATA_CONTINUE, out)
        status = result if 1 <= result <= 3 else DATA_STOP_NO_BUFFER
        return BodyVerdict(status, None)

    def resume_body(self, *, request: bool) -> bytes:
        """After a ResumeStream, hand over what the plugin held back (and forget it)."""
        ctx = self.ctx
        if ctx is None:
            return b""
        held = ctx.request_body if request else ctx.response_body
        if request:
            ctx.request_body = None
        else:
            ctx.response_body = None
        return bytes(held or b"")


def local_reply_headers(reply: SendLocalReply) -> Pairs:
    """The response headers Envoy's ``sendLocalReply`` hands to encoder filters: ``:status``,
    the plugin's headers and, when there is a body, ``content-length`` and ``content-type:
    text/plain`` unless the plugin set one (Envoy 1.40, measured). An empty reply gets its
    ``content-length: 0`` from the codec, after the filters."""
    headers: Pairs = [(b":status", str(reply.status).encode()), *reply.headers]
    if reply.body:
        headers.append((b"content-length", str(len(reply.body)).encode()))
        if not any(name == b"content-type" for name, _ in reply.headers):
            headers.append((b"content-type", b"text/plain"))
    return headers


class TcpStream:
    """One TCP connection through a network-filter plugin."""

    def __init__(self, plugin: Plugin, info: StreamInfo) -> None:
        self.plugin = plugin
        self.info = info
        self.ctx: TcpContext | None = None
        self._passthrough = False

    def _context(self) -> TcpContext | None:
        if self.ctx is not None or self._passthrough:
            return self.ctx if not self._passthrough else None
        plugin = self.plugin
        if not plugin.healthy():
            self._passthrough = True
            return None
        vm, root = plugin.vm, plugin.root
        assert vm is not None and root is not None
        ctx = TcpContext(id=vm.next_context_id(), root=root, info=self.info)
        vm.contexts[ctx.id] = ctx
        self.ctx = ctx
        try:
            vm.call(ctx, "proxy_on_context_create", ctx.id, root.id)
            ctx.created = True
        except VmFailed:
            self._passthrough = True
            return None
        return ctx

    def _fail_status(self) -> int:
        return 0 if self.plugin.spec.failure_policy is FailurePolicy.FAIL_OPEN else 1

    def on_new_connection(self) -> int:
        ctx = self._context()
        if ctx is None:
            return self._fail_status()
        try:
            return 1 if (self.plugin.vm and self.plugin.vm.call(ctx, "proxy_on_new_connection", ctx.id)) else 0
        except VmFailed:
            self._passthrough = True
            return self._fail_status()

    def on_data(self, data: bytes, end_stream: bool, *, downstream: bool) -> BodyVerdict:
        """Bytes from the client (``downstream``) or the server; returns what to pass on."""
        ctx = self._context()
        if ctx is None:
            return BodyVerdict(self._fail_status(), data if self._fail_status() == 0 else None)
        buf = ctx.downstream_data if downstream else ctx.upstream_data
        buf = bytearray(data) if buf is None else buf + data
        if downstream:
            ctx.downstream_data, ctx.downstream_open = buf, True
        else:
            ctx.upstream_data, ctx.upstream_open = buf, True
        export = "proxy_on_downstream_data" if downstream else "proxy_on_upstream_data"
        vm = self.plugin.vm
        assert vm is not None
        try:
            result = vm.call(ctx, export, ctx.id, len(buf), int(end_stream))
        except VmFailed:
            self._passthrough = True
            return BodyVerdict(self._fail_status(), bytes(buf) if self._fail_status() == 0 else None)
        finally:
            ctx.downstream_open = ctx.upstream_open = False
        current = ctx.downstream_data if downstream else ctx.upstream_data
        if result:
            return BodyVerdict(1, None)
        if downstream:
            ctx.downstream_data = None
        else:
            ctx.upstream_data = None
        return BodyVerdict(0, bytes(current or b""))

    def on_close(self, *, downstream: bool, peer: int = 2) -> None:
        ctx = self.ctx
        vm = self.plugin.vm
        if ctx is None or vm is None or ctx.done:
            return
        export = "proxy_on_downstream_connection_close" if downstream else "proxy_on_upstream_connection_close"
        try:
            vm.call(ctx, export, ctx.id, peer)
            if downstream:
                ctx.downstream_closed = True
            else:
                ctx.upstream_closed = True
            if ctx.downstream_closed and ctx.upstream_closed:
                ctx.done = True
                vm.call(ctx, "proxy_on_done", ctx.id)
                vm.call(ctx, "proxy_on_log", ctx.id)
                vm.call(ctx, "proxy_on_delete", ctx.id)
                vm.contexts.pop(ctx.id, None)
        except VmFailed:
            self._passthrough = True


def _detached_root(plugin: Plugin) -> RootContext:
    """A placeholder root for failure replies when the plugin never started."""
    from ._vm import WasmVM as _VM  # noqa: F401 - typing only

    return RootContext(id=0, vm=plugin.vm, spec=plugin.spec)  # type: ignore[arg-type]


