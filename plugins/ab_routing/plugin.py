"""ab_routing: choose a variant per request from its headers, tag the request, re-route it.

Configuration (JSON)::

    {
      "header": "x-route-variant",
      "rules": [
        {"header": "x-user-group", "exact": "beta", "variant": "b"},
        {"header": "cookie", "contains": "ab=b", "variant": "b"},
        {"header": "x-canary", "present": true, "variant": "canary"}
      ],
      "split": {"header": "x-user-id", "weights": {"a": 90, "b": 10}},
      "default": "a"
    }

The first matching rule decides; otherwise a sticky weighted split on the hash of a
header's value; otherwise ``default``. The plugin sets ``header`` to the variant (replacing
what a client sent) and calls the host's ``clear_route_cache`` foreign function, so route
matching — a VirtualService or route matching on that header — sees the new value.
"""

from __future__ import annotations

from sdk import proxywasm
from sdk.config import ConfigError, start_with_config
from sdk.errors import NotFoundError, ProxyWasmError
from sdk.jsonvalue import JsonValue
from sdk.types import Action, HttpContext, PluginContext, VMContext

NAME = "ab_routing"
FIELDS = ["header", "rules", "split", "default"]
MATCHERS = ["exact", "prefix", "contains", "present"]


class Rule:
    """``header`` compared by ``kind`` (exact, prefix, contains, present) with ``value``."""

    def __init__(self, header: str, kind: str, value: str, present: bool, variant: str) -> None:
        self.header = header
        self.kind = kind
        self.value = value
        self.present = present
        self.variant = variant

    def matches(self, found: bool, value: str) -> bool:
        if self.kind == "present":
            return found == self.present
        if not found:
            return False
        if self.kind == "exact":
            return value == self.value
        if self.kind == "prefix":
            return value.startswith(self.value)
        return self.value in value


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a: a stable hash, the same in every host and every run."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def request_header(name: str) -> tuple[bool, str]:
    try:
        return (True, proxywasm.get_http_request_header(name))
    except NotFoundError:
        return (False, "")


def header_name(field: str, value: JsonValue) -> str:
    name = value.as_str().lower()
    if value.kind != "string" or name == "" or name.startswith(":") or " " in name:
        raise ConfigError(f"{field}: expected a header name")
    return name


def read_rule(index: int, item: JsonValue) -> Rule:
    where = f"rules[{index}]"
    if item.kind != "object":
        raise ConfigError(f"{where}: expected an object with header, one matcher and variant")
    kinds = [k for k in item.keys() if k in MATCHERS]
    for key in item.keys():
        if key not in MATCHERS and key not in ["header", "variant"]:
            raise ConfigError(f"{where}.{key}: unknown field (use header, variant and one of {', '.join(MATCHERS)})")
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(MATCHERS)}")
    kind = kinds[0]
    header = header_name(f"{where}.header", item.get("header"))
    variant = item.get("variant").as_str()
    if variant == "":
        raise ConfigError(f"{where}.variant: expected a non-empty string")
    matcher = item.get(kind)
    if kind == "present":
        if matcher.kind != "bool":
            raise ConfigError(f"{where}.present: expected true or false")
        return Rule(header, kind, "", matcher.as_bool(), variant)
    if matcher.kind != "string":
        raise ConfigError(f"{where}.{kind}: expected a string")
    return Rule(header, kind, matcher.as_str(), False, variant)


class Http(HttpContext):
    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def on_http_request_headers(self, num_headers: int, end_of_stream: bool) -> Action:
        plugin = self.plugin
        variant, why = plugin.choose()
        if variant == "":
            return Action.CONTINUE
        proxywasm.replace_http_request_header(plugin.header, variant)
        proxywasm.log_debug(f"{NAME}: variant {variant} ({why})")
        if plugin.can_clear_route_cache:
            try:
                proxywasm.call_foreign_function("clear_route_cache", b"")
            except ProxyWasmError as err:
                plugin.can_clear_route_cache = False
                proxywasm.log_warn(f"{NAME}: the host cannot clear the route cache ({err}); routes see the header "
                                   "only where they are matched after this filter")
        return Action.CONTINUE


class Plugin(PluginContext):
    def __init__(self) -> None:
        self.header = "x-route-variant"
        self.rules: list[Rule] = []
        self.split_header = ""
        self.split_variants: list[str] = []
        self.split_weights: list[int] = []
        self.default = ""
        self.can_clear_route_cache = True

    def choose(self) -> tuple[str, str]:
        """(variant, why); an empty variant leaves the request alone."""
        for index, rule in enumerate(self.rules):
            found, value = request_header(rule.header)
            if rule.matches(found, value):
                return (rule.variant, f"rule {index}")
        if self.split_header != "":
            found, value = request_header(self.split_header)
            if found:
                total = sum(self.split_weights)
                point = fnv1a(value.encode()) % total
                for index, weight in enumerate(self.split_weights):
                    if point < weight:
                        return (self.split_variants[index], f"split {self.split_header}")
                    point -= weight
        return (self.default, "default")

    def configure(self, config: JsonValue) -> None:
        if config.has("header"):
            self.header = header_name("header", config.get("header"))
        rules = config.get("rules")
        if not rules.is_null() and rules.kind != "array":
            raise ConfigError("rules: expected a list of rules")
        for index, item in enumerate(rules.as_list()):
            self.rules.append(read_rule(index, item))
        split = config.get("split")
        if not split.is_null():
            self.split_header = header_name("split.header", split.get("header"))
            weights = split.get("weights")
            if weights.kind != "object" or weights.size() == 0:
                raise ConfigError("split.weights: expected an object of variant -> weight")
            for variant in weights.keys():
                weight = weights.get(variant).as_int(-1)
                if variant == "" or weight < 0:
                    raise ConfigError(f"split.weights.{variant}: expected a weight >= 0")
                self.split_variants.append(variant)
                self.split_weights.append(weight)
            if sum(self.split_weights) == 0:
                raise ConfigError("split.weights: at least one weight must be positive")
        default = config.get("default")
        if not default.is_null():
            if default.kind != "string":
                raise ConfigError("default: expected a variant name")
            self.default = default.as_str()

    def on_plugin_start(self, plugin_configuration_size: int) -> bool:
        return start_with_config(NAME, FIELDS, self.configure)

    def new_http_context(self, context_id: int) -> HttpContext:
        return Http(self)


class VM(VMContext):
    def new_plugin_context(self, context_id: int) -> PluginContext:
        return Plugin()


proxywasm.set_vm_context(VM())
