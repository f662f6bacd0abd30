"""From xDS resources to the bootstrap a plan is built from: decoding, merging, inlining RDS/EDS/ECDS,
Envoy's warming (a listener or cluster waits for what it references, its previous version serving
meanwhile) and tracing a build error back to the resource and field it came from."""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3 import listener_pb2
from google.protobuf import any_pb2

from tests.wasmhost.sidecar._bootstrap import FAULT
from tests.wasmhost.sidecar._xds import (
    as_dict,
    assignment,
    decoded,
    ecds_filter,
    eds_cluster,
    listener,
    response,
    route_config,
    static_bootstrap,
    wasm_extension,
)
from wasmhost.sidecar import ConfigError, load_plan
from wasmhost.sidecar._dynamic import assemble, attribute
from wasmhost.sidecar._plan_build import build_plan
from wasmhost.sidecar._xds_resources import (
    CLUSTER,
    ENDPOINT,
    EXTENSION,
    LISTENER,
    ROUTE,
    SECRET,
    XdsResource,
    changed_keys,
    decode_resources,
    merge,
    subscriptions,
)


def resources(*groups: dict[str, dict[str, XdsResource]]) -> dict[str, dict[str, XdsResource]]:
    out: dict[str, dict[str, XdsResource]] = {}
    for group in groups:
        for type_url, found in group.items():
            out.setdefault(type_url, {}).update(found)
    return out


def hcm_of(bootstrap: Any, index: int = 0) -> dict[str, Any]:
    listener_dict = as_dict(bootstrap.static_resources.listeners[index])
    return dict(listener_dict["filter_chains"][0]["filters"][0]["typed_config"])


# --- decoding and merging --------------------------------------------------------------------------


def test_decoding_refuses_foreign_types_nameless_and_duplicate_resources() -> None:
    mixed = response(LISTENER, "1", "n", listener("a", 1), route_config("r", "c"))
    found, errors = decode_resources(LISTENER, "1", mixed.resources)
    assert list(found) == ["a"]
    assert errors == [f"resources[1]: a {ROUTE} in a response of type {LISTENER}"]
    nameless = listener_pb2.Listener()
    twice = response(LISTENER, "1", "n", listener("a", 1), listener("a", 2), nameless)
    found, errors = decode_resources(LISTENER, "1", twice.resources)
    assert errors == ["Listener a: sent twice in one response", "resources[2]: a Listener without a name"]
    garbage = any_pb2.Any(type_url=LISTENER, value=b"\xff\xff\xff")
    assert "cannot decode" in decode_resources(LISTENER, "1", [garbage])[1][0]


def test_wildcard_types_are_replaced_named_types_updated_and_unchanged_ones_kept() -> None:
    first = resources({LISTENER: decoded(LISTENER, "1", listener("a", 1), listener("b", 2))},
                      {ROUTE: decoded(ROUTE, "1", route_config("r1", "c"), route_config("r2", "c"))})
    second = merge(first, {LISTENER: decoded(LISTENER, "2", listener("a", 1)),
                           ROUTE: decoded(ROUTE, "2", route_config("r1", "other"))})
    assert set(second[LISTENER]) == {"a"} and second[LISTENER]["a"] is first[LISTENER]["a"]  # same content
    assert second[LISTENER]["a"].version == "1"
    assert set(second[ROUTE]) == {"r1", "r2"} and second[ROUTE]["r1"].version == "2"
    assert changed_keys(first, second) == {(LISTENER, "b"), (ROUTE, "r1")}


# --- inlining and warming --------------------------------------------------------------------------


def test_rds_ecds_and_eds_are_inlined_and_the_result_builds() -> None:
    state = resources(
        {LISTENER: decoded(LISTENER, "l1", listener("0.0.0.0_9080", 0, route="9080",
                                                    filters=[ecds_filter("default.fault", type_urls=[FAULT])]))},
        {ROUTE: decoded(ROUTE, "r1", route_config("9080", "outbound|9080||reviews"))},
        {CLUSTER: decoded(CLUSTER, "c1", eds_cluster("outbound|9080||reviews"))},
        {ENDPOINT: decoded(ENDPOINT, "e1", assignment("outbound|9080||reviews", 7001, 7002))},
        {EXTENSION: decoded(EXTENSION, "x1", _fault_extension("default.fault"))},
    )
    assembly = assemble(static_bootstrap(), state, {})
    assert assembly.warming == {}
    hcm = hcm_of(assembly.bootstrap)
    assert "rds" not in hcm and hcm["route_config"]["name"] == "9080"
    assert hcm["route_config"]["validate_clusters"] is False  # Envoy's default for RDS
    assert hcm["http_filters"][0]["typed_config"]["@type"].endswith("fault.v3.HTTPFault")
    cluster = as_dict(assembly.bootstrap.static_resources.clusters[1])
    assert cluster["type"] == "STATIC" and "eds_cluster_config" not in cluster
    plan = build_plan(assembly.bootstrap)
    assert [e.port for e in plan.clusters["outbound|9080||reviews"].endpoints] == [7001, 7002]
    assert [f.name for f in plan.listeners[0].hcm.filters] == ["default.fault", "envoy.filters.http.router"]


