"""One HTTP stream through one plugin (Envoy's HTTP filter sequence, reference §2.4).

The embedder feeds events in Envoy's order; each returns an Envoy filter status (see
:mod:`wasmhost._filter_status`); side effects are commands on the runtime's queue. Rules
of the lifecycle are in :mod:`wasmhost._plugin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._abi import AbiVersion, FailurePolicy, Pairs
from ._commands import SendLocalReply
from ._context import HttpContext, RootContext, StreamInfo
from ._filter_status import (
    DATA_CONTINUE,
    DATA_STOP_NO_BUFFER,
    HEADERS_CONTINUE,
    HEADERS_STOP_ALL_WATERMARK,
    HEADERS_STOP_ITERATION,
    TRAILERS_CONTINUE,
    TRAILERS_STOP,
    BodyVerdict,
)
from ._vm import VmFailed, WasmVM

if TYPE_CHECKING:
    from ._plugin import Plugin


class HttpStream:
    """One HTTP stream through one plugin; the embedder feeds events in Envoy's order.

    Defaults live on the class (no ``__slots__``): opening a stream stores only the
    plugin and the stream facts, which is most of what a request through a plugin costs
    outside the guest.

    A header or trailer map is open to the plugin from its callback until it is forwarded
    (the callback continued, or the paused stream was resumed), as Envoy drops its map
    pointer then: the embedder may send a forwarded block whenever it likes, later writes
    are refused and never reach the wire.
    """

    ctx: HttpContext | None = None
    _vm: WasmVM | None = None
    _passthrough = False
    _skip_plugin = False  # FAIL_OPEN: this stream started after the VM failed
    _replied_before = False
    request_headers: Pairs | None = None
    response_headers: Pairs | None = None

    def __init__(self, plugin: Plugin, info: StreamInfo) -> None:
        self.plugin = plugin
        self.info = info

    # -- plumbing -----------------------------------------------------------------------------
    def _context(self) -> HttpContext | None:
        """The stream's context, created lazily on its first event."""
        ctx = self.ctx
        if ctx is not None:
            return ctx if not self._passthrough else None
        if self._passthrough:
            return None
        plugin = self.plugin
        vm, root = plugin.vm, plugin.root
        if vm is None or vm.failed is not None:
            if not plugin.healthy():
                self._apply_failure(None)
                return None
            vm, root = plugin.vm, plugin.root
        assert vm is not None and root is not None
        ctx = HttpContext(vm.next_context_id(), root, self.info)
        vm.contexts[ctx.id] = ctx
        vm.active_streams += 1
        self.ctx, self._vm = ctx, vm
        if "proxy_on_context_create" in plugin.compiled.exports:
            try:
                vm.call(ctx, "proxy_on_context_create", ctx.id, root.id)
            except VmFailed:
                self._apply_failure(ctx)
                return None
        ctx.created = True
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
            if self.plugin.compiled.abi is AbiVersion.V0_1_0:
                result = self._invoke(ctx, "proxy_on_request_headers", len(headers))
            else:
                result = self._invoke(ctx, "proxy_on_request_headers", len(headers), int(end_stream))
        except VmFailed:
            ctx.request_headers_writable = False
            return self._failed_status(HEADERS_STOP_ALL_WATERMARK)
        status = self._headers_status(ctx, result)
        ctx.request_headers_writable = status != HEADERS_CONTINUE  # forwarded: the map is closed
        return status

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
            ctx.request_trailers_writable = False
            return self._failed_status(TRAILERS_STOP)
        status = self._trailers_status(ctx, result)
        ctx.request_trailers_writable = status != TRAILERS_CONTINUE
        return status

    # -- response path --------------------------------------------------------------------------
    def on_response_headers(self, headers: Pairs, end_stream: bool) -> int:
        self.response_headers = headers
        ctx = self._context()
        if ctx is None:
            return HEADERS_CONTINUE  # the plugin is out of this stream: its failure reply (or the response) goes on
        ctx.response_headers = headers
        ctx.response_headers_writable = True
        try:
            if self.plugin.compiled.abi is AbiVersion.V0_1_0:
                result = self._invoke(ctx, "proxy_on_response_headers", len(headers))
            else:
                result = self._invoke(ctx, "proxy_on_response_headers", len(headers), int(end_stream))
        except VmFailed:
            ctx.response_headers_writable = False
            return self._failed_status(HEADERS_STOP_ALL_WATERMARK)
        finally:
            ctx.response_headers_sent = True
        status = self._headers_status(ctx, result)
        ctx.response_headers_writable = status != HEADERS_CONTINUE
        return status

    def on_response_body(self, data: bytes, end_stream: bool) -> BodyVerdict:
        ctx = self._context()
        if ctx is None:
            return BodyVerdict(DATA_CONTINUE, data)
        return self._body(ctx, data, end_stream, request=False)

    def on_response_trailers(self, trailers: Pairs) -> int:
        ctx = self._context()
        if ctx is None:
            return TRAILERS_CONTINUE
        ctx.response_trailers = trailers
        ctx.response_trailers_writable = True
        try:
            result = self._invoke(ctx, "proxy_on_response_trailers", len(trailers))
        except VmFailed:
            ctx.response_trailers_writable = False
            return self._failed_status(TRAILERS_STOP)
        status = self._trailers_status(ctx, result)
        ctx.response_trailers_writable = status != TRAILERS_CONTINUE
        return status

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
        """Access-log hook then destruction: ``on_log``, ``on_done``, ``on_delete`` (those the module exports)."""
        ctx, vm = self.ctx, self._vm
        if ctx is None or vm is None or ctx.done or not ctx.created:
            return
        ctx.done = True
        try:
            if vm.failed is None:
                exports = self.plugin.compiled.exports
                if "proxy_on_log" in exports:
                    ctx.in_log = True
                    try:
                        vm.call(ctx, "proxy_on_log", ctx.id)
                    finally:
                        ctx.in_log = False
                if "proxy_on_done" in exports:
                    vm.call(ctx, "proxy_on_done", ctx.id)
                if "proxy_on_delete" in exports:
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
        return result if 0 < result <= 4 else HEADERS_STOP_ALL_WATERMARK  # an i32 < 0 is a huge u32

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
            if request:  # headers a StopIteration held go out with this body: their map closes
                ctx.request_body = None
                ctx.request_body_size += len(out)
                ctx.request_headers_writable = False
            else:
                ctx.response_body = None
                ctx.response_body_size += len(out)
                ctx.response_headers_writable = False
            return BodyVerdict(DATA_CONTINUE, out)
        status = result if 1 <= result <= 3 else DATA_STOP_NO_BUFFER
        return BodyVerdict(status, None)

    def resume_body(self, *, request: bool) -> bytes:
        """After a ResumeStream, hand over what the plugin held back (and forget it); the
        direction's header and trailer maps are forwarded now, so they close."""
        ctx = self.ctx
        if ctx is None:
            return b""
        held = ctx.request_body if request else ctx.response_body
        if request:
            ctx.request_body = None
            ctx.request_headers_writable = ctx.request_trailers_writable = False
        else:
            ctx.response_body = None
            ctx.response_headers_writable = ctx.response_trailers_writable = False
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


def _detached_root(plugin: Plugin) -> RootContext:
    """A placeholder root for failure replies when the plugin never started."""
    return RootContext(id=0, vm=plugin.vm, spec=plugin.spec)  # type: ignore[arg-type]
