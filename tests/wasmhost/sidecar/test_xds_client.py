"""The sidecar's ADS client end to end in one process: the wire protocol against a scripted ADS
server (a fake that records requests verbatim), and traffic driven by the real control plane.

Traffic goes through real sockets to a scripted loopback upstream; plugins are the repository's
conformance plugins built from source.
"""

from __future__ import annotations

import http.client
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane._bootstrap import BootstrapOptions, bootstrap
from tests._tools import plugin_path
from tests.controlplane._running import RunningControlPlane, wait_for
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._xds import (
    assignment,
    ecds_filter,
    eds_cluster,
    listener,
    response,
    route_config,
    static_bootstrap,
    wasm_extension,
)
from tests.wasmhost.sidecar._xds_peers import InProcessSidecar, ScriptedAdsServer
from wasmhost.sidecar import _wasm_host as wasm_host_module
from wasmhost.sidecar import _wasm_module as wasm_modules
from wasmhost.sidecar._admin import _config_dump
from wasmhost.sidecar._xds_resources import CLUSTER, ENDPOINT, EXTENSION, LISTENER, ROUTE


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("WASMESH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(wasm_host_module, "_HOST", None)
    monkeypatch.setattr(wasm_modules, "_AGENT", None)
    yield
    host = wasm_host_module._HOST
    if host is not None:
        host.runtime.close()


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream(200, (("x-backend", "b"),), "hello").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ads() -> Iterator[ScriptedAdsServer]:
    server = ScriptedAdsServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sidecar(ads: ScriptedAdsServer, tmp_path: Path) -> Iterator[InProcessSidecar]:
    running = InProcessSidecar(static_bootstrap(xds_port=ads.port), tmp_path / "sidecar").start()
    try:
        yield running
    finally:
        running.stop()


def get(port: int, path: str = "/", host: str = "reviews") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"host": host})
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def acked(ads: ScriptedAdsServer, type_url: str, nonce: str) -> Any:
    return ads.wait_for(lambda: next((r for r in ads.of_type(type_url) if r.response_nonce == nonce), None),
                        what=f"an answer to {type_url} nonce {nonce}")


def serve_mesh(ads: ScriptedAdsServer, upstream: ScriptedUpstream) -> None:
    """CDS and LDS, then (once subscribed) EDS, RDS and a Wasm plugin over ECDS."""
    ads.wait_for(lambda: ads.of_type(LISTENER), what="the LDS subscription")
    ads.send(response(CLUSTER, "c1", "1", eds_cluster("backend")),
             response(LISTENER, "l1", "2", listener("out", 0, route="9080", filters=[ecds_filter("default.p")])))
    acked(ads, LISTENER, "2")
    ads.wait_for(lambda: any(list(r.resource_names) == ["default.p"] for r in ads.of_type(EXTENSION)),
                 what="the ECDS subscription")
    ads.send(response(ENDPOINT, "e1", "3", assignment("backend", upstream.port)),
             response(ROUTE, "r1", "4", route_config("9080", "backend")),
             response(EXTENSION, "x1", "5", wasm_extension("default.p", plugin_path("headers"))))
    acked(ads, EXTENSION, "5")


def test_the_node_identity_and_subscriptions_reach_the_control_plane(ads: ScriptedAdsServer,
                                                                     sidecar: InProcessSidecar) -> None:
    ads.wait_for(lambda: len(ads.requests) >= 2, what="the first requests")
    cds, lds = ads.requests[:2]
    assert (cds.type_url, lds.type_url) == (CLUSTER, LISTENER)
    assert cds.node.id == "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local"
    assert cds.node.metadata["NAME"] == "productpage" and cds.node.metadata["LABELS"]["app"] == "productpage"
    assert cds.node.user_agent_name == "wasmesh-sidecar"
    assert not lds.HasField("node")  # set_node_on_first_message_only
    assert sidecar.sidecar.state == "PRE_INITIALIZING"  # no listeners and clusters yet


