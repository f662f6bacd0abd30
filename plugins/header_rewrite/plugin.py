"""header_rewrite: add, set, remove and rename request and response headers from configuration.

Configuration (JSON), one optional section per direction::

    {
      "request":  {"remove": ["x-debug"], "rename": {"x-user": "x-forwarded-user"},
                   "set": {"x-env": "prod"}, "add": {"x-trace": ["a", "b"]}},
      "response": {"remove": ["server"], "set": {"cache-control": "no-store"}}
    }

Edits run in a fixed order — remove, rename, set, add — so a rule never depends on the
order of the JSON. Pseudo-headers (``:path``, ``:status`` ...) cannot be edited: routing
and framing belong to the proxy. A bad configuration is rejected with a log line naming
the field.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "header_rewrite"
FIELDS = ["request", "response"]


class Rules:
    """The edits for one direction."""

    def __init__(self) -> None:
        self.remove: list[str] = []
        self.rename: list[tuple[str, str]] = []
        self.set: list[tuple[str, str]] = []
        self.add: list[tuple[str, str]] = []

    def empty(self) -> bool:
        return len(self.remove) + len(self.rename) + len(self.set) + len(self.add) == 0


def check_name(field: str, name: str) -> str:
    if name == "":
        raise ConfigError(f"{field}: a header name may not be empty")
    if name.startswith(":"):
        raise ConfigError(f"{field}: pseudo-header {name} cannot be edited")
    for c in name:
        if c.isspace() or c in ":()<>@,;\\\"/[]?={}":
            raise ConfigError(f"{field}: {name!r} is not a valid header name")
    return name.lower()


def read_values(field: str, value: JsonValue) -> list[str]:
    """A string, or a list of strings (several values for one name)."""
    if value.kind == "string":
        return [value.as_str()]
    if value.kind == "array":
        values: list[str] = []
        for item in value.as_list():
            if item.kind != "string":
                raise ConfigError(f"{field}: values must be strings")
            values.append(item.as_str())
        return values
    raise ConfigError(f"{field}: expected a string or a list of strings")


def read_rules(direction: str, section: JsonValue) -> Rules:
    rules = Rules()
    if section.is_null():
        return rules
    if section.kind != "object":
        raise ConfigError(f"{direction}: expected an object with remove/rename/set/add")
    for key in section.keys():
        if key not in ["remove", "rename", "set", "add"]:
            raise ConfigError(f"{direction}.{key}: unknown field (use remove, rename, set or add)")
    remove = section.get("remove")
    if not remove.is_null():
        if remove.kind != "array":
            raise ConfigError(f"{direction}.remove: expected a list of header names")
        for item in remove.as_list():
            if item.kind != "string":
                raise ConfigError(f"{direction}.remove: expected a list of header names")
            rules.remove.append(check_name(f"{direction}.remove", item.as_str()))
    for field in ["rename", "set", "add"]:
        mapping = section.get(field)
        if mapping.is_null():
            continue
        if mapping.kind != "object":
            raise ConfigError(f"{direction}.{field}: expected an object of header names")
        for name in mapping.keys():
            where = f"{direction}.{field}.{name}"
            header = check_name(where, name)
            if field == "rename":
                target = mapping.get(name)
                if target.kind != "string":
                    raise ConfigError(f"{where}: expected the new header name")
                rules.rename.append((header, check_name(where, target.as_str())))
            else:
                for value in read_values(where, mapping.get(name)):
                    if field == "set":
                        rules.set.append((header, value))
                    else:
                        rules.add.append((header, value))
    return rules


def get_headers(response: bool) -> list[tuple[str, str]]:
    if response:
        return proxywasm.get_http_response_headers()
    return proxywasm.get_http_request_headers()


def remove_header(response: bool, name: str) -> None:
    if response:
        proxywasm.remove_http_response_header(name)
    else:
        proxywasm.remove_http_request_header(name)


def add_header(response: bool, name: str, value: str) -> None:
    if response:
        proxywasm.add_http_response_header(name, value)
    else:
        proxywasm.add_http_request_header(name, value)


def replace_header(response: bool, name: str, value: str) -> None:
    if response:
        proxywasm.replace_http_response_header(name, value)
    else:
        proxywasm.replace_http_request_header(name, value)


def apply(rules: Rules, response: bool) -> None:
    """Edit the request (or response) headers the host holds now."""
    for name in rules.remove:
        remove_header(response, name)
    for old, new in rules.rename:
        moved = [value for name, value in get_headers(response) if name == old]
        if len(moved) > 0:
            remove_header(response, old)
            for value in moved:
                add_header(response, new, value)
    replaced: list[str] = []
    for name, value in rules.set:
        if name in replaced:
            add_header(response, name, value)
        else:
            replace_header(response, name, value)
            replaced.append(name)
    for name, value in rules.add:
        add_header(response, name, value)


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        if not self.plugin.request.empty():
            apply(self.plugin.request, False)
        return Action.CONTINUE

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        if not self.plugin.response.empty():
            apply(self.plugin.response, True)
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.request = Rules()
        self.response = Rules()

    def configure(self, config: JsonValue) -> None:
        self.request = read_rules("request", config.get("request"))
        self.response = read_rules("response", config.get("response"))

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        return start_with_config(NAME, FIELDS, self.configure)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
