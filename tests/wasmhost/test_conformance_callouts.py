"""Conformance: HTTP callouts — ``http_call`` (C) and ``as_http_call`` (AssemblyScript).

A request pauses while the plugin's callout is in flight; the answer is delivered to the
root that issued it (token numbered as Envoy does: 4, 8, ...), the plugin reads the callout's
headers, body and trailers (maps 6/7, buffer 4) and ``proxy_get_status``, switches to the
stream with ``proxy_set_effective_context`` and resumes it. A failed callout arrives with no
headers and status 11 ``reset``. An unknown cluster fails the dispatch with BAD_ARGUMENT.
"""

from __future__ import annotations

import pytest

from tests._tools import plugin_path
from tests.wasmhost._conformance import ConformanceHost
from wasmhost import DispatchHttpCall

CALLOUT_HEADERS = [
    [":method", "GET"],
    [":path", "/callout"],
    [":authority", "authz"],
    ["x-callout-from", "wasm"],
]


def added(result: dict, prefix: str) -> dict[str, str]:
    return {k: v for k, v in result["upstream_request"]["headers"] if k.startswith(prefix)}


def test_request_resumes_with_what_the_callout_answered() -> None:
    with ConformanceHost(
        plugin_path("http_call"), configuration=" authz\n", callouts={"authz": (200, "yes\r\nand more")}
    ) as host:
        result = host.request(path="/orig", method="POST", body="client body")
        assert result["callouts"] == [{"cluster": "authz", "headers": CALLOUT_HEADERS, "body": "ping"}]
        assert added(result, "x-callout") == {
            "x-callout-status": "200",
            "x-callout-body": "yes  and more",
            "x-callout-header-count": "3",
            "x-callout-trailer-count": "0",
            "x-callout-get-status": "0",
        }
        assert result["upstream_request"]["body"] == "client body"
        assert result["logs"] == [
            {"level": "info", "message": "http_call: dispatched token=4 ctx=2"},
            {"level": "info", "message": "http_call: response token=4 headers=3 body=13 trailers=0 status=0"},
        ]
        second = host.request()
        assert second["logs"][0]["message"] == "http_call: dispatched token=8 ctx=3"


def test_callout_answer_status_is_passed_on_not_judged() -> None:
    with ConformanceHost(
        plugin_path("http_call"), configuration="authz", callouts={"authz": (503, "")}
    ) as host:
        assert added(host.request(), "x-callout-status") == {"x-callout-status": "503"}


def test_failed_callout_gets_status_11_reset_and_the_plugins_503() -> None:
    with ConformanceHost(
        plugin_path("http_call"), configuration="authz", callouts={"authz": (200, "")}
    ) as host:
        host.callout_answers.clear()  # the cluster exists but nothing answers: the call is reset
        result = host.request()
        assert result["upstream_request"] is None
        assert result["response"]["status"] == 503
        assert result["response"]["body"] == "callout failed: 11 reset\n"
        assert ["x-callout-failed", "1"] in result["response"]["headers"]


def test_unknown_cluster_fails_the_dispatch_with_bad_argument() -> None:
    with ConformanceHost(plugin_path("http_call"), configuration="nowhere") as host:
        result = host.request()
        assert result["callouts"] == []
        assert (result["response"]["status"], result["response"]["body"]) == (500, "dispatch failed: 2\n")


def test_empty_configuration_is_rejected() -> None:
    from wasmhost import PluginStartError

    with pytest.raises(PluginStartError, match="rejected the configuration"):
        with ConformanceHost(plugin_path("http_call")):
            pass


def test_the_dispatch_is_a_command_carried_out_after_the_callback() -> None:
    with ConformanceHost(
        plugin_path("http_call"), configuration="authz", callouts={"authz": (200, "")}
    ) as host:
        stream = host.plugin.new_http_stream()
        stream.on_request_headers([(b":path", b"/")], True)
        [call] = [c for c in host.runtime.take_commands() if isinstance(c, DispatchHttpCall)]
        assert (call.cluster, call.token, call.body, call.timeout_ms, call.trailers) == (
            "authz",
            4,
            b"ping",
            5000,
            [],
        )
        assert call.root is host.plugin.root
        host.plugin.on_http_call_response(call.token, [(b":status", b"204")], b"", [(b"t", b"1")])
        assert (b"x-callout-trailer-count", b"1") in stream.request_headers  # type: ignore[operator]
        stream.finish()
        host.runtime.take_commands()


@pytest.mark.parametrize(
    ("status", "expected_status", "expected_header"),
    [(200, 200, ["x-as-callout", "ok"]), (403, 403, ["x-as-callout", "denied"])],
)
def test_assemblyscript_authorisation_callout(
    status: int, expected_status: int, expected_header: list[str]
) -> None:
    with ConformanceHost(plugin_path("as_http_call"), callouts={"auth": (status, "")}) as host:
        result = host.request(path="/p?x=1")
        assert result["callouts"][0]["headers"] == [
            [":method", "GET"], [":path", "/auth"], [":authority", "auth"], ["x-as-original-path", "/p?x=1"],
        ]  # fmt: skip
        assert result["response"]["status"] == expected_status
        if status == 200:
            assert expected_header in result["upstream_request"]["headers"]
        else:
            assert result["upstream_request"] is None
            assert expected_header in result["response"]["headers"]
            assert result["response"]["body"] == "denied by callout: 403\n"


def test_assemblyscript_callout_cluster_from_configuration() -> None:
    with ConformanceHost(
        plugin_path("as_http_call"), configuration="ext", callouts={"ext": (200, "")}
    ) as host:
        assert host.request()["callouts"][0]["cluster"] == "ext"
