"""``envoy.filters.http.cors`` without policies: the filter Istio puts in every outbound chain.

Envoy's CORS filter acts only where a route, virtual host or route configuration carries a CORS
policy; with none it passes every request and response through untouched. That is the case
served here: CORS policies themselves (``typed_per_filter_config`` with a ``CorsPolicy``) are
refused by the configuration check, so the filter never has a policy to apply.
"""

from __future__ import annotations

from typing import Any

from ._filter_api import HttpFilter
from ._filter_registry import FilterBuildContext, register_http_filter

CORS_TYPE = "envoy.extensions.filters.http.cors.v3.Cors"


class CorsFilter(HttpFilter):
    """No policy anywhere: nothing to check, nothing to add."""

    decodes = False
    encodes = False


def build_cors(config: Any, context: FilterBuildContext) -> Any:
    """Config factory for ``envoy.extensions.filters.http.cors.v3.Cors`` (a message without fields)."""

    def create(callbacks: Any) -> CorsFilter:
        return CorsFilter()

    create.filter_class = CorsFilter  # type: ignore[attr-defined]
    return create


register_http_filter(CORS_TYPE, build_cors)
