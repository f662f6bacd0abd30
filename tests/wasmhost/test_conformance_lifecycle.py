"""Conformance: ``lifecycle`` (C) — every context callback, in Envoy's order.

The plugin logs each callback it receives. Through the host: root creation, ``on_vm_start``
with the VM configuration, ``on_configure`` with the plugin configuration, a lazily created
stream context, request/response callbacks with Envoy's arguments, ``on_log``, ``on_done``,
``on_delete``; at shutdown ``on_done`` on the root returns false, the plugin finishes on its
next tick with ``proxy_done`` and only then is ``on_delete`` called. Both allocators are
exported; the host uses ``malloc`` first, as cpp-host does.
"""

from __future__ import annotations

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import PluginStartError


def lines(logs: list[dict[str, str]]) -> list[str]:
    return [entry["message"].removeprefix("lifecycle: ") for entry in logs]


def test_start_runs_create_vm_start_and_configure_with_both_configurations() -> None:
    with ConformanceHost(
        plugin_path("lifecycle"), configuration="plugin-cfg", vm_configuration="vm-cfg"
    ) as host:
        assert lines(host.startup_logs) == [
            "on_context_create ctx=1 parent=0",
            "on_vm_start root=1 size=6 vm_config=vm-cfg",
            "on_configure root=1 size=10 config=plugin-cfg",
        ]


def test_validate_configuration_is_not_called_as_in_envoys_http_filter() -> None:
    """Envoy never calls proxy_validate_configuration; "invalid" is therefore accepted."""
    with ConformanceHost(plugin_path("lifecycle"), configuration="invalid") as host:
        assert not any("validate_configuration" in line for line in lines(host.startup_logs))
        assert host.request()["response"]["status"] == 200


def test_a_request_with_bodies_sees_every_stream_callback_in_order() -> None:
    with ConformanceHost(plugin_path("lifecycle")) as host:
        result = host.request(method="POST", headers=[("x-a", "1")], body="abc", response_body="hello")
        assert lines(result["logs"]) == [
            "on_context_create ctx=2 parent=1",
            "on_request_headers ctx=2 n=7 eos=0",
            "on_request_body ctx=2 size=3 eos=0",
            "on_request_body ctx=2 size=0 eos=1",
            "on_response_headers ctx=2 n=2 eos=0",
            "on_response_body ctx=2 size=5 eos=0",
            "on_response_body ctx=2 size=0 eos=1",
            "on_log ctx=2",
            "on_done ctx=2 root=0",
            "on_delete ctx=2",
        ]
        # context ids are per VM and never reused
        assert lines(host.request()["logs"])[0] == "on_context_create ctx=3 parent=1"


def test_trailers_and_metadata_callbacks() -> None:
    with ConformanceHost(plugin_path("lifecycle")) as host:
        stream = host.plugin.new_http_stream()
        stream.on_request_headers([(b":path", b"/")], False)
        stream.on_request_metadata(2)
        stream.on_request_trailers([(b"t", b"1")])
        stream.on_response_headers([(b":status", b"200")], False)
        stream.on_response_metadata(1)
        stream.on_response_trailers([(b"t", b"1"), (b"u", b"2")])
        stream.finish()
        assert lines(host.environment.take()) == [
            "on_context_create ctx=2 parent=1",
            "on_request_headers ctx=2 n=1 eos=0",
            "on_request_metadata ctx=2 n=2",
            "on_request_trailers ctx=2 n=1",
            "on_response_headers ctx=2 n=1 eos=0",
            "on_response_metadata ctx=2 n=1",
            "on_response_trailers ctx=2 n=2",
            "on_log ctx=2",
            "on_done ctx=2 root=0",
            "on_delete ctx=2",
        ]


def test_root_shutdown_waits_for_proxy_done_then_deletes() -> None:
    with ConformanceHost(plugin_path("lifecycle")) as host:
        root = host.plugin.root
        assert root is not None
        logs = lines(host.shutdown())
        assert logs == [
            "on_done ctx=1 root=1",
            "proxy_done root=1 status=0",
            "on_delete ctx=1",
        ]
        assert root.deleted


@pytest.mark.parametrize(
    ("configuration", "vm_configuration", "reason"),
    [("reject", "", "proxy_on_configure"), ("", "reject", "proxy_on_vm_start")],
)
def test_false_from_vm_start_or_configure_refuses_the_plugin(
    configuration: str, vm_configuration: str, reason: str
) -> None:
    with pytest.raises(PluginStartError, match=reason):
        with ConformanceHost(
            plugin_path("lifecycle"), configuration=configuration, vm_configuration=vm_configuration
        ):
            pass
