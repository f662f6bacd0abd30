"""api_key_auth: admit requests that carry a configured API key, in a header or a query parameter.

Configuration (JSON)::

    {
      "keys": [{"client": "mobile", "key": "k-9f3a"}, {"client": "partner", "key": "k-77d0"}],
      "header": "x-api-key",
      "query_param": "api_key",
      "forward_client_header": "x-api-client",
      "hide_credentials": true
    }

The header is looked at first, then the query parameter. No key: ``401`` with
``www-authenticate: ApiKey``; an unknown key: ``403``. With ``hide_credentials`` the key
is removed from the request before it goes upstream.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.errors import NotFoundError
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "api_key_auth"
FIELDS = ["keys", "header", "query_param", "forward_client_header", "hide_credentials"]
HEX = "0123456789abcdef"


def percent_decode(text: str) -> str:
    """``%XX`` escapes and ``+`` (space) of a query value; malformed escapes stay as they are."""
    data = text.encode()
    out: list[int] = []
    i = 0
    while i < len(data):
        c = data[i]
        if c == 37 and i + 2 < len(data):
            high = HEX.find(chr(data[i + 1]).lower())
            low = HEX.find(chr(data[i + 2]).lower())
            if high >= 0 and low >= 0:
                out.append(high * 16 + low)
                i += 3
                continue
        out.append(32 if c == 43 else c)
        i += 1
    return bytes(out).decode("utf-8", "replace")


def split_query(path: str) -> tuple[str, list[str]]:
    """(path without query, the ``name=value`` parts of the query in order)."""
    base, question, query = path.partition("?")
    if question == "" or query == "":
        return (base, [])
    return (base, query.split("&"))


def query_value(parts: list[str], name: str) -> str | None:
    for part in parts:
        key, _, value = part.partition("=")
        if percent_decode(key) == name:
            return percent_decode(value)
    return None


def without_param(base: str, parts: list[str], name: str) -> str:
    kept = [part for part in parts if percent_decode(part.partition("=")[0]) != name]
    if len(kept) == 0:
        return base
    return base + "?" + "&".join(kept)


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def deny(self, status: int, headers: list[tuple[str, str]], body: str, why: str) -> Action:
        proxywasm.log_info(f"{NAME}: {why}")
        proxywasm.send_http_response(status, headers, body.encode())
        return Action.PAUSE

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        plugin = self.plugin
        key = ""
        found = False
        from_query = False
        if plugin.header != "":
            try:
                key = proxywasm.get_http_request_header(plugin.header)
                found = True
            except NotFoundError:
                found = False
        path = ""
        if not found and plugin.query_param != "":
            try:
                path = proxywasm.get_http_request_header(":path")
            except NotFoundError:
                path = ""
            value = query_value(split_query(path)[1], plugin.query_param)
            if value is not None:
                key = value
                found = True
                from_query = True
        if not found:
            return self.deny(401, [("www-authenticate", "ApiKey")], "missing API key\n", "missing API key")
        client = plugin.clients.get(key)
        if client is None:
            return self.deny(403, [], "invalid API key\n", "unknown API key")
        if plugin.forward_header != "":
            proxywasm.replace_http_request_header(plugin.forward_header, client)
        if plugin.hide_credentials:
            if from_query:
                base, parts = split_query(path)
                proxywasm.replace_http_request_header(":path", without_param(base, parts, plugin.query_param))
            else:
                proxywasm.remove_http_request_header(plugin.header)
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.clients: dict[str, str] = {}
        self.header = "x-api-key"
        self.query_param = ""
        self.forward_header = ""
        self.hide_credentials = False

    def configure(self, config: JsonValue) -> None:
        keys = config.get("keys")
        if keys.kind != "array" or keys.size() == 0:
            raise ConfigError("keys: expected a non-empty list of {\"client\", \"key\"} objects")
        for index, item in enumerate(keys.as_list()):
            where = f"keys[{index}]"
            client = item.get("client").as_str()
            key = item.get("key").as_str()
            if item.kind != "object" or client == "" or key == "":
                raise ConfigError(f"{where}: expected non-empty strings client and key")
            if key in self.clients:
                raise ConfigError(f"{where}.key: the same key is configured twice")
            self.clients[key] = client
        for field in ["header", "forward_client_header"]:
            value = config.get(field)
            if value.is_null():
                continue
            name = value.as_str().lower()
            if value.kind != "string" or name.startswith(":") or " " in name:
                raise ConfigError(f"{field}: expected a header name")
            if field == "header":
                self.header = name
            else:
                self.forward_header = name
        query = config.get("query_param")
        if not query.is_null():
            if query.kind != "string":
                raise ConfigError("query_param: expected a query parameter name")
            self.query_param = query.as_str()
        if self.header == "" and self.query_param == "":
            raise ConfigError("header: give a header, a query_param, or both")
        self.hide_credentials = config.get("hide_credentials").as_bool(False)

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        return start_with_config(NAME, FIELDS, self.configure, empty_is_defaults=False)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
