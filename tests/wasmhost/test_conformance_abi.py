"""Conformance: ABI versions — ``abi010_headers`` (0.1.0), ``abi020_headers`` (0.2.0) and the
TinyGo-shaped ``go_style_allocator`` (0.2.0, ``_start``, ``proxy_on_memory_allocate`` only).

The ABI is picked from the marker export: 0.1.0 gets 2-argument header callbacks,
``proxy_get_configuration``, ``proxy_continue_request/response``, ``proxy_clear_route_cache``
and OK-with-empty for a missing header; 0.2.x gets 3-argument header callbacks and NOT_FOUND.
"""

from __future__ import annotations

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import AbiVersion


def test_abi_010_configuration_route_cache_and_missing_header() -> None:
    with ConformanceHost(plugin_path("abi010_headers"), configuration="cfg-010") as host:
        assert host.plugin.compiled.abi is AbiVersion.V0_1_0
        assert host.startup_logs == [
            {"level": "info", "message": "abi010: configure config=cfg-010 status=0"}
        ]
        result = host.request(response_headers=[("x-up", "1")])
        headers = result["upstream_request"]["headers"]
        assert ["x-abi010", "cfg-010"] in headers
        assert ["x-clear-route-cache-status", "0"] in headers
        assert host.route_cache_clears == 1
        response = dict(result["response"]["headers"])
        assert response["x-abi010-num-headers"] == "3"  # two callback arguments: n is still passed
        assert response["x-abi010-absent"] == "status=0 len=0"


def test_abi_010_continue_request_and_response_from_a_tick() -> None:
    with ConformanceHost(plugin_path("abi010_headers"), configuration="c") as host:
        paused = host.request(headers=[("x-pause", "1")])
        assert ["x-resumed-by", "continue_request"] in paused["upstream_request"]["headers"]
        paused_response = host.request(headers=[("x-pause-response", "1")], response_body="b")
        assert ["x-resumed-by", "continue_response"] in paused_response["response"]["headers"]
        assert paused_response["response"]["body"] == "b"


def test_abi_010_body_callbacks_keep_three_arguments() -> None:
    with ConformanceHost(plugin_path("abi010_headers"), configuration="c") as host:
        result = host.request(method="POST", body="payload")
        assert result["upstream_request"]["body"] == "payload" and result["trap"] is None


def test_abi_020_three_argument_headers_and_not_found() -> None:
    with ConformanceHost(plugin_path("abi020_headers")) as host:
        assert host.plugin.compiled.abi is AbiVersion.V0_2_0
        result = host.request(method="POST", body="x")
        assert ["x-abi", "0.2.0"] in result["upstream_request"]["headers"]
        response = dict(result["response"]["headers"])
        assert response["x-abi"] == "0.2.0"
        assert response["x-abi020-request"] == "n=6 eos=0"
        assert response["x-abi020-absent-status"] == "1"
        assert dict(host.request()["response"]["headers"])["x-abi020-request"] == "n=5 eos=1"


def test_go_shaped_module_starts_with_start_and_allocates_through_proxy_on_memory_allocate() -> None:
    with ConformanceHost(plugin_path("go_style_allocator")) as host:
        assert host.plugin.compiled.abi is AbiVersion.V0_2_0
        headers = host.request(path="/go/path")["upstream_request"]["headers"]
        assert ["x-go-style-path", "/go/path"] in headers
        assert ["x-go-style-started", "1"] in headers