def test_acks_then_a_nack_naming_the_resource_while_the_last_good_plugin_serves(
        ads: ScriptedAdsServer, sidecar: InProcessSidecar, upstream: ScriptedUpstream) -> None:
    serve_mesh(ads, upstream)
    cds_ack = acked(ads, CLUSTER, "1")
    assert cds_ack.version_info == "c1" and not cds_ack.HasField("error_detail")
    eds = ads.wait_for(lambda: [r for r in ads.of_type(ENDPOINT) if r.resource_names], what="EDS subscription")[0]
    assert list(eds.resource_names) == ["backend"]
    assert sidecar.sidecar.state == "LIVE"
    port = sidecar.port("out")
    status, headers, body = get(port, "/first")
    assert (status, body, headers["x-echo-path"], headers["x-backend"]) == (200, b"hello", "/first", "b")

    ads.send(response(EXTENSION, "x2", "6", wasm_extension("default.p", plugin_path("no_abi_marker"))))
    nack = acked(ads, EXTENSION, "6")
    assert nack.version_info == "x1" and nack.error_detail.code == 3
    assert nack.error_detail.message.startswith(
        "TypedExtensionConfig default.p: typed_config.config.vm_config.code: module ")
    assert "ABI version" in nack.error_detail.message
    assert get(port, "/second")[1]["x-echo-path"] == "/second"  # the last good version serves

    ads.send(response(EXTENSION, "x3", "7", wasm_extension("default.p", plugin_path("as_add_header"),
                                                           '{"a":1}')))
    assert not acked(ads, EXTENSION, "7").HasField("error_detail")
    headers = get(port)[1]
    assert headers["x-as-config"] == '{"a":1}' and "x-echo-path" not in headers


def test_a_burst_of_responses_is_one_rebuild_answered_once(ads: ScriptedAdsServer, sidecar: InProcessSidecar,
                                                          upstream: ScriptedUpstream) -> None:
    serve_mesh(ads, upstream)
    client = sidecar.sidecar.xds
    assert client is not None
    client.debounce = 0.5  # the whole burst lands inside one window, however slow the machine
    before = sidecar.run(lambda: client.updates)
    for index in range(5):
        ads.send(response(ROUTE, f"r{index + 2}", f"burst{index}", route_config(
            "9080", "backend", prefix_rewrite=f"/v{index}/")))
    ack = acked(ads, ROUTE, "burst4")
    assert ack.version_info == "r6" and not ack.HasField("error_detail")
    assert sidecar.run(lambda: client.updates) == before + 1
    assert [r.response_nonce for r in ads.of_type(ROUTE) if r.response_nonce.startswith("burst")] == ["burst4"]
    upstream.clear()
    get(sidecar.port("out"), "/x")
    assert upstream.requests[-1].path == "/v4/x"


def test_a_new_stream_starts_over_with_the_versions_held_and_traffic_never_stops(
        ads: ScriptedAdsServer, sidecar: InProcessSidecar, upstream: ScriptedUpstream) -> None:
    serve_mesh(ads, upstream)
    port = sidecar.port("out")
    seen = len(ads.requests)
    ads.end_stream()
    ads.wait_for(lambda: ads.streams == 2 and len(ads.requests) >= seen + 5, what="a second stream")
    again = ads.requests[seen:seen + 5]
    assert [(r.type_url, r.version_info, r.response_nonce) for r in again] == [
        (CLUSTER, "c1", ""), (LISTENER, "l1", ""), (ENDPOINT, "e1", ""), (ROUTE, "r1", ""), (EXTENSION, "x1", "")]
    assert again[0].node.id and list(again[4].resource_names) == ["default.p"]
    assert get(port)[0] == 200


# --- driven by the real control plane ------------------------------------------------------------


def write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.tmp").write_text(textwrap.dedent(text))
    (folder / f"{name}.tmp").replace(folder / name)


