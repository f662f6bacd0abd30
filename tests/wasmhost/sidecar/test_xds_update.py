"""One xDS update as a transaction, with the real plan builder and real Wasm plugins: what is
accepted, what is refused (and with which message), and what keeps serving.

Plugins are the repository's conformance plugins built from source (``plugin_path``):
``headers`` works, ``no_abi_marker`` cannot be loaded, ``lifecycle`` configured with ``reject``
returns false from ``proxy_on_configure``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests._tools import plugin_path
from tests.wasmhost.sidecar._xds import (
    assignment,
    decoded,
    ecds_filter,
    eds_cluster,
    listener,
    route_config,
    static_bootstrap,
    wasm_extension,
)
from wasmhost.sidecar import _wasm_host as wasm_host_module
from wasmhost.sidecar import _wasm_module as wasm_modules
from wasmhost.sidecar._plan import Plan
from wasmhost.sidecar._plan_build import build_plan
from wasmhost.sidecar._xds_resources import CLUSTER, ENDPOINT, EXTENSION, LISTENER, ROUTE, XdsResource
from wasmhost.sidecar._xds_update import Update, UpdateRefused, XdsState


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Each test gets its own process-wide Wasm host (and closes the runtime it made)."""
    monkeypatch.setenv("WASMESH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(wasm_host_module, "_HOST", None)
    monkeypatch.setattr(wasm_modules, "_AGENT", None)
    yield
    host = wasm_host_module._HOST
    if host is not None:
        host.runtime.close()


class Sidecar:
    """Runs updates the way the xDS client does, minus the network: prepare, serve, commit."""

    def __init__(self) -> None:
        self.static = static_bootstrap()
        self.state = XdsState()
        self.plan: Plan | None = None

    def apply(self, **received: dict[str, XdsResource]) -> Update:
        update = Update(self.static, self.state, {_TYPES[k]: v for k, v in received.items()})
        try:
            plan, assembly = update.prepare(build_plan)
        except UpdateRefused:
            update.release()
            raise
        if self.plan is not None:
            self.plan.retire()
        self.plan = plan
        update.commit(assembly)
        update.release()
        return update

    def filters(self, name: str = "out") -> list[str]:
        assert self.plan is not None
        [found] = [entry for entry in self.plan.listeners if entry.name == name]
        return [f.name for f in found.hcm.filters]

    def close(self) -> None:
        if self.plan is not None:
            self.plan.retire()


_TYPES = {"lds": LISTENER, "rds": ROUTE, "cds": CLUSTER, "eds": ENDPOINT, "ecds": EXTENSION}


@pytest.fixture
def sidecar() -> Iterator[Sidecar]:
    running = Sidecar()
    try:
        yield running
    finally:
        running.close()


def with_plugin(name: str = "default.p") -> dict[str, XdsResource]:
    return decoded(LISTENER, "l2", listener("out", 0, filters=[ecds_filter(name)]))


def test_a_plugin_arrives_with_its_listener_and_runs(sidecar: Sidecar) -> None:
    update = sidecar.apply(lds=with_plugin(), ecds=decoded(EXTENSION, "x1", wasm_extension(
        "default.p", plugin_path("headers"))))
    assert update.nacks == {}
    assert sidecar.filters() == ["default.p", "envoy.filters.http.router"]
    assert sidecar.state.serving[LISTENER]["out"].version == "l2"


def test_a_new_module_that_cannot_load_is_nacked_and_its_filter_fails_requests(sidecar: Sidecar) -> None:
    sidecar.apply(lds=decoded(LISTENER, "l1", listener("out", 0)))
    waiting = sidecar.apply(lds=with_plugin("default.broken"))
    assert waiting.nacks == {} and sidecar.filters() == ["envoy.filters.http.router"]  # the old listener serves
    assert sidecar.state.warming == {(LISTENER, "out"): "TypedExtensionConfig default.broken"}
    update = sidecar.apply(ecds=decoded(EXTENSION, "x1", wasm_extension("default.broken",
                                                                        plugin_path("no_abi_marker"))))
    assert set(update.nacks) == {EXTENSION}
    [message] = update.nacks[EXTENSION]
    assert message.startswith("TypedExtensionConfig default.broken: typed_config.config.vm_config.code: module ")
    assert "ABI version" in message
    # answered, never accepted: the new listener serves, and that filter fails every request (as Envoy)
    assert sidecar.state.warming == {} and sidecar.state.serving[LISTENER]["out"].version == "l2"
    assert sidecar.plan is not None
    [entry] = [e for e in sidecar.plan.listeners[0].hcm.filters if e.name == "default.broken"]
    assert entry.type_name == "missing filter config"
    assert sidecar.state.failures[(EXTENSION, "default.broken")].version == "x1"


def test_a_plugin_whose_configure_fails_is_nacked_and_its_last_good_version_keeps_serving(sidecar: Sidecar) -> None:
    good = wasm_extension("default.p", plugin_path("lifecycle"), "accept")
    sidecar.apply(lds=with_plugin(), ecds=decoded(EXTENSION, "x1", good))
    serving_before = sidecar.plan
    update = sidecar.apply(ecds=decoded(EXTENSION, "x2", wasm_extension("default.p", plugin_path("lifecycle"),
                                                                        "reject")))
    [message] = update.nacks[EXTENSION]
    assert message.startswith("TypedExtensionConfig default.p: typed_config.config: ")
    assert sidecar.state.resources[EXTENSION]["default.p"].version == "x1"
    assert sidecar.filters() == ["default.p", "envoy.filters.http.router"] and sidecar.plan is not serving_before
    update = sidecar.apply(ecds=decoded(EXTENSION, "x3", wasm_extension("default.p", plugin_path("lifecycle"), "again")))
    assert update.nacks == {} and (EXTENSION, "default.p") not in sidecar.state.failures


def test_an_extension_no_listener_serves_yet_is_still_checked_on_arrival(sidecar: Sidecar) -> None:
    waiting = decoded(LISTENER, "l1", listener("out", 0, route="9080", filters=[ecds_filter("default.p")]))
    update = sidecar.apply(lds=waiting, ecds=decoded(EXTENSION, "x1", wasm_extension(
        "default.p", plugin_path("no_abi_marker"))))
    assert set(update.nacks) == {EXTENSION}  # the listener is still waiting for route 9080
    assert sidecar.state.warming[(LISTENER, "out")] == "RouteConfiguration 9080"


def test_a_refused_route_configuration_ends_warming_with_an_empty_one(sidecar: Sidecar) -> None:
    sidecar.apply(lds=decoded(LISTENER, "l1", listener("out", 0, route="9080")))
    update = sidecar.apply(rds=decoded(ROUTE, "r1", route_config("9080", "b", retry_policy={"retry_on": "nope"})))
    assert set(update.nacks) == {ROUTE} and sidecar.state.warming == {}
    assert sidecar.plan is not None
    table = sidecar.plan.listeners[0].hcm.route_table
    assert table.name == "9080" and table.default is None and not table.exact  # every request: 404


def test_one_bad_listener_is_refused_and_the_others_are_served(sidecar: Sidecar) -> None:
    update = sidecar.apply(lds=decoded(LISTENER, "l1", listener("good", 0),
                                       listener("bad", 0, per_connection_buffer_limit_bytes=1, freebind=True)))
    assert update.nacks == {LISTENER: ["Listener bad: freebind: field not supported by the wasmesh sidecar"]}
    assert sidecar.plan is not None and [entry.name for entry in sidecar.plan.listeners] == ["good"]
    assert set(sidecar.state.resources[LISTENER]) == {"good"}


def test_bad_routes_and_endpoints_are_refused_on_their_own(sidecar: Sidecar) -> None:
    sidecar.apply(cds=decoded(CLUSTER, "c1", eds_cluster("b")), eds=decoded(ENDPOINT, "e1", assignment("b", 7001)))
    update = sidecar.apply(
        rds=decoded(ROUTE, "r1", route_config("9080", "b", retry_policy={"retry_on": "5xx,sometimes"})),
        eds=decoded(ENDPOINT, "e2", assignment("b", 7001, address="not-an-ip")))
    assert update.nacks[ROUTE] == ["RouteConfiguration 9080: virtual_hosts[0].routes[0].route.retry_policy.retry_on: "
                                   "unsupported retry condition 'sometimes'"]
    assert update.nacks[ENDPOINT][0].startswith(
        "ClusterLoadAssignment b: endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: ")
    assert sidecar.plan is not None and [e.port for e in sidecar.plan.clusters["b"].endpoints] == [7001]


def test_a_cluster_is_served_once_its_endpoints_arrive(sidecar: Sidecar) -> None:
    sidecar.apply(cds=decoded(CLUSTER, "c1", eds_cluster("b")))
    assert sidecar.plan is not None and "b" not in sidecar.plan.clusters
    assert sidecar.state.warming == {(CLUSTER, "b"): "ClusterLoadAssignment b"}
    sidecar.apply(eds=decoded(ENDPOINT, "e1", assignment("b", 7001)))
    assert [e.port for e in sidecar.plan.clusters["b"].endpoints] == [7001] and sidecar.state.warming == {}


def test_an_error_no_resource_explains_refuses_the_whole_update(sidecar: Sidecar) -> None:
    sidecar.static.static_resources.clusters[0].lb_policy = 99  # the bootstrap's own part breaks
    with pytest.raises(UpdateRefused, match="static_resources.clusters"):
        sidecar.apply(lds=decoded(LISTENER, "l1", listener("out", 0)))
    assert sidecar.state.resources[LISTENER] == {}
