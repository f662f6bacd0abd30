"""One TCP connection through a network-filter plugin (reference §2.5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._abi import FailurePolicy
from ._context import StreamInfo, TcpContext
from ._filter_status import BodyVerdict
from ._vm import VmFailed

if TYPE_CHECKING:
    from ._plugin import Plugin


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
