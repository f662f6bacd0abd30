"""body_rewrite: buffer request and response bodies and replace text in them, per configuration.

Configuration (JSON)::

    {
      "request":  [{"from": "http://internal", "to": "https://public"}],
      "response": [{"from": "secret", "to": "******"}],
      "content_types": ["text/", "application/json"],
      "max_body_bytes": 1048576
    }

Rules apply in order, each replacing every occurrence. A body is rewritten only when its
``content-type`` starts with one of ``content_types`` (all types when the list is absent)
and it is not compressed. When a rule can change the length, ``content-length`` is removed
as the headers pass (they leave before the body does), and the proxy frames the new body
itself (chunked on HTTP/1.1).
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.errors import NotFoundError
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "body_rewrite"
FIELDS = ["request", "response", "content_types", "max_body_bytes"]


class Rule:
    def __init__(self, old: bytes, new: bytes) -> None:
        self.old = old
        self.new = new


def read_rules(config: JsonValue, field: str) -> list[Rule]:
    rules: list[Rule] = []
    value = config.get(field)
    if value.is_null():
        return rules
    if value.kind != "array":
        raise ConfigError(f"{field}: expected a list of {{\"from\", \"to\"}} objects")
    for index, item in enumerate(value.as_list()):
        where = f"{field}[{index}]"
        if item.kind != "object" or item.get("from").kind != "string" or item.get("to").kind != "string":
            raise ConfigError(f"{where}: expected strings from and to")
        for key in item.keys():
            if key not in ["from", "to"]:
                raise ConfigError(f"{where}.{key}: unknown field (use from and to)")
        if item.get("from").as_str() == "":
            raise ConfigError(f"{where}.from: may not be empty")
        rules.append(Rule(item.get("from").as_str().encode(), item.get("to").as_str().encode()))
    return rules


def keeps_length(rules: list[Rule]) -> bool:
    for rule in rules:
        if len(rule.old) != len(rule.new):
            return False
    return True


def rewrite(rules: list[Rule], body: bytes) -> bytes:
    for rule in rules:
        body = body.replace(rule.old, rule.new)
    return body


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.request = False
        self.response = False

    def wanted(self, rules: list[Rule], response: bool, end_of_stream: bool) -> bool:
        """Whether this body will be rewritten; drops content-length when its length may change."""
        if len(rules) == 0 or end_of_stream:
            return False
        content_type = header(response, "content-type").lower()
        encoding = header(response, "content-encoding").lower()
        if encoding != "" and encoding != "identity":
            proxywasm.log_debug(f"{NAME}: {'response' if response else 'request'} is {encoding}-encoded; left alone")
            return False
        if not self.plugin.rewrites_type(content_type):
            return False
        if not keeps_length(rules):
            if response:
                proxywasm.remove_http_response_header("content-length")
            else:
                proxywasm.remove_http_request_header("content-length")
        return True

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        self.request = self.wanted(self.plugin.request_rules, False, end_of_stream)
        return Action.CONTINUE

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        self.response = self.wanted(self.plugin.response_rules, True, end_of_stream)
        return Action.CONTINUE

    def on_http_request_body(self, body_size: int, end_of_stream: bool) -> Action:
        if not self.request:
            return Action.CONTINUE
        if body_size > self.plugin.max_body_bytes:
            proxywasm.log_warn(f"{NAME}: request body over {self.plugin.max_body_bytes} bytes; sent as it is")
            self.request = False
            return Action.CONTINUE
        if not end_of_stream:
            return Action.PAUSE
        body = proxywasm.get_http_request_body(0, body_size)
        changed = rewrite(self.plugin.request_rules, body)
        if changed != body:
            proxywasm.replace_http_request_body(changed)
            proxywasm.log_debug(f"{NAME}: request body {len(body)} -> {len(changed)} bytes")
        return Action.CONTINUE

    def on_http_response_body(self, body_size: int, end_of_stream: bool) -> Action:
        if not self.response:
            return Action.CONTINUE
        if body_size > self.plugin.max_body_bytes:
            proxywasm.log_warn(f"{NAME}: response body over {self.plugin.max_body_bytes} bytes; sent as it is")
            self.response = False
            return Action.CONTINUE
        if not end_of_stream:
            return Action.PAUSE
        body = proxywasm.get_http_response_body(0, body_size)
        changed = rewrite(self.plugin.response_rules, body)
        if changed != body:
            proxywasm.replace_http_response_body(changed)
            proxywasm.log_debug(f"{NAME}: response body {len(body)} -> {len(changed)} bytes")
        return Action.CONTINUE


def header(response: bool, name: str) -> str:
    try:
        if response:
            return proxywasm.get_http_response_header(name)
        return proxywasm.get_http_request_header(name)
    except NotFoundError:
        return ""


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.request_rules: list[Rule] = []
        self.response_rules: list[Rule] = []
        self.content_types: list[str] = []
        self.any_type = True
        self.max_body_bytes = 1048576

    def rewrites_type(self, content_type: str) -> bool:
        if self.any_type:
            return True
        for prefix in self.content_types:
            if content_type.startswith(prefix):
                return True
        return False

    def configure(self, config: JsonValue) -> None:
        self.request_rules = read_rules(config, "request")
        self.response_rules = read_rules(config, "response")
        types = config.get("content_types")
        if not types.is_null():
            if types.kind != "array" or len(types.as_str_list()) != types.size():
                raise ConfigError("content_types: expected a list of content-type prefixes")
            self.content_types = [t.lower() for t in types.as_str_list()]
            self.any_type = False
        limit = config.get("max_body_bytes")
        if not limit.is_null():
            self.max_body_bytes = limit.as_int(0)
            if self.max_body_bytes <= 0:
                raise ConfigError("max_body_bytes: expected a positive integer")

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        return start_with_config(NAME, FIELDS, self.configure)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
