"""route_metrics: Prometheus metrics per route — requests, responses by class, in flight, latency.

Configuration (JSON)::

    {
      "prefix": "shop",
      "routes": [
        {"name": "orders", "prefix": "/orders", "methods": ["GET", "POST"]},
        {"name": "health", "exact": "/healthz"}
      ],
      "default_route": "other"
    }

Each request is matched to the first route whose path matcher (``exact``, ``prefix`` or
``suffix``, query string ignored) and methods fit; unmatched requests count under
``default_route`` ("" to not count them). Per route ``R`` the plugin defines
``<prefix>_<R>_requests_total``, ``<prefix>_<R>_responses_<1xx..5xx>_total`` (counters),
``<prefix>_<R>_requests_active`` (gauge) and ``<prefix>_<R>_duration_ms`` (histogram);
the proxy exports them with its own metrics.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.errors import NotFoundError
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "route_metrics"
FIELDS = ["prefix", "routes", "default_route"]
CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"]


def valid_name(text: str) -> bool:
    """Metric name parts: letters, digits and underscores (Prometheus-safe, no dots)."""
    if text == "":
        return False
    for c in text:
        if not (c.isalnum() or c == "_") or ord(c) > 127:
            return False
    return True


class Route:
    """A path matcher, optional methods, and the metrics of this route."""

    def __init__(self, name: str, kind: str, value: str, methods: list[str]) -> None:
        self.name = name
        self.kind = kind
        self.value = value
        self.methods = methods
        self.requests = proxywasm.MetricCounter(0)
        self.active = proxywasm.MetricGauge(0)
        self.duration = proxywasm.MetricHistogram(0)
        self.responses: list[proxywasm.MetricCounter] = []

    def define(self, prefix: str) -> None:
        base = f"{prefix}_{self.name}"
        self.requests = proxywasm.define_counter_metric(f"{base}_requests_total")
        self.active = proxywasm.define_gauge_metric(f"{base}_requests_active")
        self.duration = proxywasm.define_histogram_metric(f"{base}_duration_ms")
        self.responses = [proxywasm.define_counter_metric(f"{base}_responses_{c}_total") for c in CLASSES]

    def matches(self, method: str, path: str) -> bool:
        if len(self.methods) > 0 and method not in self.methods:
            return False
        if self.kind == "exact":
            return path == self.value
        if self.kind == "prefix":
            return path.startswith(self.value)
        if self.kind == "suffix":
            return path.endswith(self.value)
        return True


def request_header(name: str) -> str:
    try:
        return proxywasm.get_http_request_header(name)
    except NotFoundError:
        return ""


def read_route(index: int, item: JsonValue) -> Route:
    where = f"routes[{index}]"
    if item.kind != "object":
        raise ConfigError(f"{where}: expected an object with name and a path matcher")
    for key in item.keys():
        if key not in ["name", "exact", "prefix", "suffix", "methods"]:
            raise ConfigError(f"{where}.{key}: unknown field (use name, exact, prefix, suffix, methods)")
    name = item.get("name").as_str()
    if not valid_name(name):
        raise ConfigError(f"{where}.name: expected letters, digits and underscores")
    kinds = [k for k in item.keys() if k in ["exact", "prefix", "suffix"]]
    if len(kinds) != 1 or item.get(kinds[0]).kind != "string":
        raise ConfigError(f"{where}: give exactly one of exact, prefix or suffix (a string)")
    methods: list[str] = []
    if item.has("methods"):
        listed = item.get("methods")
        if listed.kind != "array" or len(listed.as_str_list()) != listed.size():
            raise ConfigError(f"{where}.methods: expected a list of method names")
        methods = [m.upper() for m in listed.as_str_list()]
    return Route(name, kinds[0], item.get(kinds[0]).as_str(), methods)


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.route: Route | None = None
        self.started_ns = 0

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        path = request_header(":path").partition("?")[0]
        route = self.plugin.match(request_header(":method"), path)
        if route is not None:
            self.route = route
            self.started_ns = proxywasm.get_current_time_nanoseconds()
            route.requests.increment(1)
            route.active.add(1)
        return Action.CONTINUE

    def on_http_response_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        route = self.route
        if route is None:
            return Action.CONTINUE
        try:
            status = int(proxywasm.get_http_response_header(":status"))
        except NotFoundError:
            status = 0
        except ValueError:
            status = 0
        if 100 <= status <= 599:
            route.responses[status // 100 - 1].increment(1)
        return Action.CONTINUE

    def on_http_stream_done(self) -> None:
        route = self.route
        if route is None:
            return
        elapsed_ms = (proxywasm.get_current_time_nanoseconds() - self.started_ns) // 1_000_000
        route.duration.record(elapsed_ms)
        route.active.add(-1)


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.prefix = "route"
        self.routes: list[Route] = []
        self.fallback: Route | None = None

    def match(self, method: str, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(method, path):
                return route
        return self.fallback

    def configure(self, config: JsonValue) -> None:
        if config.has("prefix"):
            self.prefix = config.get("prefix").as_str()
            if not valid_name(self.prefix):
                raise ConfigError("prefix: expected letters, digits and underscores")
        routes = config.get("routes")
        if routes.kind != "array":
            raise ConfigError("routes: expected a list of routes")
        names: list[str] = []
        for index, item in enumerate(routes.as_list()):
            route = read_route(index, item)
            if route.name in names:
                raise ConfigError(f"routes[{index}].name: {route.name!r} is used twice")
            names.append(route.name)
            self.routes.append(route)
        fallback = "other"
        if config.has("default_route"):
            fallback = config.get("default_route").as_str()
            if fallback != "" and not valid_name(fallback):
                raise ConfigError("default_route: expected letters, digits and underscores, or \"\"")
            if fallback in names:
                raise ConfigError(f"default_route: {fallback!r} is also a configured route")
        for route in self.routes:
            route.define(self.prefix)
        if fallback != "":
            route = Route(fallback, "any", "", [])
            route.define(self.prefix)
            self.fallback = route

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        return start_with_config(NAME, FIELDS, self.configure, empty_is_defaults=False)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