def test_control_plane_edits_reach_traffic_and_every_type_is_synced(tmp_path: Path) -> None:
    v1 = ScriptedUpstream(200, (("x-version", "v1"),), "v1").start()
    v2 = ScriptedUpstream(200, (("x-version", "v2"),), "v2").start()
    folder = tmp_path / "config"
    folder.mkdir()
    write(folder, "reviews.yaml", f"""\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {{name: reviews}}
        spec:
          hosts: [reviews.default.svc.cluster.local]
          ports: [{{number: 9080, name: http, protocol: HTTP}}]
          resolution: STATIC
          endpoints:
          - {{address: 127.0.0.1, ports: {{http: {v1.port}}}, labels: {{version: v1}}}}
          - {{address: 127.0.0.1, ports: {{http: {v2.port}}}, labels: {{version: v2}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: reviews}}
        spec:
          host: reviews
          subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
        """)
    vs = """\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http: [{route: [{destination: {host: reviews, subset: SUBSET}}]}]
        """
    write(folder, "vs.yaml", vs.replace("SUBSET", "v1"))
    plane = RunningControlPlane(folder).start()
    sidecar: InProcessSidecar | None = None
    try:
        host, port = plane.xds_address.rsplit(":", 1)
        options = BootstrapOptions(name="productpage", labels={"app": "productpage"}, ports=[9080],
                                   xds_host=host, xds_port=int(port), admin_port=0, outbound_ports={9080: 0})
        sidecar = InProcessSidecar(bootstrap(options), tmp_path / "sidecar").start()
        wait_for(lambda: sidecar.sidecar.state == "LIVE", 10, what="LIVE")
        listener_port = wait_for(lambda: sidecar.port("0.0.0.0_9080"), 10, what="the outbound listener")
        wait_for(lambda: get(listener_port)[1].get("x-version") == "v1", 10, what="v1 answers")
        write(folder, "vs.yaml", vs.replace("SUBSET", "v2"))
        wait_for(lambda: get(listener_port)[1].get("x-version") == "v2", 10, what="the edit reaches traffic")

        def statuses() -> dict[str, Any]:
            [proxy] = plane.api("GET", "/api/v1/proxies")[1]["proxies"]
            return dict(proxy["types"])

        wait_for(lambda: all(v["status"] == "SYNCED" for v in statuses().values()), 10, what="every type SYNCED")
        types = statuses()
        assert set(types) == {"CDS", "EDS", "LDS", "RDS"}
        [proxy] = plane.api("GET", "/api/v1/proxies")[1]["proxies"]
        assert (proxy["name"], proxy["namespace"]) == ("productpage", "default")
        dump = sidecar.run(lambda: json.loads(json.dumps(_config_dump(sidecar.sidecar.plan()))))
        by_type = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
        assert by_type["ListenersConfigDump"]["version_info"] == types["LDS"]["acked"]
        assert by_type["ClustersConfigDump"]["version_info"] == types["CDS"]["acked"]
        [route] = by_type["RoutesConfigDump"]["dynamic_route_configs"]
        assert route["version_info"] == types["RDS"]["acked"] and route["route_config"]["name"] == "9080"
        [active] = by_type["ListenersConfigDump"]["dynamic_listeners"]
        assert active["name"] == "0.0.0.0_9080" and "active_state" in active and "warming_state" not in active
    finally:
        if sidecar is not None:
            sidecar.stop()
        plane.stop()
        v1.stop()
        v2.stop()


# --- SDS -----------------------------------------------------------------------------------------


def _secret(name: str, **fields: Any) -> Any:
    from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
    from google.protobuf import json_format

    return json_format.ParseDict({"name": name, **fields}, secret_pb2.Secret())


def _certificate_secret(leaf: Any) -> Any:
    return _secret("default", tls_certificate={"certificate_chain": {"inline_bytes": _b64(leaf.cert)},
                                               "private_key": {"inline_bytes": _b64(leaf.key)}})


def _root_secret(ca: Path) -> Any:
    return _secret("ROOTCA", validation_context={"trusted_ca": {"inline_bytes": _b64(ca)}})


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()


