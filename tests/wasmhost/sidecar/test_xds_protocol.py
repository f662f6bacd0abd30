"""The ADS client's protocol cores without a network: what the sidecar asks for and how it answers,
in state of the world and in incremental (delta) xDS.

The rules checked are Envoy's state-of-the-world ones: node only on the first request of a
stream, wildcard LDS/CDS, named subscriptions for RDS/EDS/ECDS, every answer carrying the nonce
of the response it answers, an ACK carrying the new version, a NACK the last accepted version
plus ``error_detail``, and a reconnect starting over with the versions already held.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2

from wasmhost.sidecar._xds_delta import DeltaAdsProtocol, decode_delta
from wasmhost.sidecar._xds_resources import CLUSTER, ENDPOINT, EXTENSION, LISTENER, ROUTE
from wasmhost.sidecar._xds_sotw import INVALID_ARGUMENT, AdsProtocol

NODE = base_pb2.Node(id="sidecar~127.0.0.1~productpage.default~default.svc.cluster.local", cluster="productpage")


def protocol() -> AdsProtocol:
    return AdsProtocol(NODE)


def test_first_requests_subscribe_to_clusters_and_listeners_with_the_node_once() -> None:
    requests = protocol().connected()
    assert [r.type_url for r in requests] == [CLUSTER, LISTENER]
    assert requests[0].node.id == NODE.id and not requests[1].HasField("node")
    assert all(not r.resource_names and not r.response_nonce and not r.version_info for r in requests)


def test_node_on_every_request_when_the_bootstrap_says_so() -> None:
    ads = AdsProtocol(NODE, node_on_first_message_only=False)
    assert all(r.node.id == NODE.id for r in ads.connected())


def test_ack_carries_version_nonce_and_the_names_wanted_now() -> None:
    ads = protocol()
    ads.connected()
    [ack] = ads.answer({LISTENER: ("v1", "7", "")}, {ROUTE: frozenset(), ENDPOINT: frozenset(), EXTENSION: frozenset()})
    assert (ack.type_url, ack.version_info, ack.response_nonce) == (LISTENER, "v1", "7")
    assert not ack.HasField("error_detail") and not ack.resource_names
    requests = ads.answer({CLUSTER: ("c1", "8", "")}, {ROUTE: frozenset({"9080"}), ENDPOINT: frozenset({"b", "a"}),
                                                        EXTENSION: frozenset()})
    assert [(r.type_url, list(r.resource_names), r.response_nonce) for r in requests] == [
        (CLUSTER, [], "8"), (ENDPOINT, ["a", "b"], ""), (ROUTE, ["9080"], "")]


def test_nack_keeps_the_last_accepted_version_and_says_why() -> None:
    ads = protocol()
    ads.connected()
    wanted = {EXTENSION: frozenset({"default.headers"})}
    ads.answer({}, wanted)
    ads.answer({EXTENSION: ("e1", "3", "")}, wanted)
    [nack] = ads.answer({EXTENSION: ("e2", "4", "TypedExtensionConfig default.headers: typed_config: bad")}, wanted)
    assert (nack.version_info, nack.response_nonce) == ("e1", "4")
    assert nack.error_detail.code == INVALID_ARGUMENT
    assert nack.error_detail.message == "TypedExtensionConfig default.headers: typed_config: bad"
    assert list(nack.resource_names) == ["default.headers"]
    [ack] = ads.answer({EXTENSION: ("e3", "5", "")}, wanted)
    assert ack.version_info == "e3" and not ack.HasField("error_detail")


def test_subscription_changes_are_sent_once_and_an_emptied_one_is_withdrawn() -> None:
    ads = protocol()
    ads.connected()
    [first] = ads.answer({}, {ROUTE: frozenset({"9080"})})
    assert list(first.resource_names) == ["9080"]
    assert ads.answer({}, {ROUTE: frozenset({"9080"})}) == []
    ads.answer({ROUTE: ("r1", "2", "")}, {ROUTE: frozenset({"9080"})})
    [withdrawn] = ads.answer({}, {ROUTE: frozenset()})
    assert withdrawn.type_url == ROUTE and not withdrawn.resource_names and withdrawn.response_nonce == "2"
    assert ads.answer({}, {ROUTE: frozenset()}) == []


def test_a_new_stream_resubscribes_with_the_versions_held_and_no_nonce() -> None:
    ads = protocol()
    ads.connected()
    ads.answer({CLUSTER: ("c1", "1", ""), LISTENER: ("l1", "2", "")}, {ROUTE: frozenset({"9080"})})
    ads.answer({ROUTE: ("r1", "3", "")}, {ROUTE: frozenset({"9080"})})
    requests = ads.connected()
    assert [(r.type_url, r.version_info, r.response_nonce, list(r.resource_names)) for r in requests] == [
        (CLUSTER, "c1", "", []), (LISTENER, "l1", "", []), (ROUTE, "r1", "", ["9080"])]
    assert requests[0].node.id == NODE.id


# --- incremental xDS ------------------------------------------------------------------------------


def test_delta_stream_starts_wildcard_with_the_versions_held() -> None:
    from tests.wasmhost.sidecar._xds import decoded, listener, route_config

    ads = DeltaAdsProtocol(NODE)
    ads.names[ROUTE] = frozenset({"9080"})
    held = {LISTENER: decoded(LISTENER, "l-7", listener("a", 1)), ROUTE: decoded(ROUTE, "r-3", route_config("9080", "c"),
                                                                                  route_config("8080", "c"))}
    cds, lds, rds = ads.connected(held)
    assert (cds.type_url, lds.type_url, rds.type_url) == (CLUSTER, LISTENER, ROUTE)
    assert cds.node.id == NODE.id and not lds.HasField("node")
    assert not cds.resource_names_subscribe and dict(lds.initial_resource_versions) == {"a": "l-7"}
    assert list(rds.resource_names_subscribe) == ["9080"] and dict(rds.initial_resource_versions) == {"9080": "r-3"}


def test_delta_answers_every_nonce_and_carries_subscription_changes_once() -> None:
    ads = DeltaAdsProtocol(NODE)
    ads.connected({})
    requests = ads.answer({LISTENER: [("1", ""), ("2", "Listener a: freebind: not supported")]},
                          {ROUTE: frozenset({"9080"}), EXTENSION: frozenset()})
    assert [(r.type_url, r.response_nonce, r.error_detail.message, list(r.resource_names_subscribe))
            for r in requests] == [(LISTENER, "1", "", []), (LISTENER, "2", "Listener a: freebind: not supported", []),
                                   (ROUTE, "", "", ["9080"])]
    assert requests[1].error_detail.code == INVALID_ARGUMENT
    [changed] = ads.answer({ROUTE: [("3", "")]}, {ROUTE: frozenset({"7070"})})
    assert (changed.response_nonce, list(changed.resource_names_subscribe),
            list(changed.resource_names_unsubscribe)) == ("3", ["7070"], ["9080"])
    assert ads.answer({}, {ROUTE: frozenset({"7070"})}) == []


def test_delta_responses_decode_with_per_resource_versions_and_removals() -> None:
    from envoy.service.discovery.v3 import discovery_pb2
    from google.protobuf import any_pb2

    from tests.wasmhost.sidecar._xds import listener

    packed = any_pb2.Any()
    packed.Pack(listener("a", 1))
    response = discovery_pb2.DeltaDiscoveryResponse(
        type_url=LISTENER, nonce="4", system_version_info="sys", removed_resources=["gone"],
        resources=[discovery_pb2.Resource(name="a", version="va", resource=packed),
                   discovery_pb2.Resource(name="b", version="vb", resource=packed)])
    resources, removed, errors = decode_delta(response)
    assert {n: r.version for n, r in resources.items()} == {"a": "va"} and removed == {"gone"}
    assert errors == ["resources[1]: named 'b' but the Listener is named 'a'"]
