"""Adds a header named in the JSON configuration; denies /deny with a local reply."""

from sdk import proxywasm
from sdk.jsonvalue import parse_json
from sdk.types import Action, HttpContext, PluginContext, VMContext


class Http(HttpContext):
    def __init__(self, plugin: "Plugin") -> None:
        self.plugin = plugin

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        path = proxywasm.get_http_request_header(":path")
        if path.startswith("/deny"):
            proxywasm.send_http_response(403, [("x-why", "denied")], b"no\n")
            return Action.PAUSE
        proxywasm.add_http_request_header(self.plugin.header, f"{len(proxywasm.get_http_request_headers())}")
        proxywasm.log_info(f"request {path}")
        return Action.CONTINUE

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        proxywasm.add_http_response_header("x-compiled", "python")
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.header = "x-default"

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        config = parse_json(proxywasm.get_plugin_configuration())
        self.header = config.get("header").as_str("x-default")
        proxywasm.log_info(f"configured header {self.header}")
        return True

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
