"""The sans-io incremental xDS session: per-resource versions, removals, subscriptions,
reconnects with initial versions, ACK and NACK."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane._delta import DeltaXdsSession
from controlplane._generate import generate
from controlplane._protos import CLUSTER, ENDPOINT, ROUTE
from tests.controlplane._fixtures import mesh_of, sidecar

SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %s}
spec:
  hosts: [%s.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""
A, B = SE % ("a", "a"), SE % ("b", "b")
PROXY = sidecar("client")
RULE_B = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec: {host: b, trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}}
"""
CA, CB = "outbound|80||a.default.svc.cluster.local", "outbound|80||b.default.svc.cluster.local"


def request(type_url: str, subscribe: list[str] | None = None, unsubscribe: list[str] | None = None,
            nonce: str = "", error: str = "", initial: dict[str, str] | None = None) -> discovery_pb2.DeltaDiscoveryRequest:
    out = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=subscribe or [],
                                              resource_names_unsubscribe=unsubscribe or [], response_nonce=nonce,
                                              initial_resource_versions=initial or {})
    if error:
        out.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return out


def test_wildcard_sends_everything_then_only_differences() -> None:
    session = DeltaXdsSession("p")
    one = generate(mesh_of(A), PROXY)
    [first] = session.on_request(request(CLUSTER), one)
    assert [r.name for r in first.resources] == [CA] and first.removed_resources == []
    assert first.resources[0].version == one.resource_version(CLUSTER, CA)
    assert session.on_request(request(CLUSTER, nonce=first.nonce), one) == []
    assert session.status()["CDS"]["status"] == "SYNCED"
    two = generate(mesh_of(A, B), PROXY)
    [added] = session.on_snapshot(two)
    assert [r.name for r in added.resources] == [CB]  # the unchanged cluster is not resent
    session.on_request(request(CLUSTER, nonce=added.nonce), two)
    [removed] = session.on_snapshot(generate(mesh_of(B), PROXY))
    assert removed.resources == [] and list(removed.removed_resources) == [CA]
    assert session.on_snapshot(generate(mesh_of(B), PROXY)) == []


def test_named_subscriptions_follow_subscribe_and_unsubscribe() -> None:
    session = DeltaXdsSession("p")
    snapshot = generate(mesh_of(A, B), PROXY)
    [first] = session.on_request(request(ENDPOINT, [CA]), snapshot)
    assert [r.name for r in first.resources] == [CA]
    [more] = session.on_request(request(ENDPOINT, [CB], nonce=first.nonce), snapshot)
    assert [r.name for r in more.resources] == [CB]
    assert session.on_request(request(ENDPOINT, unsubscribe=[CA], nonce=more.nonce), snapshot) == []
    assert session.sent_names(ENDPOINT) == (CB,)
    [empty] = session.on_request(request(ROUTE, ["nonexistent"]), snapshot)  # first request: always answered
    assert empty.resources == []


def test_nack_is_reported_and_the_rejected_resource_is_offered_again_once_it_changes() -> None:
    session = DeltaXdsSession("p")
    one = generate(mesh_of(A), PROXY)
    [first] = session.on_request(request(CLUSTER), one)
    session.on_request(request(CLUSTER, nonce=first.nonce), one)
    two = generate(mesh_of(A, B), PROXY)
    [push] = session.on_snapshot(two)
    assert session.on_request(request(CLUSTER, nonce=push.nonce, error="no such thing"), two) == []
    assert session.status()["CDS"]["status"] == "NACKED" and session.status()["CDS"]["nack"] == "no such thing"
    assert session.nacks == 1
    assert session.on_snapshot(two) == []  # the same bad version is not offered again (no NACK loop)
    fixed = generate(mesh_of(A, B, RULE_B), PROXY)
    [again] = session.on_snapshot(fixed)
    assert [r.name for r in again.resources] == [CB]
    session.on_request(request(CLUSTER, nonce=again.nonce), fixed)
    assert session.status()["CDS"]["status"] == "SYNCED"


def test_reconnect_with_initial_versions_sends_only_what_changed() -> None:
    snapshot = generate(mesh_of(A, B), PROXY)
    session = DeltaXdsSession("p")
    held = {CA: snapshot.resource_version(CLUSTER, CA), CB: "stale-version"}
    [response] = session.on_request(request(CLUSTER, initial=held), snapshot)
    assert [r.name for r in response.resources] == [CB]
