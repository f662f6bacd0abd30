"""Conformance: AssemblyScript plugins (``@solo-io/proxy-runtime`` 0.1.8, built by asc 0.14).

The SDK finds its root factory through ``plugin_root_id`` in ``on_context_create``, reads its
configuration through the buffer API, logs at debug in nearly every callback and imports
``wasi_unstable.proc_exit``; ``as_http_call`` is covered with the callouts.
"""

from __future__ import annotations

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import AbiVersion


def plugin_lines(result: dict) -> list[dict[str, str]]:
    return [e for e in result["logs"] if e["level"] != "debug"]


def test_add_header_from_configuration_under_either_root_id() -> None:
    for root_id in ("", "as_add_header"):
        with ConformanceHost(
            plugin_path("as_add_header"), root_id=root_id, configuration="from config"
        ) as host:
            assert host.plugin.compiled.abi is AbiVersion.V0_2_0
            result = host.request()
            assert result["response"]["headers"][-2:] == [
                ["x-as-config", "from config"],
                ["x-as-sdk", "proxy-runtime"],
            ]
            assert any(e["level"] == "debug" for e in result["logs"])  # the SDK's own tracing
            assert result["trap"] is None


def test_add_header_without_configuration() -> None:
    with ConformanceHost(plugin_path("as_add_header")) as host:
        assert ["x-as-config", "<empty>"] in host.request()["response"]["headers"]


def test_deny_answers_locally_and_allow_adds_a_header() -> None:
    with ConformanceHost(plugin_path("as_deny")) as host:
        denied = host.request(headers=[("x-deny", "nope")])
        assert denied["upstream_request"] is None
        assert denied["response"] == {
            "status": 403,
            "headers": [["x-denied-by", "as_deny"], ["content-length", "24"], ["content-type", "text/plain"]],
            "body": "denied by as_deny: nope\n",
        }
        allowed = host.request(headers=[("x-deny", "")])  # empty = absent for this SDK
        assert ["x-as-deny", "allowed"] in allowed["upstream_request"]["headers"]
        assert plugin_lines(allowed) == []
