"""The operator commands against a running control plane (real gRPC and HTTP on 127.0.0.1):
apply, get, delete, proxy-status (SYNCED / NACKED with message), proxy-config, metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane._adsclient import AdsClient
from controlplane._protos import LISTENER, ROUTE
from controlplane.cli._controlplane import main as cli
from tests.controlplane._running import RunningControlPlane, wait_for

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 9999}}]
"""
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], timeout: %s}]
"""


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[RunningControlPlane]:
    (tmp_path / "se.yaml").write_text(SE)
    with RunningControlPlane(tmp_path) as running:
        yield running


def run(plane: RunningControlPlane, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli([*args, "--control-plane", plane.api_address])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_apply_get_delete(plane: RunningControlPlane, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path.parent / "vs-input.yaml"
    manifest.write_text(VS % "3s")
    assert run(plane, capsys, "apply", "-f", str(manifest)) == (0, "VirtualService default/reviews configured\n", "")
    assert (tmp_path / "applied" / "virtualservice.default.reviews.yaml").exists()
    code, out, _ = run(plane, capsys, "get", "vs")
    assert code == 0 and "default" in out and "reviews" in out
    code, out, _ = run(plane, capsys, "get", "virtualservice", "reviews", "-o", "json")
    assert json.loads(out)[0]["spec"]["http"][0]["timeout"] == "3s"
    code, out, _ = run(plane, capsys, "get", "se", "-o", "yaml")
    assert "reviews.default.svc.cluster.local" in out
    manifest.write_text(VS % "soon")
    code, _, err = run(plane, capsys, "apply", "-f", str(manifest))
    assert code == 2 and "spec.http[0].timeout" in err and "invalid manifests" in err
    code, _, err = run(plane, capsys, "delete", "se", "reviews")
    assert code == 2 and "se.yaml" in err  # defined by a file in the folder: not the API's to delete
    assert run(plane, capsys, "delete", "vs", "reviews") == (0, "VirtualService default/reviews deleted\n", "")
    code, _, err = run(plane, capsys, "delete", "vs", "reviews")
    assert code == 2 and "not found" in err
    code, _, err = run(plane, capsys, "get", "frobs")
    assert code == 2 and "unknown kind" in err


def test_unreachable_control_plane_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["get", "vs", "--control-plane", "127.0.0.1:1", "--timeout", "2"]) == 2
    assert "cannot reach the control plane at 127.0.0.1:1" in capsys.readouterr().err


def test_proxy_status_and_config_show_acks_and_nacks(plane: RunningControlPlane,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def reject_long_timeouts(response: Any) -> str:
        from controlplane._protos import unpack

        if response.type_url != ROUTE:
            return ""
        for item in response.resources:
            for vhost in unpack(item).virtual_hosts:  # type: ignore[attr-defined]
                if any(r.route.timeout.seconds == 42 for r in vhost.routes):
                    return "timeout 42s is not supported here"
        return ""

    client = AdsClient(plane.xds_address, "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local",
                       {"NAME": "productpage", "NAMESPACE": "default", "LABELS": {"app": "productpage"}},
                       reject=reject_long_timeouts)
    plane.call(client.start())
    try:
        wait_for(lambda: ROUTE in client.versions, what="routes delivered")
        status = wait_for(lambda: plane.api("GET", "/api/v1/proxies")[1]["proxies"], what="proxy listed")
        assert wait_for(lambda: all(t["status"] == "SYNCED" for t in
                                    plane.api("GET", "/api/v1/proxies")[1]["proxies"][0]["types"].values()))
        assert set(status[0]["types"]) >= {"CDS", "EDS", "LDS", "RDS"}
        code, out, _ = run(plane, capsys, "proxy-status")
        assert code == 0 and "productpage.default" in out and "SYNCED" in out and "NACK" not in out
        code, out, _ = run(plane, capsys, "proxy-config", "listeners", "productpage.default")
        assert code == 0 and "0.0.0.0_9080" in out
        code, out, _ = run(plane, capsys, "proxy-config", "routes", "productpage", "-o", "json")
        assert json.loads(out)["routes"][0]["name"] == "9080"
        good_routes = client.versions[ROUTE]

        assert (plane.folder is not None)
        (plane.folder / "vs.yaml").write_text(VS % "42s")
        wait_for(lambda: plane.api("GET", "/api/v1/proxies")[1]["proxies"][0]["types"]["RDS"]["status"] == "NACKED",
                 what="RDS NACKed")
        assert client.versions[ROUTE] == good_routes  # the client kept its last good routes
        code, out, _ = run(plane, capsys, "proxy-status")
        assert "NACKED" in out and "timeout 42s is not supported here" in out
        assert "pilot_total_xds_rejects_total{type=\"RDS\"} 1.0" in _metrics(plane)

        (plane.folder / "vs.yaml").write_text(VS % "5s")
        wait_for(lambda: plane.api("GET", "/api/v1/proxies")[1]["proxies"][0]["types"]["RDS"]["status"] == "SYNCED",
                 what="RDS accepted again")
        assert client.versions[ROUTE] != good_routes
        assert LISTENER in client.versions
        code, _, err = run(plane, capsys, "proxy-config", "routes", "nobody")
        assert code == 2 and "no connected proxy" in err
    finally:
        plane.call(client.stop())
    wait_for(lambda: plane.api("GET", "/api/v1/proxies")[1]["proxies"] == [], what="proxy gone")


def _metrics(plane: RunningControlPlane) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{plane.api_address}/metrics", timeout=5) as reply:
        return reply.read().decode()


def test_bad_node_is_refused_with_the_field(plane: RunningControlPlane) -> None:
    import grpc
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    request = discovery_pb2.DiscoveryRequest(type_url=ROUTE)
    request.node.id = "sidecar~127.0.0.1~x.default~default.svc.cluster.local"
    request.node.metadata.update({"POD_PORTS": "not json"})
    with grpc.insecure_channel(plane.xds_address) as channel:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(iter([request]),
                                                                                                 timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stream))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "node.metadata.POD_PORTS: not JSON: Expecting value: line 1 column 1 (char 0)"
    assert plane.api("GET", "/api/v1/proxies")[1]["proxies"] == []