def _fault_extension(name: str) -> Any:
    from envoy.config.core.v3 import extension_pb2
    from envoy.extensions.filters.http.fault.v3 import fault_pb2

    extension = extension_pb2.TypedExtensionConfig(name=name)
    extension.typed_config.Pack(fault_pb2.HTTPFault())
    return extension


def test_a_new_listener_waits_for_its_extension_config() -> None:
    state = resources({LISTENER: decoded(LISTENER, "l1", listener("out", 0, filters=[ecds_filter("default.p")]))})
    assembly = assemble(static_bootstrap(), state, {})
    assert not assembly.bootstrap.static_resources.listeners
    assert assembly.warming == {(LISTENER, "out"): "TypedExtensionConfig default.p"}
    assert assembly.listeners == {}


def test_an_updated_listener_keeps_serving_its_previous_version_while_the_new_one_warms() -> None:
    old = decoded(LISTENER, "l1", listener("out", 0))
    new = decoded(LISTENER, "l2", listener("out", 0, filters=[ecds_filter("default.p")]))
    assembly = assemble(static_bootstrap(), {LISTENER: new}, {LISTENER: old})
    assert assembly.listeners == {"out": old["out"]}
    assert len(hcm_of(assembly.bootstrap)["http_filters"]) == 1  # the old chain: router only
    assert assembly.warming == {(LISTENER, "out"): "TypedExtensionConfig default.p"}


def test_a_cluster_waits_for_its_endpoints() -> None:
    state = resources({CLUSTER: decoded(CLUSTER, "c1", eds_cluster("b"))})
    assembly = assemble(static_bootstrap(), state, {})
    assert [c.name for c in assembly.bootstrap.static_resources.clusters] == ["xds-grpc"]
    assert assembly.warming == {(CLUSTER, "b"): "ClusterLoadAssignment b"}


def test_an_extension_of_a_type_the_filter_does_not_accept_is_a_problem_and_warms() -> None:
    state = resources({LISTENER: decoded(LISTENER, "l1", listener("out", 0, filters=[ecds_filter("default.p")]))},
                      {EXTENSION: decoded(EXTENSION, "x1", _fault_extension("default.p"))})
    assembly = assemble(static_bootstrap(), state, {})
    [(type_url, name, message)] = assembly.problems
    assert (type_url, name) == (EXTENSION, "default.p")
    assert "HTTPFault is not one the filter 'default.p' of listener 'out' accepts" in message
    assert (LISTENER, "out") in assembly.warming


def test_a_default_config_applied_without_warming_serves_until_the_extension_arrives() -> None:
    default = any_pb2.Any()
    default.CopyFrom(_fault_extension("x").typed_config)
    filters = [ecds_filter("default.p", apply_default_config_without_warming=True,
                           type_urls=[default.type_url])]
    filters[0]["config_discovery"]["default_config"] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}
    state = resources({LISTENER: decoded(LISTENER, "l1", listener("out", 0, filters=filters))})
    assembly = assemble(static_bootstrap(), state, {})
    assert assembly.warming == {}
    assert hcm_of(assembly.bootstrap)["http_filters"][0]["typed_config"]["@type"].endswith("HTTPFault")


# --- attribution and subscriptions ------------------------------------------------------------------


def test_a_build_error_names_the_resource_and_the_field_inside_it(tmp_path: Any) -> None:
    bad_route = route_config("9080", "c", retry_policy={"retry_on": "sometimes"})
    state = resources({LISTENER: decoded(LISTENER, "l1", listener("out", 0, route="9080"))},
                      {ROUTE: decoded(ROUTE, "r1", bad_route)})
    assembly = assemble(static_bootstrap(), state, {})
    try:
        build_plan(assembly.bootstrap)
    except ConfigError as err:
        found = attribute(assembly, err)
    else:
        raise AssertionError("the bad route configuration was accepted")
    assert found == (ROUTE, "9080", "RouteConfiguration 9080: virtual_hosts[0].routes[0].route.retry_policy.retry_on: "
                                    "unsupported retry condition 'sometimes'")
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"not wasm")
    state = resources({LISTENER: decoded(LISTENER, "l1", listener("out", 0, filters=[ecds_filter("default.p")]))},
                      {EXTENSION: decoded(EXTENSION, "x1", wasm_extension("default.p", broken))})
    assembly = assemble(static_bootstrap(), state, {})
    try:
        build_plan(assembly.bootstrap)
    except ConfigError as err:
        type_url, name, message = attribute(assembly, err) or ("", "", "")
    assert (type_url, name) == (EXTENSION, "default.p")
    assert message.startswith("TypedExtensionConfig default.p: typed_config.config.vm_config.code: module ")


