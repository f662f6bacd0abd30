"""The sans-io state-of-the-world session: versions, nonces, ACK/NACK, stale requests,
subscriptions and pushing only what changed."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane._generate import generate
from controlplane._protos import CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE
from controlplane._xds import NACKED, STALE, SYNCED, XdsSession
from tests.controlplane._fixtures import mesh_of, sidecar

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""
SE_B = SE.replace("name: a}", "name: b}").replace("a.default", "b.default").replace("number: 80", "number: 81")
VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a]
  http: [{route: [{destination: {host: a}}], timeout: 3s}]
"""
PROXY = sidecar("client")


def request(type_url: str, names: list[str] | None = None, version: str = "", nonce: str = "",
            error: str = "") -> discovery_pb2.DiscoveryRequest:
    out = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names or [], version_info=version,
                                         response_nonce=nonce)
    if error:
        out.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return out


def test_first_request_is_answered_and_ack_records_the_version() -> None:
    snapshot = generate(mesh_of(SE), PROXY)
    session = XdsSession("p")
    [response] = session.on_request(request(CLUSTER), snapshot)
    assert response.type_url == CLUSTER and response.version_info == snapshot.version(CLUSTER)
    assert sorted(r.type_url for r in response.resources) == [CLUSTER]
    assert session.status()["CDS"]["status"] == STALE
    assert session.on_request(request(CLUSTER, version=response.version_info, nonce=response.nonce), snapshot) == []
    assert session.status()["CDS"] == {"status": SYNCED, "sent": response.version_info, "acked": response.version_info,
                                       "nack": "", "resources": "1"}


def test_nack_is_reported_and_the_next_good_push_clears_it() -> None:
    first = generate(mesh_of(SE), PROXY)
    session = XdsSession("p")
    [response] = session.on_request(request(LISTENER), first)
    session.on_request(request(LISTENER, version=response.version_info, nonce=response.nonce), first)
    second = generate(mesh_of(SE, SE_B), PROXY)
    [push] = session.on_snapshot(second)
    rejected = request(LISTENER, version=response.version_info, nonce=push.nonce, error="bad listener")
    assert session.on_request(rejected, second) == []
    status = session.status()["LDS"]
    assert status["status"] == NACKED and status["nack"] == "bad listener"
    assert status["acked"] == response.version_info  # the proxy keeps the last good version
    assert session.nacks == 1
    third = generate(mesh_of(SE), PROXY)
    [retry] = session.on_snapshot(third)
    session.on_request(request(LISTENER, version=retry.version_info, nonce=retry.nonce), third)
    assert session.status()["LDS"]["status"] == SYNCED and session.status()["LDS"]["nack"] == ""


def test_stale_nonce_is_ignored() -> None:
    snapshot = generate(mesh_of(SE), PROXY)
    session = XdsSession("p")
    [first] = session.on_request(request(CLUSTER), snapshot)
    [second] = session.on_snapshot(generate(mesh_of(SE, SE_B), PROXY))
    assert session.on_request(request(CLUSTER, version="x", nonce=first.nonce, error="old"), snapshot) == []
    assert session.status()["CDS"]["nack"] == "" and session.status()["CDS"]["acked"] == ""
    assert second.nonce != first.nonce


def test_only_changed_types_are_pushed() -> None:
    base = generate(mesh_of(SE), PROXY)
    session = XdsSession("p")
    cds = session.on_request(request(CLUSTER), base)[0]
    eds = session.on_request(request(ENDPOINT, ["outbound|80||a.default.svc.cluster.local"]), base)[0]
    lds = session.on_request(request(LISTENER), base)[0]
    rds = session.on_request(request(ROUTE, ["80"]), base)[0]
    for response in (cds, eds, lds, rds):
        session.on_request(request(response.type_url, version=response.version_info, nonce=response.nonce,
                                   names=list(session.watches[response.type_url].names or [])), base)
    assert session.on_snapshot(generate(mesh_of(SE), PROXY)) == []  # same content: nothing to send
    changed = generate(mesh_of(SE, VS), PROXY)
    pushes = session.on_snapshot(changed)
    assert [p.type_url for p in pushes] == [ROUTE]
    assert session.status()["RDS"]["status"] == STALE and session.status()["CDS"]["status"] == SYNCED


def test_scoped_types_send_only_requested_names_and_answer_new_subscriptions() -> None:
    snapshot = generate(mesh_of(SE, SE_B), PROXY)
    session = XdsSession("p")
    a, b = "outbound|80||a.default.svc.cluster.local", "outbound|81||b.default.svc.cluster.local"
    [first] = session.on_request(request(ENDPOINT, [a]), snapshot)
    assert len(first.resources) == 1
    [second] = session.on_request(request(ENDPOINT, [a, b], version=first.version_info, nonce=first.nonce), snapshot)
    assert len(second.resources) == 2
    assert session.on_request(request(ENDPOINT, [a, b], version=second.version_info, nonce=second.nonce), snapshot) == []


def test_dependency_order_and_unknown_types() -> None:
    snapshot = generate(mesh_of(SE), PROXY)
    session = XdsSession("p")
    for type_url in (EXTENSION_CONFIG, ROUTE, LISTENER, ENDPOINT, CLUSTER):
        session.on_request(request(type_url, ["80"] if type_url == ROUTE else []), snapshot)
    pushes = session.on_snapshot(generate(mesh_of(SE, SE_B, VS), PROXY))
    assert [p.type_url for p in pushes] == [CLUSTER, LISTENER, ROUTE]  # EDS/ECDS: requested names unchanged
    assert session.on_request(request(""), snapshot) == []
    assert session.status()["ECDS"]["status"] == STALE
    assert XdsSession("q").status() == {}