def _tls_get(port: int, pki: Any) -> int:
    import ssl

    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        connection.request("GET", "/", headers={"host": "reviews"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_tls_secrets_arrive_over_sds_and_rotate(ads: ScriptedAdsServer, sidecar: InProcessSidecar,
                                                tmp_path: Path) -> None:
    import ssl

    from envoy.config.listener.v3 import listener_pb2
    from google.protobuf import json_format

    from tests.wasmhost.sidecar._certs import make_pki
    from wasmhost.sidecar._xds_resources import SECRET

    first, second = make_pki(tmp_path / "pki1"), make_pki(tmp_path / "pki2")
    sds = {"sds_config": {"ads": {}, "resource_api_version": "V3"}}
    secure = json_format.MessageToDict(listener("secure", 0), preserving_proto_field_name=True)
    secure["filter_chains"][0]["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "default", **sds}],
            "combined_validation_context": {
                "default_validation_context": {"match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"exact": "spiffe://test/ns/default/sa/client"}}]},
                "validation_context_sds_secret_config": {"name": "ROOTCA", **sds}}}}}
    ads.wait_for(lambda: ads.of_type(LISTENER), what="the LDS subscription")
    ads.send(response(LISTENER, "l1", "1", json_format.ParseDict(secure, listener_pb2.Listener())))
    acked(ads, LISTENER, "1")
    subscription = ads.wait_for(lambda: [r for r in ads.of_type(SECRET) if r.resource_names], what="SDS")[0]
    assert list(subscription.resource_names) == ["ROOTCA", "default"]
    worker = sidecar.sidecar.worker
    assert worker is not None and sidecar.run(worker.bound_ports) == {}  # warming: no certificate yet

    ads.send(response(SECRET, "s1", "2", _certificate_secret(first.server), _root_secret(first.ca)))
    assert not acked(ads, SECRET, "2").HasField("error_detail")
    port = wait_for(lambda: sidecar.port("secure"), 10, what="the listener serves")
    assert _tls_get(port, first) == 200

    ads.send(response(SECRET, "s2", "3", _certificate_secret(second.server), _root_secret(second.ca)))
    assert not acked(ads, SECRET, "3").HasField("error_detail")
    assert wait_for(lambda: _tls_get(sidecar.port("secure"), second) == 200, 10, what="rotated certificate")
    with pytest.raises(ssl.SSLError):
        _tls_get(sidecar.port("secure"), first)  # the old CA no longer verifies the server

    dump = sidecar.run(lambda: json.loads(json.dumps(_config_dump(sidecar.sidecar.plan()))))
    [secrets] = [c for c in dump["configs"] if c["@type"].endswith("SecretsConfigDump")]
    default = next(s for s in secrets["dynamic_active_secrets"] if s["name"] == "default")
    assert default["version_info"] == "s2"
    assert default["secret"]["tls_certificate"]["private_key"] == {"inline_string": "[redacted]"}


def test_an_initial_fetch_timeout_ends_warming_but_0s_waits_for_ever(ads: ScriptedAdsServer,
                                                                     sidecar: InProcessSidecar) -> None:
    from envoy.config.listener.v3 import listener_pb2
    from google.protobuf import json_format

    impatient = json_format.MessageToDict(listener("impatient", 0, route="never"), preserving_proto_field_name=True)
    hcm = impatient["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["rds"]["config_source"]["initial_fetch_timeout"] = "0.3s"
    patient = listener("patient", 0, filters=[ecds_filter("default.never")])  # istiod's 0s: wait for ever
    ads.wait_for(lambda: ads.of_type(LISTENER), what="the LDS subscription")
    ads.send(response(LISTENER, "l1", "1", json_format.ParseDict(impatient, listener_pb2.Listener()), patient))
    acked(ads, LISTENER, "1")
    port = wait_for(lambda: sidecar.port("impatient"), 5, what="the listener serves after its timeout")
    assert get(port)[0] == 404  # an empty route configuration, as Envoy serves after the timeout
    worker = sidecar.sidecar.worker
    assert worker is not None and "patient" not in sidecar.run(worker.bound_ports)
    warming = sidecar.run(lambda: dict(sidecar.sidecar.xds.state.warming))  # type: ignore[union-attr]
    assert warming == {(LISTENER, "patient"): "TypedExtensionConfig default.never"}
    ads.send(response(ROUTE, "r1", "2", route_config("never", "nowhere")))
    acked(ads, ROUTE, "2")
    assert wait_for(lambda: get(sidecar.port("impatient"))[0] == 503, 5, what="the late route applies")  # NC


def test_a_listener_that_cannot_bind_is_nacked_and_the_others_serve(ads: ScriptedAdsServer,
                                                                     sidecar: InProcessSidecar) -> None:
    import socket

    occupied = socket.socket()
    occupied.bind(("127.0.0.1", 0))
    occupied.listen()
    try:
        taken = occupied.getsockname()[1]
        ads.wait_for(lambda: ads.of_type(LISTENER), what="the LDS subscription")
        ads.send(response(LISTENER, "l1", "1", listener("good", 0), listener("taken", taken)))
        nack = acked(ads, LISTENER, "1")
        assert nack.version_info == "" and nack.error_detail.message.startswith(
            f"Listener taken: address: listener 'taken' cannot bind 127.0.0.1:{taken}: ")
        assert get(sidecar.port("good"))[0] == 200  # the direct response of the good listener
        worker = sidecar.sidecar.worker
        assert worker is not None and set(sidecar.run(worker.bound_ports)) == {"good"}
    finally:
        occupied.close()