def test_an_error_in_the_listener_itself_names_the_listener() -> None:
    state = resources({LISTENER: decoded(LISTENER, "l1", listener("out", 0, route="9080", freebind=True))},
                      {ROUTE: decoded(ROUTE, "r1", route_config("9080", "c"))})
    assembly = assemble(static_bootstrap(), state, {})
    try:
        build_plan(assembly.bootstrap)
    except ConfigError as err:
        assert attribute(assembly, err) == (LISTENER, "out",
                                            "Listener out: freebind: field not supported by the wasmesh sidecar")
    else:
        raise AssertionError("freebind was accepted")


def test_subscriptions_follow_what_listeners_and_clusters_reference() -> None:
    state = resources(
        {LISTENER: decoded(LISTENER, "l1", listener("a", 0, route="9080", filters=[ecds_filter("ns.p")]),
                           listener("b", 0, route="8080"))},
        {CLUSTER: decoded(CLUSTER, "c1", eds_cluster("x"), eds_cluster("y", eds_cluster_config={
            "eds_config": {"ads": {}}, "service_name": "y-endpoints"}))},
    )
    serving = {LISTENER: decoded(LISTENER, "l0", listener("a", 0, route="7070"))}
    assert subscriptions(static_bootstrap(), state, serving) == {
        ROUTE: frozenset({"9080", "8080", "7070"}), EXTENSION: frozenset({"ns.p"}),
        ENDPOINT: frozenset({"x", "y-endpoints"}), SECRET: frozenset()}


def test_a_dynamic_bootstrap_loads_its_static_parts_alone() -> None:
    import json

    from google.protobuf import json_format

    text = json.dumps(json_format.MessageToDict(static_bootstrap(), preserving_proto_field_name=True))
    plan = load_plan(text, "bootstrap.json", 1)
    assert list(plan.clusters) == ["xds-grpc"] and plan.listeners == ()
    assert plan.bootstrap.HasField("dynamic_resources")


def test_per_route_fault_settings_are_compiled_and_cors_policies_refused() -> None:
    from wasmhost.sidecar._fault import FaultConfig

    fault = {"@type": FAULT, "abort": {"http_status": 418, "percentage": {"numerator": 100}}}
    routed = route_config("9080", "c")
    routed.virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.fault"].CopyFrom(
        _packed(fault))
    state = resources({LISTENER: decoded(LISTENER, "l1", listener("out", 0, route="9080"))},
                      {ROUTE: decoded(ROUTE, "r1", routed)})
    plan = build_plan(assemble(static_bootstrap(), state, {}).bootstrap)
    [vhost] = plan.listeners[0].hcm.route_table.exact.values() or [plan.listeners[0].hcm.route_table.default]
    assert vhost is not None
    settings = vhost.routes[0].per_filter["envoy.filters.http.fault"]
    assert isinstance(settings, FaultConfig) and settings.abort_status == 418

    cors = {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": "a"}]}
    routed.virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.cors"].CopyFrom(_packed(cors))
    state = resources({LISTENER: decoded(LISTENER, "l1", listener("out", 0, route="9080"))},
                      {ROUTE: decoded(ROUTE, "r2", routed)})
    assembly = assemble(static_bootstrap(), state, {})
    try:
        build_plan(assembly.bootstrap)
    except ConfigError as err:
        type_url, name, message = attribute(assembly, err) or ("", "", "")
    else:
        raise AssertionError("a CORS policy was accepted")
    assert (type_url, name) == (ROUTE, "9080")
    assert message.startswith("RouteConfiguration 9080: virtual_hosts[0].routes[0].typed_per_filter_config"
                              "['envoy.filters.http.cors']: ")
    assert "CorsPolicy" in message


def _packed(data: dict[str, Any]) -> Any:
    from wasmhost.sidecar._config_load import parse_message_dict

    packed = any_pb2.Any()
    parse_message_dict(data, packed, "")
    return packed
