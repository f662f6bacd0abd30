"""Reads its configuration through sdk.config; the VM configuration ``strict`` refuses an empty one.

``greeting`` (a string, default "hello") is added as ``x-greeting`` to every request;
``repeat`` (an integer from 1 to 3) repeats it.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "config_fields"
FIELDS = ["greeting", "repeat"]


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        proxywasm.add_http_request_header("x-greeting", self.plugin.greeting * self.plugin.repeat)
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.greeting = "hello"
        self.repeat = 1

    def configure(self, config: JsonValue) -> None:
        greeting = config.get("greeting")
        if not greeting.is_null():
            if greeting.kind != "string":
                raise ConfigError("greeting: expected a string")
            self.greeting = greeting.as_str()
        repeat = config.get("repeat")
        if not repeat.is_null():
            self.repeat = repeat.as_int(0)
            if not 1 <= self.repeat <= 3:
                raise ConfigError("repeat: expected an integer from 1 to 3")

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        strict = proxywasm.get_vm_configuration() == b"strict"
        return start_with_config(NAME, FIELDS, self.configure, empty_is_defaults=not strict)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
