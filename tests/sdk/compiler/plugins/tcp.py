"""A TCP filter: counts bytes, rewrites downstream data, pauses on a marker."""

from sdk import proxywasm
from sdk.types import Action, PluginContext, TcpContext, VMContext


class Connection(TcpContext):
    def __init__(self, plugin: "Plugin", context_id: int) -> None:
        self.plugin = plugin
        self.context_id = context_id
        self.received = 0

    def on_new_connection(self) -> Action:
        self.plugin.connections += 1
        proxywasm.log_info(f"connection {self.context_id} (#{self.plugin.connections})")
        return Action.CONTINUE

    def on_downstream_data(self, data_size: int, end_of_stream: bool) -> Action:
        data = proxywasm.get_downstream_data(0, data_size)
        self.received += data_size
        if b"WAIT" in data:
            return Action.PAUSE
        proxywasm.replace_downstream_data(data.replace(b"ping", b"pong"))
        return Action.CONTINUE

    def on_upstream_data(self, data_size: int, end_of_stream: bool) -> Action:
        proxywasm.prepend_upstream_data(b"[up]")
        if end_of_stream:
            proxywasm.close_downstream()
        return Action.CONTINUE

    def on_downstream_close(self, peer_type: int) -> None:
        proxywasm.log_info(f"downstream closed by {peer_type}")

    def on_upstream_close(self, peer_type: int) -> None:
        proxywasm.log_info(f"upstream closed by {peer_type}")

    def on_stream_done(self) -> None:
        proxywasm.log_info(f"done after {self.received} bytes")


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.connections = 0

    def new_tcp_context(self, context_id: int) -> TcpContext:
        return Connection(self, context_id)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
