"""Conformance: ``properties`` (C) — ``proxy_get_property`` / ``proxy_set_property``.

Values use Envoy's encodings: strings raw, integers 8-byte little-endian, booleans one byte,
timestamps int64 nanoseconds, maps as pairs. Configuration attributes live under ``xds.*``
only (Envoy 1.40); a value set with ``proxy_set_property`` under a two-component path is not
readable back (Envoy reads filter state by the first component); a trailing NUL is accepted.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import StreamInfo, decode_pairs

INFO = StreamInfo(
    source_address="10.0.0.1",
    source_port=5000,
    destination_address="10.0.0.2",
    destination_port=8080,
    connection_id=42,
    cluster_name="backend",
    listener_direction=1,
    mtls=True,
)


def u64(value: int) -> str:
    return "hex:" + struct.pack("<Q", value).hex()


@pytest.fixture(scope="module")
def props() -> Iterator[dict[str, str]]:
    with ConformanceHost(
        plugin_path("properties"), name="props", root_id="rid", vm_id="vmid", info=INFO
    ) as host:
        assert host.startup_logs == [
            {
                "level": "info",
                "message": "properties: root plugin_name=props plugin_root_id=rid plugin_vm_id=vmid",
            }
        ]
        before = time.time_ns()
        result = host.request(path="/a/b?c=d", headers=[("x-request-id", "abc-123")])
        values = {
            k.removeprefix("x-prop-"): v for k, v in result["response"]["headers"] if k.startswith("x-prop-")
        }
        values["_before"] = str(before)
        yield values


def test_request_attributes(props: dict[str, str]) -> None:
    assert props["request-path"] == "text:/a/b?c=d"
    assert props["request-url_path"] == "text:/a/b"
    assert props["request-host"] == "text:example.com"
    assert props["request-scheme"] == "text:http"
    assert props["request-method"] == "text:GET"
    assert props["request-protocol"] == "text:HTTP/1.1"
    assert props["request-id"] == "text:abc-123"


def test_request_time_is_a_nanosecond_timestamp(props: dict[str, str]) -> None:
    (stamp,) = struct.unpack("<q", bytes.fromhex(props["request-time"].removeprefix("hex:")))
    assert int(props["_before"]) <= stamp <= time.time_ns()


def test_request_headers_is_a_pairs_map(props: dict[str, str]) -> None:
    raw = bytes.fromhex(props["request-headers"].removeprefix("hex:"))
    pairs = decode_pairs(raw, max_bytes=1 << 20, max_count=100)
    assert pairs is not None and (b"x-request-id", b"abc-123") in pairs and (b":path", b"/a/b?c=d") in pairs


def test_connection_and_address_attributes(props: dict[str, str]) -> None:
    assert props["source-address"] == "text:10.0.0.1:5000"
    assert props["source-port"] == u64(5000)
    assert props["destination-address"] == "text:10.0.0.2:8080"
    assert props["destination-port"] == u64(8080)
    assert props["connection-id"] == props["connection_id"] == u64(42)
    assert props["connection-mtls"] == "hex:01"


def test_plugin_and_xds_attributes(props: dict[str, str]) -> None:
    assert (props["plugin_name"], props["plugin_root_id"], props["plugin_vm_id"]) == (
        "text:props",
        "text:rid",
        "text:vmid",
    )
    assert props["xds-cluster_name"] == "text:backend"
    assert props["xds-listener_direction"] == u64(1)
    assert props["xds-node-id"] == "hex:"  # a Node field that is not set reads as empty
    assert (
        props["cluster_name"] == props["listener_direction"] == "status=1"
    )  # only under xds.* in Envoy 1.40


def test_set_property_and_readback_rules(props: dict[str, str]) -> None:
    assert props["set-status"] == "0"
    assert props["set-readback"] == "status=1"
    assert props["trailing-nul"] == "text:rid"


def test_single_component_set_property_reads_back() -> None:
    from wasmhost._properties import get_property, set_property

    with ConformanceHost(plugin_path("properties")) as host:
        vm = host.plugin.vm
        assert vm is not None
        stream = host.plugin.new_http_stream()
        stream.on_request_headers([(b":path", b"/")], True)
        memory = vm.memory
        memory.write(0x100, b"my_key")
        memory.write(0x110, b"value")
        vm.current = stream.ctx
        try:
            assert set_property(vm, 0x100, 6, 0x110, 5) == 0
            assert get_property(vm, 0x100, 6, 0x200, 0x204) == 0
            ptr, size = memory.read_u32(0x200), memory.read_u32(0x204)
            assert ptr is not None and size == 5 and memory.read(ptr, size) == b"value"
        finally:
            vm.current = None
        stream.finish()
        host.environment.take()
