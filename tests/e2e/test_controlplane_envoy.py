"""Real Envoy driven by the control plane: an operator edits manifests in the watched folder
and traffic through Envoy changes within a bounded time, with no restart.

Each Envoy starts from the bootstrap that `wasmesh bootstrap` prints; upstreams are scripted
loopback servers that say which version answered.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._proxy_process import MeshFolder, http_get
from tests._tools import plugin_path
from tests.controlplane._running import RunningControlPlane, free_port, wait_for
from tests.e2e._envoy import EnvoyProcess

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
CONVERGE = 10.0  # seconds allowed for a change to reach traffic (pushes take well under a second)


def bootstrap_text(plane: RunningControlPlane, name: str, labels: str, *extra: str) -> str:
    command = [sys.executable, "-m", "controlplane.cli._controlplane", "bootstrap", "--name", name,
               "--labels", labels, "--xds", plane.xds_address, "--admin-port", "0", *extra]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout


class Mesh(MeshFolder):
    """A control plane on a folder, versioned upstreams, and the Envoys started against it."""

    def __init__(self, folder: Path, workdir: Path, envoy_binary: str) -> None:
        super().__init__(folder)
        self.workdir = workdir
        self.binary = envoy_binary
        self.plane = RunningControlPlane(folder).start()
        self.envoys: list[EnvoyProcess] = []

    def envoy(self, name: str, labels: str, *extra: str) -> EnvoyProcess:
        proxy = EnvoyProcess(bootstrap_text(self.plane, name, labels, *extra), workdir=self.workdir / name,
                             binary=self.binary, component_log_level="upstream:info,config:debug")
        self.envoys.append(proxy)
        return proxy.start()

    def close(self) -> None:
        for proxy in self.envoys:
            proxy.stop()
        self.plane.stop()
        super().close()


@pytest.fixture
def mesh(tmp_path: Path, envoy_binary: str) -> Iterator[Mesh]:
    folder = tmp_path / "config"
    folder.mkdir()
    running = Mesh(folder, tmp_path, envoy_binary)
    try:
        yield running
    finally:
        running.close()


def client(mesh: Mesh, protocol: str = "sotw") -> int:
    port = free_port()
    mesh.envoy("productpage", "app=productpage,version=v1", "--port", "9080", "--outbound", f"9080={port}",
               *(["--delta"] if protocol == "delta" else []))
    return port


PROTOCOLS = pytest.mark.parametrize("protocol", ["sotw", "delta"])


def answered_by(port: int, version: str, **kwargs: Any) -> bool:
    status, headers, _ = http_get(port, **kwargs)
    return status == 200 and headers.get("x-version") == version


@PROTOCOLS
def test_routing_follows_virtual_service_edits(mesh: Mesh, protocol: str) -> None:
    mesh.reviews("v1", "v2")
    mesh.route("- route: [{destination: {host: reviews, subset: v1}}]\n")
    port = client(mesh, protocol)
    wait_for(lambda: answered_by(port, "v1"), CONVERGE, what="v1 serves")
    mesh.route("""\
        - match: [{headers: {end-user: {exact: jason}}}]
          route: [{destination: {host: reviews, subset: v2}}]
        - route: [{destination: {host: reviews, subset: v1}}]
        """)
    wait_for(lambda: answered_by(port, "v2", headers={"end-user": "jason"}), CONVERGE, what="jason to v2")
    assert answered_by(port, "v1", headers={"end-user": "alice"})
    assert len(mesh.envoys) == 1 and mesh.envoys[0].pid  # same process: no restart
    [status] = mesh.plane.api("GET", "/api/v1/proxies")[1]["proxies"]
    assert status["protocol"] == protocol
    wait_for(lambda: all(t["status"] == "SYNCED" for t in
                         mesh.plane.api("GET", "/api/v1/proxies")[1]["proxies"][0]["types"].values()), CONVERGE)


def test_traffic_shifting_weights(mesh: Mesh) -> None:
    mesh.reviews("v1", "v3")
    mesh.route("- route: [{destination: {host: reviews, subset: v1}}]\n")
    port = client(mesh)
    wait_for(lambda: answered_by(port, "v1"), CONVERGE)
    mesh.route("""\
        - route:
          - {destination: {host: reviews, subset: v1}, weight: 50}
          - {destination: {host: reviews, subset: v3}, weight: 50}
        """)
    wait_for(lambda: answered_by(port, "v3"), CONVERGE, what="v3 takes a share")
    counts = Counter(http_get(port)[1].get("x-version") for _ in range(300))
    assert set(counts) == {"v1", "v3"} and min(counts.values()) > 90, counts  # ~150 each; 90 is far out in the tail


def test_fault_abort_rewrite_and_headers(mesh: Mesh) -> None:
    mesh.reviews("v1")
    mesh.route("""\
        - match: [{headers: {end-user: {exact: jason}}}]
          fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
          route: [{destination: {host: reviews, subset: v1}}]
        - match: [{uri: {prefix: /old/}}]
          rewrite: {uri: /new/}
          headers: {response: {set: {x-rewritten: "yes"}}, request: {add: {x-added: "1"}}}
          route: [{destination: {host: reviews, subset: v1}}]
        - route: [{destination: {host: reviews, subset: v1}}]
        """)
    port = client(mesh)
    wait_for(lambda: http_get(port, headers={"end-user": "jason"})[0] == 418, CONVERGE, what="abort for jason")
    upstream = mesh.upstreams["v1"]
    upstream.clear()
    status, headers, _ = http_get(port, "/old/page")
    assert status == 200 and headers["x-rewritten"] == "yes"
    [seen] = upstream.requests
    assert seen.path == "/new/page" and ("x-added", "1") in [(k.lower(), v) for k, v in seen.headers]


@PROTOCOLS
def test_wasm_plugin_arrives_over_ecds_and_leaves(mesh: Mesh, protocol: str) -> None:
    module = plugin_path("headers")
    mesh.reviews("v1")
    port = client(mesh, protocol)
    wait_for(lambda: answered_by(port, "v1"), CONVERGE)
    assert "x-echo-path" not in http_get(port)[1]
    wasm = mesh.wasm_plugin("headers", module, client_port=9080)
    headers = wait_for(lambda: (h := http_get(port, "/probe")[1]).get("x-echo-path") and h, CONVERGE,
                       what="plugin runs")
    assert headers["x-echo-path"] == "/probe" and headers["x-version"] == "v1"
    wait_for(lambda: mesh.plane.api("GET", "/api/v1/proxies")[1]["proxies"][0]["types"]["ECDS"]["status"] == "SYNCED",
             CONVERGE, what="ECDS ACKed")
    wasm.unlink()
    wait_for(lambda: "x-echo-path" not in http_get(port)[1], CONVERGE, what="plugin removed")


@PROTOCOLS
def test_envoy_filter_patches_and_nack_keeps_last_good(mesh: Mesh, protocol: str) -> None:
    mesh.reviews("v1")
    port = client(mesh, protocol)
    wait_for(lambda: answered_by(port, "v1"), CONVERGE)
    mesh.write("ef.yaml", """\
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: lua}
        spec:
          workloadSelector: {labels: {app: productpage}}
          configPatches:
          - applyTo: HTTP_FILTER
            match:
              context: SIDECAR_OUTBOUND
              listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager,
                                               subFilter: {name: envoy.filters.http.router}}}}
            patch:
              operation: INSERT_BEFORE
              value:
                name: envoy.lua
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
                  default_source_code:
                    inline_string: |
                      function envoy_on_response(handle) handle:headers():add("x-lua", "patched") end
          - applyTo: ROUTE_CONFIGURATION
            match: {routeConfiguration: {portNumber: 9080}}
            patch:
              operation: MERGE
              value: {response_headers_to_add: [{header: {key: x-route-config, value: merged}}]}
        """)
    # listeners and routes are separate updates: wait until both patches show
    headers = wait_for(lambda: (h := http_get(port)[1]).get("x-lua") and h.get("x-route-config") and h, CONVERGE,
                       what="lua filter inserted and route configuration merged")
    assert headers["x-lua"] == "patched" and headers["x-route-config"] == "merged"
    mesh.write("ef-bad.yaml", """\
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: bad-timeout}
        spec:
          configPatches:
          - applyTo: CLUSTER
            match: {cluster: {service: reviews.default.svc.cluster.local}}
            patch: {operation: MERGE, value: {connect_timeout: -1s}}
        """)

    def cds() -> dict[str, str]:
        return dict(mesh.plane.api("GET", "/api/v1/proxies")[1]["proxies"][0]["types"]["CDS"])

    rejected = wait_for(lambda: (c := cds())["status"] == "NACKED" and c, CONVERGE, what="Envoy NACKs the cluster")
    assert "Expected positive duration" in rejected["nack"]
    assert answered_by(port, "v1") and http_get(port)[1]["x-lua"] == "patched"  # last good config keeps serving
    (mesh.folder / "ef-bad.yaml").unlink()
    wait_for(lambda: cds()["status"] == "SYNCED", CONVERGE, what="accepted again")


def test_self_registered_workload_behind_its_inbound_listener(mesh: Mesh) -> None:
    app = mesh.upstream("v1")
    inbound = free_port()
    mesh.self_registered_reviews(app.port, plugin_path("headers"))
    port = client(mesh)
    assert http_get(port)[0] == 503  # no workload yet: the service has no endpoints
    mesh.envoy("reviews-v1", "app=reviews,version=v1", "--port", str(app.port), "--inbound", f"{app.port}={inbound}")
    status, headers, body = wait_for(lambda: (r := http_get(port))[0] == 200 and r, CONVERGE,
                                     what="workload registered")
    assert body == b"v1" and headers["x-echo-path"] == "/"  # through the reviews proxy's inbound plugin
    endpoints = mesh.plane.api("GET", "/api/v1/proxies/productpage/config/endpoints")[1]["endpoints"]
    [cla] = [e for e in endpoints if e["cluster_name"] == "outbound|9080||reviews.default.svc.cluster.local"]
    assert cla["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] == inbound
    mesh.envoys[-1].stop()
    wait_for(lambda: http_get(port)[0] == 503, CONVERGE, what="workload gone with its proxy")


def test_ingress_gateway_routes_by_gateway_and_virtual_service(mesh: Mesh) -> None:
    mesh.reviews("v1", "v2")
    ingress = free_port()
    mesh.ingress_gateway()
    mesh.envoy("ingressgateway", "istio=ingressgateway", "--router", "--outbound", f"8080={ingress}")
    wait_for(lambda: answered_by(ingress, "v2", path="/reviews/1", host="bookinfo.example"), CONVERGE,
             what="gateway routes /reviews to v2")
    assert http_get(ingress, "/other", host="bookinfo.example")[0] == 404


def test_mirroring_copies_requests_to_another_subset(mesh: Mesh) -> None:
    mesh.reviews("v1", "v2")
    mesh.route("""\
        - route: [{destination: {host: reviews, subset: v1}}]
          mirror: {host: reviews, subset: v2}
          mirrorPercentage: {value: 100.0}
        """)
    port = client(mesh)
    wait_for(lambda: answered_by(port, "v1"), CONVERGE)
    mirror = mesh.upstreams["v2"]
    wait_for(lambda: http_get(port, "/mirrored")[0] == 200 and any(r.path == "/mirrored" for r in mirror.requests),
             CONVERGE, what="v2 receives the mirrored copy")
    copy = next(r for r in mirror.requests if r.path == "/mirrored")
    assert dict((k.lower(), v) for k, v in copy.headers)["host"] == "reviews-shadow:9080"  # Envoy marks shadows


def test_destination_rule_edit_moves_a_subset(mesh: Mesh) -> None:
    mesh.reviews("v1", "v2")
    mesh.route("- route: [{destination: {host: reviews, subset: v1}}]\n")
    port = client(mesh)
    wait_for(lambda: answered_by(port, "v1"), CONVERGE)
    text = (mesh.folder / "reviews.yaml").read_text()
    mesh.write("reviews.yaml", text.replace("- {name: v1, labels: {version: v1}}", "- {name: v1, labels: {version: v2}}"))
    wait_for(lambda: answered_by(port, "v2"), CONVERGE, what="subset v1 now selects the v2 endpoints")
