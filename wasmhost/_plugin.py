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
from typing import TYPE_CHECKING

from ._abi import AbiVersion, FailurePolicy, Pairs
from ._commands import DeleteRootContext
from ._context import CalloutResponse, RootContext, StreamInfo
from ._hostcalls_grpc import end_stream
from ._http_stream import HttpStream
from ._vm import CompiledModule, ModuleError, Runtime, VmFailed, WasmVM

if TYPE_CHECKING:
    from ._tcp_stream import TcpStream


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
        return HttpStream(self, info if info is not None else StreamInfo())

    def new_tcp_stream(self, info: StreamInfo | None = None) -> TcpStream:
        from ._tcp_stream import TcpStream

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

    def _grpc_stream_open(self, token: int) -> RootContext | None:
        """The root when ``token`` is an open stream: Envoy's async client reports metadata for
        streams only (a unary call gets its message or its failure, nothing else)."""
        root = self.root
        if root is None or not root.grpc_calls.get(token, False):
            return None
        return root

    def on_grpc_receive_initial_metadata(self, token: int, metadata: Pairs) -> None:
        root = self._grpc_stream_open(token)
        if root is None:
            return
        root.grpc_metadata = list(metadata)
        try:
            self._root_call("proxy_on_grpc_receive_initial_metadata", token, len(metadata))
        finally:
            root.grpc_metadata = None

    def on_grpc_receive(self, token: int, message: bytes) -> None:
        """A stream's next message, or a unary call's answer, which ends the call.

        As Envoy: the unary token stays valid during the callback (a cancel there answers OK)
        and is gone once it returns (a later cancel/close answers NOT_FOUND); no close follows.
        """
        root = self.root
        if root is None or token not in root.grpc_calls:
            return
        root.grpc_message = message
        try:
            self._root_call("proxy_on_grpc_receive", token, len(message))
        finally:
            root.grpc_message = None
            if not root.grpc_calls.get(token, True):  # still open and unary: its answer ends it
                del root.grpc_calls[token]

    def on_grpc_receive_trailing_metadata(self, token: int, metadata: Pairs) -> None:
        root = self._grpc_stream_open(token)
        if root is None:
            return
        root.grpc_metadata = list(metadata)
        try:
            self._root_call("proxy_on_grpc_receive_trailing_metadata", token, len(metadata))
        finally:
            root.grpc_metadata = None

    def on_grpc_close(self, token: int, grpc_status: int, message: bytes = b"") -> None:
        """The call or stream ended; as Envoy, its token is released once the callback returns
        (a stream the plugin never half-closed still answers one cancel/close with OK)."""
        root = self.root
        if root is None or token not in root.grpc_calls:
            return
        root.status = (grpc_status, message)
        try:
            self._root_call("proxy_on_grpc_close", token, grpc_status)
        finally:
            if root.grpc_calls.get(token, False):
                end_stream(root, token, keep=self.runtime.limits.max_pending_callouts)
            else:
                root.grpc_calls.pop(token, None)

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
