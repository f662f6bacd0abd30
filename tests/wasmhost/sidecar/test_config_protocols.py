"""Config for HTTP/1 trailers and upgrades: what is accepted, what is refused (by field path)."""

from __future__ import annotations

from typing import Any

from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster, hcm_of
from tests.wasmhost.sidecar.test_config import HCM_PATH, load, refused

UPSTREAM_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def with_upgrades(*configs: dict[str, Any]) -> dict[str, Any]:
    config = bootstrap(clusters=[cluster("backend", 8080)])
    hcm_of(config)["upgrade_configs"] = list(configs)
    return config


def test_upgrade_types_are_lower_cased_and_disabled_ones_left_out() -> None:
    plan = load(with_upgrades({"upgrade_type": "WebSocket"}, {"upgrade_type": "h2c", "enabled": False}))
    assert plan.listeners[0].hcm.upgrade_types == frozenset({b"websocket"})
    assert load(bootstrap(clusters=[cluster("backend", 8080)])).listeners[0].hcm.upgrade_types == frozenset()


def test_connect_empty_types_and_per_upgrade_filters_are_refused() -> None:
    error = refused(with_upgrades({"upgrade_type": "websocket"}, {"upgrade_type": "CONNECT"}))
    assert error.path == f"{HCM_PATH}.upgrade_configs[1].upgrade_type" and "CONNECT" in str(error)
    assert refused(with_upgrades({"upgrade_type": " "})).path == f"{HCM_PATH}.upgrade_configs[0].upgrade_type"
    error = refused(with_upgrades({"upgrade_type": "websocket", "filters": [
        {"name": "envoy.filters.http.router",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}))
    assert "upgrade_configs[0].filters" in error.path


def test_enable_trailers_on_both_sides() -> None:
    options = {UPSTREAM_OPTIONS: {"@type": f"type.googleapis.com/{UPSTREAM_OPTIONS}",
                                  "explicit_http_config": {"http_protocol_options": {"enable_trailers": True}}}}
    config = bootstrap(clusters=[cluster("backend", 8080, typed_extension_protocol_options=options),
                                 cluster("plain", 8081)])
    hcm_of(config)["http_protocol_options"] = {"enable_trailers": True}
    plan = load(config)
    assert plan.listeners[0].hcm.http1_trailers is True
    assert plan.clusters["backend"].http1_trailers is True and plan.clusters["plain"].http1_trailers is False
