"""`wasmesh bootstrap` and the node identity it carries, read back as the control plane reads it."""

from __future__ import annotations

import json

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from controlplane._bootstrap import BootstrapOptions, bootstrap, grpc_bootstrap, parse_address
from controlplane._protos import from_dict
from controlplane._proxies import AppPort, NodeError, proxy_from_node
from controlplane.cli._controlplane import main as cli


def test_cli_bootstrap_is_an_envoy_bootstrap_that_identifies_the_workload(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["bootstrap", "--name", "reviews-v1", "--namespace", "shop", "--labels", "app=reviews,version=v1",
                "--port", "8080", "--xds", "127.0.0.1:15010", "--outbound", "9080=15001", "--inbound", "8080=15006",
                "--service-account", "bookinfo-reviews"])
    assert code == 0
    document = yaml.safe_load(capsys.readouterr().out)
    boot = from_dict(bootstrap_pb2.Bootstrap, document)  # Envoy's own schema accepts it
    assert boot.dynamic_resources.ads_config.api_type == 2  # GRPC
    assert boot.dynamic_resources.lds_config.HasField("ads") and boot.dynamic_resources.cds_config.HasField("ads")
    [xds] = boot.static_resources.clusters
    address = xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (xds.name, address.address, address.port_value) == ("xds-grpc", "127.0.0.1", 15010)
    proxy = proxy_from_node(boot.node)
    assert proxy.id == "sidecar~127.0.0.1~reviews-v1.shop~shop.svc.cluster.local"
    assert (proxy.name, proxy.namespace, proxy.service_account) == ("reviews-v1", "shop", "bookinfo-reviews")
    assert proxy.labels == {"app": "reviews", "version": "v1"}
    assert proxy.app_ports == (AppPort(8080, "http-8080", "TCP"),)
    assert proxy.outbound_ports == {9080: 15001} and proxy.inbound_ports == {8080: 15006}


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["bootstrap", "--name", "x", "--xds", "nohost"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert cli(["bootstrap", "--name", "x", "--labels", "novalue"]) == 2
    assert "--labels: expected key=value" in capsys.readouterr().err
    assert cli(["bootstrap", "--name", "x", "--outbound", "a=b"]) == 2


def test_grpc_bootstrap_shape() -> None:
    document = grpc_bootstrap(BootstrapOptions(name="c", xds_host="127.0.0.1", xds_port=1234))
    assert document["xds_servers"] == [{"server_uri": "127.0.0.1:1234", "channel_creds": [{"type": "insecure"}],
                                        "server_features": ["xds_v3"]}]
    assert document["node"]["metadata"]["GENERATOR"] == "grpc"
    json.dumps(document)


def test_parse_address() -> None:
    assert parse_address("[::1]:15010") == ("::1", 15010)
    assert parse_address("127.0.0.1:0", allow_any_port=True) == ("127.0.0.1", 0)
    with pytest.raises(ValueError):
        parse_address("127.0.0.1:0")
    with pytest.raises(ValueError):
        parse_address("127.0.0.1:70000")


@pytest.mark.parametrize(("metadata", "message"), [
    ({"LABELS": "app=x"}, "node.metadata.LABELS: expected a map of strings"),
    ({"POD_PORTS": "[{}]"}, "node.metadata.POD_PORTS[0].containerPort: required integer"),
    ({"POD_PORTS": '[{"containerPort": 99999}]'}, "out of range"),
    ({"OUTBOUND_PORTS": '{"x": 1}'}, "node.metadata.OUTBOUND_PORTS.x: ports must be integers"),
    ({"INBOUND_PORTS": "[1]"}, "node.metadata.INBOUND_PORTS: expected a map"),
])
def test_bad_node_metadata_names_the_field(metadata: dict[str, object], message: str) -> None:
    node = base_pb2.Node(id="sidecar~1.2.3.4~a.b~b.svc.cluster.local")
    json_format.ParseDict(metadata, node.metadata)
    with pytest.raises(NodeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        proxy_from_node(node)
    with pytest.raises(NodeError, match="node.id is required"):
        proxy_from_node(base_pb2.Node())


def test_plain_node_ids_still_identify_a_proxy() -> None:
    proxy = proxy_from_node(base_pb2.Node(id="just-a-name"))
    assert (proxy.name, proxy.namespace, proxy.address) == ("just-a-name", "default", "127.0.0.1")
    assert bootstrap(BootstrapOptions(name="n", xds_host="cp.local"))["static_resources"]["clusters"][0]["type"] == \
        "STRICT_DNS"
