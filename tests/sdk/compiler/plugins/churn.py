"""Allocates on every request (strings, lists, dicts, per-stream state) to test memory reuse."""

from sdk import proxywasm
from sdk.types import Action, HttpContext, PluginContext, VMContext


class Http(HttpContext):
    def __init__(self, plugin: "Plugin", context_id: int) -> None:
        self.plugin = plugin
        self.context_id = context_id
        self.seen: list[str] = []

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        path = proxywasm.get_http_request_header(":path")
        for name, value in proxywasm.get_http_request_headers():
            self.seen.append(f"{name}={value}")
        parts = path.split("/")
        key = parts[1] if len(parts) > 1 else ""
        self.plugin.counts[key] = self.plugin.counts.get(key, 0) + 1
        proxywasm.add_http_request_header("x-seen", ";".join(self.seen) + str(self.context_id))
        return Action.CONTINUE

    def on_http_stream_done(self) -> None:
        self.plugin.finished += 1


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.finished = 0

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self, context_id)

    def on_tick(self) -> None:
        proxywasm.log_info(f"{self.finished} {sorted(self.counts.keys())}")


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
