"""access_list: allow or deny requests by path and method, answering denials locally.

Configuration (JSON)::

    {
      "allow_methods": ["GET", "HEAD", "POST"],
      "deny_paths": [{"prefix": "/admin"}, {"suffix": ".php"}],
      "allow_paths": [{"prefix": "/api/"}, {"exact": "/healthz"}],
      "deny_status": 403,
      "deny_body": "access denied"
    }

Deny lists are checked first, then allow lists; an absent or empty allow list allows
everything. Paths are matched without the query string. A method outside
``allow_methods`` is answered 405 with an ``allow`` header; any other denial gets
``deny_status`` and ``deny_body``.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.errors import NotFoundError
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "access_list"
FIELDS = ["allow_methods", "deny_methods", "allow_paths", "deny_paths", "deny_status", "deny_body"]


class PathRule:
    """One path matcher: ``kind`` is exact, prefix or suffix."""

    def __init__(self, kind: str, value: str) -> None:
        self.kind = kind
        self.value = value

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.value
        if self.kind == "prefix":
            return path.startswith(self.value)
        return path.endswith(self.value)

    def describe(self) -> str:
        return f"{self.kind} {self.value}"


def read_paths(field: str, value: JsonValue) -> list[PathRule]:
    rules: list[PathRule] = []
    if value.is_null():
        return rules
    if value.kind != "array":
        raise ConfigError(f"{field}: expected a list of {{\"prefix\"|\"exact\"|\"suffix\": path}} objects")
    for index, item in enumerate(value.as_list()):
        where = f"{field}[{index}]"
        if item.kind != "object" or item.size() != 1:
            raise ConfigError(f"{where}: expected one of prefix, exact or suffix")
        kind = item.keys()[0]
        if kind not in ["prefix", "exact", "suffix"]:
            raise ConfigError(f"{where}.{kind}: unknown matcher (use prefix, exact or suffix)")
        text = item.get(kind)
        if text.kind != "string" or text.as_str() == "":
            raise ConfigError(f"{where}.{kind}: expected a non-empty string")
        rules.append(PathRule(kind, text.as_str()))
    return rules


def read_methods(field: str, value: JsonValue) -> list[str]:
    methods: list[str] = []
    if value.is_null():
        return methods
    if value.kind != "array":
        raise ConfigError(f"{field}: expected a list of method names")
    for item in value.as_list():
        method = item.as_str()
        if item.kind != "string" or method == "" or not method.isalpha():
            raise ConfigError(f"{field}: {method!r} is not an HTTP method")
        methods.append(method.upper())
    return methods


def request_header(name: str) -> str:
    try:
        return proxywasm.get_http_request_header(name)
    except NotFoundError:
        return ""


def first_match(rules: list[PathRule], path: str) -> PathRule | None:
    for rule in rules:
        if rule.matches(path):
            return rule
    return None


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def deny(self, status: int, headers: list[tuple[str, str]], why: str) -> Action:
        proxywasm.log_info(f"{NAME}: denied ({why})")
        proxywasm.send_http_response(status, headers, self.plugin.deny_body.encode())
        return Action.PAUSE

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        plugin = self.plugin
        method = request_header(":method")
        path = request_header(":path").partition("?")[0]
        if method in plugin.deny_methods:
            return self.deny(plugin.deny_status, [], f"method {method}")
        denied = first_match(plugin.deny_paths, path)
        if denied is not None:
            return self.deny(plugin.deny_status, [], f"path {path} matches {denied.describe()}")
        if len(plugin.allow_methods) > 0 and method not in plugin.allow_methods:
            return self.deny(405, [("allow", ", ".join(plugin.allow_methods))], f"method {method} not allowed")
        if len(plugin.allow_paths) > 0 and first_match(plugin.allow_paths, path) is None:
            return self.deny(plugin.deny_status, [], f"path {path} not allowed")
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.allow_methods: list[str] = []
        self.deny_methods: list[str] = []
        self.allow_paths: list[PathRule] = []
        self.deny_paths: list[PathRule] = []
        self.deny_status = 403
        self.deny_body = "access denied\n"

    def configure(self, config: JsonValue) -> None:
        self.allow_methods = read_methods("allow_methods", config.get("allow_methods"))
        self.deny_methods = read_methods("deny_methods", config.get("deny_methods"))
        self.allow_paths = read_paths("allow_paths", config.get("allow_paths"))
        self.deny_paths = read_paths("deny_paths", config.get("deny_paths"))
        status = config.get("deny_status")
        if not status.is_null():
            self.deny_status = status.as_int(0)
            if not 200 <= self.deny_status <= 599:
                raise ConfigError("deny_status: expected an HTTP status from 200 to 599")
        body = config.get("deny_body")
        if not body.is_null():
            if body.kind != "string":
                raise ConfigError("deny_body: expected a string")
            self.deny_body = body.as_str()

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        return start_with_config(NAME, FIELDS, self.configure)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
