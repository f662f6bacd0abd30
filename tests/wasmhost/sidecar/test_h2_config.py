"""HTTP/2 options at load: ``allow_connect`` serves extended CONNECT to clients, never towards upstreams."""

from __future__ import annotations

from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster, hcm_of
from tests.wasmhost.sidecar.test_config import load, refused

UPSTREAM_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def test_allow_connect_is_read_for_the_connection_manager() -> None:
    config = bootstrap()
    assert load(config).listeners[0].hcm.h2_allow_connect is False
    hcm_of(config)["http2_protocol_options"] = {"allow_connect": True}
    assert load(config).listeners[0].hcm.h2_allow_connect is True


def test_allow_connect_on_a_cluster_is_refused_by_field_path() -> None:
    options = {UPSTREAM_OPTIONS: {"@type": f"type.googleapis.com/{UPSTREAM_OPTIONS}",
                                  "explicit_http_config": {"http2_protocol_options": {"allow_connect": True}}}}
    error = refused(bootstrap(clusters=[cluster("backend", 8080, typed_extension_protocol_options=options)]))
    assert error.path.endswith("explicit_http_config.http2_protocol_options.allow_connect")
    assert "upstream" in str(error)
    error = refused(bootstrap(clusters=[cluster("backend", 8080, http2_protocol_options={"allow_connect": True})]))
    assert error.path == "static_resources.clusters[0].http2_protocol_options.allow_connect"
