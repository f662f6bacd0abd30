"""cors: Cross-Origin Resource Sharing — preflights answered locally, response headers added.

Configuration (JSON)::

    {
      "allow_origins": ["https://app.example.com", "https://*.example.org"],
      "allow_methods": ["GET", "POST", "PUT"],
      "allow_headers": ["content-type", "authorization"],
      "expose_headers": ["x-request-id"],
      "max_age": 600,
      "allow_credentials": true
    }

A preflight (``OPTIONS`` with ``origin`` and ``access-control-request-method``) from an
allowed origin is answered ``204`` by the plugin; other preflights go upstream untouched.
Responses to requests from an allowed origin get ``access-control-allow-origin`` (and the
credentials and expose headers when configured) plus ``vary: origin``.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.errors import NotFoundError
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "cors"
FIELDS = ["allow_origins", "allow_methods", "allow_headers", "expose_headers", "max_age", "allow_credentials"]


def request_header(name: str) -> str:
    try:
        return proxywasm.get_http_request_header(name)
    except NotFoundError:
        return ""


def origin_matches(pattern: str, origin: str) -> bool:
    """``*``, an exact origin, or ``scheme://*.domain`` for any subdomain of domain."""
    if pattern == "*":
        return True
    scheme, sep, host = pattern.partition("://*.")
    if sep == "":
        return pattern == origin.lower()
    prefix = scheme + "://"
    candidate = origin.lower()
    return candidate.startswith(prefix) and candidate.endswith("." + host) and len(candidate) > len(prefix) + len(host) + 1


def read_list(config: JsonValue, field: str, upper: bool) -> list[str]:
    value = config.get(field)
    if value.is_null():
        return []
    if value.kind != "array" or len(value.as_str_list()) != value.size():
        raise ConfigError(f"{field}: expected a list of strings")
    items: list[str] = []
    for item in value.as_str_list():
        text = item.strip()
        if text == "" or "," in text:
            raise ConfigError(f"{field}: {item!r} is not a single name")
        items.append(text.upper() if upper else text.lower())
    return items


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.origin = ""
        self.answered = False

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        plugin = self.plugin
        origin = request_header("origin")
        if origin == "" or not plugin.allows(origin):
            return Action.CONTINUE
        self.origin = origin
        requested = request_header("access-control-request-method")
        if request_header(":method") != "OPTIONS" or requested == "":
            return Action.CONTINUE
        headers = [("access-control-allow-origin", plugin.allow_origin_value(origin))]
        headers.append(("access-control-allow-methods", ", ".join(plugin.allow_methods)))
        if len(plugin.allow_headers) > 0:
            headers.append(("access-control-allow-headers", ", ".join(plugin.allow_headers)))
        if plugin.max_age >= 0:
            headers.append(("access-control-max-age", str(plugin.max_age)))
        if plugin.allow_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        headers.append(("vary", "origin"))
        proxywasm.log_debug(f"{NAME}: preflight from {origin} for {requested}")
        self.answered = True
        proxywasm.send_http_response(204, headers, b"")
        return Action.PAUSE

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        if self.origin == "" or self.answered:
            return Action.CONTINUE
        plugin = self.plugin
        proxywasm.replace_http_response_header("access-control-allow-origin", plugin.allow_origin_value(self.origin))
        if plugin.allow_credentials:
            proxywasm.replace_http_response_header("access-control-allow-credentials", "true")
        if len(plugin.expose_headers) > 0:
            proxywasm.replace_http_response_header("access-control-expose-headers", ", ".join(plugin.expose_headers))
        proxywasm.add_http_response_header("vary", "origin")
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.allow_origins: list[str] = []
        self.allow_methods: list[str] = ["GET", "HEAD", "POST"]
        self.allow_headers: list[str] = []
        self.expose_headers: list[str] = []
        self.max_age = -1
        self.allow_credentials = False

    def allows(self, origin: str) -> bool:
        for pattern in self.allow_origins:
            if origin_matches(pattern, origin):
                return True
        return False

    def allow_origin_value(self, origin: str) -> str:
        """``*`` for a wildcard configuration without credentials, else the origin itself."""
        if "*" in self.allow_origins and not self.allow_credentials:
            return "*"
        return origin

    def configure(self, config: JsonValue) -> None:
        origins = config.get("allow_origins")
        if origins.kind != "array" or origins.size() == 0 or len(origins.as_str_list()) != origins.size():
            raise ConfigError("allow_origins: expected a non-empty list of origins")
        for origin in origins.as_str_list():
            if origin != "*" and "://" not in origin:
                raise ConfigError(f"allow_origins: {origin!r} is not an origin (scheme://host[:port]) or *")
            self.allow_origins.append(origin.lower().rstrip("/"))
        if config.has("allow_methods"):
            self.allow_methods = read_list(config, "allow_methods", True)
        self.allow_headers = read_list(config, "allow_headers", False)
        self.expose_headers = read_list(config, "expose_headers", False)
        max_age = config.get("max_age")
        if not max_age.is_null():
            self.max_age = max_age.as_int(-1)
            if self.max_age < 0:
                raise ConfigError("max_age: expected seconds (an integer >= 0)")
        self.allow_credentials = config.get("allow_credentials").as_bool(False)

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        return start_with_config(NAME, FIELDS, self.configure, empty_is_defaults=False)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
