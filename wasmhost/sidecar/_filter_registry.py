"""The HTTP filter factory registry: ``typed_config`` type -> config factory.

A config factory receives the unpacked ``typed_config`` message and a
``FilterBuildContext`` when a plan is built (off the request path; it may do
slow work such as compiling a Wasm module) and returns the per-stream factory
``create(callbacks) -> HttpFilter``. Refusing a configuration means raising
``ConfigError`` with a path relative to the filter's ``typed_config``.

Other packages add filters without editing this one::

    unregister = register_http_filter(
        "envoy.extensions.filters.http.wasm.v3.Wasm", build_wasm_filter)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from ._filter_api import HttpCallCallback
from ._headers import Pair
from ._plan import HttpFilterFactory
from ._stats import StatsStore


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class WorkerServices(Protocol):
    """Worker-level services for state that outlives a stream (e.g. a plugin's root context).

    Only call these from the worker's event loop thread, after the plan is active.
    """

    @property
    def stats(self) -> StatsStore: ...

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable: ...

    def call_soon(self, callback: Callable[[], None]) -> None: ...

    def dispatch_http_call(
        self,
        cluster: str,
        headers: Iterable[Pair],
        body: bytes,
        trailers: Iterable[Pair],
        timeout: float,
        on_result: HttpCallCallback,
    ) -> int: ...

    def cancel_http_call(self, token: int) -> None: ...


@dataclass(frozen=True)
class FilterBuildContext:
    """What a filter config factory may know about where its filter will run."""

    path: str  # field path of this filter's typed_config, for messages
    filter_name: str
    stat_prefix: str  # the connection manager's stat_prefix
    node: Any  # envoy.config.core.v3.Node
    cluster_names: frozenset[str]
    listener_name: str
    listener_direction: int  # 0 UNSPECIFIED, 1 INBOUND, 2 OUTBOUND
    listener_metadata: Any
    services: WorkerServices | None
    on_retire: Callable[[Callable[[], None]], None]  # register cleanup for when this plan is no longer used
    cluster_plan: Callable[[str], Any] | None = None  # a cluster's built plan by name (Wasm code.remote fetches)


HttpFilterConfigFactory = Callable[[Any, FilterBuildContext], HttpFilterFactory]


@dataclass(frozen=True)
class _Registration:
    config_factory: HttpFilterConfigFactory
    terminal: bool


_REGISTRY: dict[str, _Registration] = {}


def type_name_of(type_url: str) -> str:
    """``type.googleapis.com/a.b.C`` -> ``a.b.C``."""
    return type_url.rsplit("/", 1)[-1]


def register_http_filter(
    type_url: str, config_factory: HttpFilterConfigFactory, *, terminal: bool = False
) -> Callable[[], None]:
    """Make ``typed_config`` of this type (URL or full message name) build filters with ``config_factory``.

    ``terminal`` marks a filter that must be last in the chain (like the router).
    Returns a function that removes the registration (for tests).
    """
    name = type_name_of(type_url)
    previous = _REGISTRY.get(name)
    _REGISTRY[name] = _Registration(config_factory, terminal)

    def unregister() -> None:
        if previous is None:
            _REGISTRY.pop(name, None)
        else:
            _REGISTRY[name] = previous

    return unregister


def lookup_http_filter(type_url: str) -> tuple[HttpFilterConfigFactory, bool] | None:
    registration = _REGISTRY.get(type_name_of(type_url))
    if registration is None:
        return None
    return registration.config_factory, registration.terminal


def registered_http_filters() -> list[str]:
    return sorted(_REGISTRY)


# Per-route configs (``typed_per_filter_config``): type -> parser(message, path) -> the object the
# filter of that name finds on the route (``Route.per_filter``); the most specific level wins.
RouteConfigParser = Callable[[Any, str], Any]
_ROUTE_CONFIGS: dict[str, RouteConfigParser] = {}


def register_route_config(type_url: str, parser: RouteConfigParser) -> Callable[[], None]:
    """Accept ``typed_per_filter_config`` entries of this type, parsed by ``parser`` when routes are built."""
    name = type_name_of(type_url)
    previous = _ROUTE_CONFIGS.get(name)
    _ROUTE_CONFIGS[name] = parser

    def unregister() -> None:
        if previous is None:
            _ROUTE_CONFIGS.pop(name, None)
        else:
            _ROUTE_CONFIGS[name] = previous

    return unregister


def lookup_route_config(type_url: str) -> RouteConfigParser | None:
    return _ROUTE_CONFIGS.get(type_name_of(type_url))
