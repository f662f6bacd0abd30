"""The Telemetry resource: validation, scope resolution and what each direction's listener gets."""

from __future__ import annotations

from typing import Any

import yaml

from controlplane._mesh import Mesh
from controlplane._meshconfig import parse_mesh_config
from controlplane._proxies import Proxy
from controlplane._resources import Resource
from controlplane._telemetry import (
    CLIENT,
    SERVER,
    effective_telemetry,
    stats_config,
    telemetry_filters,
    telemetry_hcm,
)
from controlplane._validation import analyze_text
from wasmhost.telemetry import StatsPluginConfig


def telemetry(name: str, namespace: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                           "metadata": {"name": name, "namespace": namespace}, "spec": spec})


def mesh_of(*documents: str, providers: list[dict[str, Any]] | None = None) -> Mesh:
    analysis = analyze_text("---\n".join(documents), "<test>", "default")
    assert not analysis.has_errors, [d.render() for d in analysis.diagnostics]
    resources: list[Resource] = list(analysis.resources)
    config = parse_mesh_config({"extensionProviders": providers or []})
    return Mesh(resources, root_namespace="istio-system", config=config)


REVIEWS = Proxy(id="sidecar~127.0.0.1~reviews-v1-1.default~default.svc.cluster.local", name="reviews-v1-1",
                namespace="default", labels={"app": "reviews", "version": "v1"})


def test_schema_and_expressions_are_validated() -> None:
    bad = telemetry("t", "default", {"metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT"},
                                                                 "tagOverrides": {"x": {"value": "size()"}}}]}]})
    analysis = analyze_text(bad, "<test>", "default")
    assert analysis.has_errors
    assert any("tagOverrides.x.value" in d.render() for d in analysis.diagnostics)
    unknown_metric = telemetry("t", "default", {"metrics": [{"overrides": [{"match": {"metric": "NOPE"}}]}]})
    assert analyze_text(unknown_metric, "<test>", "default").has_errors


def test_scope_mesh_namespace_workload_and_override_order() -> None:
    mesh = mesh_of(
        telemetry("mesh-default", "istio-system", {
            "metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT"},
                                        "tagOverrides": {"request_protocol": {"operation": "REMOVE"}}}]}],
            "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        telemetry("ns", "default", {"accessLogging": [{"disabled": True}]}),
        telemetry("reviews", "default", {"selector": {"matchLabels": {"app": "reviews"}}, "metrics": [{"overrides": [
            {"match": {"metric": "REQUEST_DURATION", "mode": "SERVER"}, "disabled": True},
            {"match": {"metric": "ALL_METRICS"},
             "tagOverrides": {"api_version": {"value": "request.headers['x-api-version'] | 'v0'"}}}]}]}),
        telemetry("ratings", "default", {"selector": {"matchLabels": {"app": "ratings"}},
                                         "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
    )
    effective = effective_telemetry(mesh, REVIEWS)
    assert effective.sources == ["istio-system/mesh-default", "default/ns", "default/reviews"]
    assert effective.access_logging == [{"disabled": True}]  # the namespace replaced the mesh section
    server = stats_config(effective, SERVER)["metrics"]
    client = stats_config(effective, CLIENT)["metrics"]
    assert server == [{"name": "requests_total", "tags_to_remove": ["request_protocol"]},
                      {"name": "request_duration_milliseconds", "drop": True},
                      {"name": "", "dimensions": {"api_version": "request.headers['x-api-version'] | 'v0'"}}]
    assert {"name": "request_duration_milliseconds", "drop": True} not in client
    # what the sidecar will parse: a real stats.PluginConfig
    from google.protobuf import json_format

    config = json_format.ParseDict({k: v for k, v in stats_config(effective, SERVER).items() if k != "@type"},
                                   StatsPluginConfig())
    assert [m.drop for m in config.metrics] == [False, True, False]
    assert telemetry_hcm(mesh, REVIEWS, SERVER) == {}  # access logging disabled in the namespace


def test_tracing_and_access_log_from_extension_providers() -> None:
    mesh = mesh_of(
        telemetry("mesh-default", "istio-system", {
            "tracing": [{"providers": [{"name": "otel"}], "randomSamplingPercentage": 25,
                         "customTags": {"cluster": {"literal": {"value": "east"}},
                                        "user": {"header": {"name": "x-user", "defaultValue": "anon"}}}}],
            "accessLogging": [{"providers": [{"name": "json-log"}], "filter": {"expression": "response.code >= 500"}}]}),
        providers=[{"name": "otel", "opentelemetry": {"service": "otel.observability.svc.cluster.local", "port": 4318}},
                   {"name": "json-log", "envoyFileAccessLog": {"path": "/dev/stdout",
                                                               "logFormat": {"labels": {"code": "%RESPONSE_CODE%"}}}}])
    fields = telemetry_hcm(mesh, REVIEWS, CLIENT)
    tracing = fields["tracing"]
    assert tracing["random_sampling"] == {"value": 25.0}
    assert tracing["provider"]["typed_config"]["http_service"]["http_uri"]["cluster"] == \
        "outbound|4318||otel.observability.svc.cluster.local"
    assert [t["tag"] for t in tracing["custom_tags"]] == ["cluster", "user"]
    log = fields["access_log"][0]
    assert log["typed_config"]["log_format"] == {"json_format": {"code": "%RESPONSE_CODE%"}}
    assert log["filter"]["extension_filter"]["typed_config"]["expression"] == "response.code >= 500"
    # both render as real Envoy messages
    from controlplane._protos import HttpConnectionManager, from_dict

    hcm = from_dict(HttpConnectionManager, {"stat_prefix": "x", "http_filters": telemetry_filters(mesh, REVIEWS, CLIENT),
                                            **fields})
    assert hcm.tracing.provider.name == "envoy.tracers.opentelemetry"
    assert [f.name for f in hcm.http_filters] == ["istio.metadata_exchange", "istio.stats"]
