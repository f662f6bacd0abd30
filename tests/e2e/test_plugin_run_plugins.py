"""The repository's conformance plugins (C with clang wasm32-wasi, AssemblyScript with
@solo-io/proxy-runtime, WAT) run through `wasmesh plugin run --json`, each checked against the
behaviour documented in the comment block at the top of its source (tests/data/plugins/)."""

from __future__ import annotations

from typing import Any

import pytest

from tests._tools import plugin_path
from tests.e2e.test_plugin_run_cli import fails_with_one_line, run_json

pytestmark = pytest.mark.e2e


def run_plugin(name: str, *flags: str) -> dict[str, Any]:
    return run_json(plugin_path(name), *flags)


def headers(message: dict[str, Any] | None) -> dict[str, str]:
    assert message is not None
    return {name: value for name, value in message["headers"]}


def messages(document: dict[str, Any]) -> list[str]:
    return [entry["message"] for entry in document["logs"]]


# -- C plugins ---------------------------------------------------------------------------------------

def test_local_reply_denies_with_its_headers_and_envoys_framing() -> None:
    document = run_plugin("local_reply", "-H", "x-deny: intruder")
    assert document["upstream_request"] is None
    assert document["response"] == {
        "status": 403,
        "headers": [
            ["x-denied-by", "local_reply"], ["content-type", "text/plain"], ["content-length", "24"],
            ["x-local-reply-checked", "1"],  # Envoy runs the plugin's response callback on its own reply
        ],
        "body": "access denied: intruder\n",
    }
    assert messages(document) == ["local_reply: denied status=0"]


def test_local_reply_lets_other_requests_through_unchanged() -> None:
    document = run_plugin("local_reply", "-H", "x-other: 1", "--response-body", "hello")
    assert headers(document["upstream_request"])["x-other"] == "1"
    assert "x-denied-by" not in headers(document["upstream_request"])
    assert headers(document["response"])["x-local-reply-checked"] == "1"
    assert document["response"]["body"] == "hello"


def test_headers_applies_configured_operations_and_reports_what_it_saw() -> None:
    config = "add request x-added one two\nremove request x-secret\nreplace response x-server wasm\nbogus line"
    document = run_plugin(
        "headers", "--config", config, "--path", "/items?id=3", "-H", "x-secret: s",
        "--response-header", "x-server: origin",
    )
    upstream = headers(document["upstream_request"])
    assert upstream["x-added"] == "one two"
    assert "x-secret" not in upstream
    response = headers(document["response"])
    assert response["x-server"] == "wasm"
    assert response["x-echo-path"] == "/items?id=3"
    assert response["x-request-header-count"] == "6"  # :authority :path :method :scheme x-secret x-forwarded-proto
    assert response["x-absent-status"] == "1"
    # pairs read back include :status (not shown to the client); x-pairs-roundtrip itself is added after
    assert int(response["x-pairs-roundtrip"]) == len(document["response"]["headers"])
    assert "headers: ignoring config line 4" in messages(document)


def test_body_upper_cases_the_request_and_appends_the_suffix_to_the_response() -> None:
    document = run_plugin("body", "--config", "<<end>>", "--method", "POST", "--body", "make me loud",
                          "--response-body", "quiet")
    assert document["upstream_request"]["body"] == "MAKE ME LOUD"
    assert "content-length" not in headers(document["upstream_request"])
    assert document["response"]["body"] == "quiet<<end>>"
    assert messages(document) == [
        "body: request size=12 status_size=12 flags=0 past_end_status=0 past_end_len=0",
        "body: response size=0 append_status=0",
    ]


def test_body_default_suffix() -> None:
    assert run_plugin("body", "--response-body", "x")["response"]["body"] == "x[body-plugin]"


def test_http_call_asks_the_cluster_then_forwards_with_its_answer() -> None:
    document = run_plugin("http_call", "--config", " authz ", "--callout", "authz=200:allowed")
    assert document["callouts"] == [
        {
            "cluster": "authz",
            "headers": [[":method", "GET"], [":path", "/callout"], [":authority", "authz"], ["x-callout-from", "wasm"]],
            "body": "ping",
        }
    ]
    upstream = headers(document["upstream_request"])
    assert upstream["x-callout-status"] == "200"
    assert upstream["x-callout-body"] == "allowed"
    assert upstream["x-callout-header-count"] == "3"  # :status, content-length, x-envoy-upstream-service-time
    assert upstream["x-callout-get-status"] == "0"


def test_http_call_to_a_cluster_that_does_not_exist_fails_dispatch() -> None:
    document = run_plugin("http_call", "--config", "missing")
    assert document["callouts"] == []
    assert document["response"]["status"] == 500
    assert document["response"]["body"] == "dispatch failed: 2\n"


def test_http_call_without_configuration_refuses_to_start() -> None:
    line = fails_with_one_line(plugin_path("http_call"))
    assert "configuration must name a cluster" in line


def test_stream_control_resumes_from_its_tick_and_resets() -> None:
    resumed = run_plugin("stream_control", "-H", "x-pause-response: 1")
    assert headers(resumed["upstream_request"])["x-resumed-by"] == "tick"
    assert headers(resumed["response"])["x-resumed-by"] == "tick"
    reset = run_plugin("stream_control", "-H", "x-close: 1")
    assert reset["response"] is None and reset["upstream_request"] is None
    assert "stream_control: close_stream request status=0" in messages(reset)
    reset_response = run_plugin("stream_control", "-H", "x-close-response: 1")
    assert reset_response["upstream_request"] is not None and reset_response["response"] is None


def test_metrics_counts_and_gauges() -> None:
    document = run_plugin("metrics", "-H", "a: 1")
    response = headers(document["response"])
    assert (response["x-counter"], response["x-inflight"], response["x-last-header-count"]) == ("1", "1", "6")
    assert (response["x-histogram-get-status"], response["x-bad-metric-type-status"]) == ("2", "2")
    assert document["metrics"]["wasmesh_test_requests_total"] == 1
    assert document["metrics"]["wasmesh_test_inflight"] == 0  # on_log brought it back down


def test_properties_from_flags_and_the_plugin() -> None:
    config = "source.address\nconnection.mtls\nplugin_name\nplugin_root_id\nnode.id\nrequest.path\nwasmesh.zone"
    document = run_plugin(
        "properties", "--config", config, "--root-id", "edge", "--path", "/p",
        "--property", "source.address=10.1.2.3:4000", "--property", "connection.mtls=true",
        "--property", "node.id=sidecar~10.1.2.3", "--property", "wasmesh.zone=eu-1",
    )
    response = headers(document["response"])
    assert response["x-prop-source-address"] == "text:10.1.2.3:4000"
    assert response["x-prop-connection-mtls"] == "hex:01"
    assert response["x-prop-plugin_name"] == "text:properties"
    assert response["x-prop-plugin_root_id"] == "text:edge"
    assert response["x-prop-node-id"] == "text:sidecar~10.1.2.3"
    assert response["x-prop-request-path"] == "text:/p"
    assert response["x-prop-wasmesh-zone"] == "text:eu-1"
    assert response["x-prop-set-status"] == "0"
    assert "properties: root plugin_name=properties plugin_root_id=edge plugin_vm_id=" in messages(document)


def test_log_level_reports_the_level_and_drops_lower_logs() -> None:
    document = run_plugin("log_level", "--log-level", "warn")
    response = headers(document["response"])
    assert (response["x-log-level"], response["x-log-level-status"], response["x-log-invalid-level-status"]) == (
        "3", "0", "2",
    )
    assert [(e["level"], e["message"]) for e in document["logs"]] == [
        ("warn", "log_level: message at level 3"),
        ("error", "log_level: message at level 4"),
        ("critical", "log_level: message at level 5"),
    ]


def test_shared_data_and_queue() -> None:
    document = run_plugin("shared", "--path", "/job/7")
    response = headers(document["response"])
    assert (response["x-shared-count"], response["x-shared-stale-cas-status"]) == ("1", "8")
    assert (response["x-queue-resolve-status"], response["x-queue-enqueue-status"]) == ("0", "0")
    assert (response["x-queue-missing-status"], response["x-queue-bad-dequeue-status"]) == ("1", "1")
    logs = messages(document)
    assert "shared: queue_ready queue=1 item=/job/7" in logs
    assert "shared: queue_drained queue=1 status=7" in logs


def test_abi_0_1_0_plugin_pauses_and_resumes_with_continue_request() -> None:
    document = run_plugin("abi010_headers", "--config", "old-abi", "-H", "x-pause: 1")
    upstream = headers(document["upstream_request"])
    assert (upstream["x-abi010"], upstream["x-resumed-by"]) == ("old-abi", "continue_request")
    assert headers(document["response"])["x-abi010-absent"] == "status=0 len=0"
    assert "abi010: configure config=old-abi status=0" in messages(document)


def test_abi_0_2_0_marker() -> None:
    document = run_plugin("abi020_headers", "--body", "b")
    response = headers(document["response"])
    assert (response["x-abi"], response["x-abi020-request"], response["x-abi020-absent-status"]) == (
        "0.2.0", "n=6 eos=0", "1",  # :authority :path :method :scheme content-length x-forwarded-proto
    )


def test_lifecycle_callbacks_in_envoys_order() -> None:
    document = run_plugin("lifecycle", "--config", "cfg", "--vm-config", "vm")
    assert messages(document) == [
        "lifecycle: on_context_create ctx=1 parent=0",
        "lifecycle: on_vm_start root=1 size=2 vm_config=vm",
        "lifecycle: on_configure root=1 size=3 config=cfg",
        "lifecycle: on_context_create ctx=2 parent=1",
        "lifecycle: on_request_headers ctx=2 n=5 eos=1",
        "lifecycle: on_response_headers ctx=2 n=2 eos=1",
        "lifecycle: on_log ctx=2",
        "lifecycle: on_done ctx=2 root=0",
        "lifecycle: on_delete ctx=2",
    ]


def test_lifecycle_vm_start_rejection_is_an_error() -> None:
    assert "proxy_on_vm_start returned false" in fails_with_one_line(plugin_path("lifecycle"), "--vm-config", "reject")


# -- AssemblyScript plugins --------------------------------------------------------------------------

def test_as_add_header_from_configuration() -> None:
    document = run_plugin("as_add_header", "--config", "blue")
    response = headers(document["response"])
    assert (response["x-as-config"], response["x-as-sdk"]) == ("blue", "proxy-runtime")
    assert run_plugin("as_add_header", "--root-id", "as_add_header")["trap"] is None


def test_as_deny() -> None:
    denied = run_plugin("as_deny", "-H", "x-deny: eve")
    assert denied["upstream_request"] is None
    assert denied["response"]["status"] == 403
    assert denied["response"]["body"] == "denied by as_deny: eve\n"
    assert headers(denied["response"])["x-denied-by"] == "as_deny"
    allowed = run_plugin("as_deny")
    assert headers(allowed["upstream_request"])["x-as-deny"] == "allowed"


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [("auth=200:ok", 200, ""), ("auth=401", 403, "denied by callout: 401\n")],
)
def test_as_http_call(answer: str, status: int, body: str) -> None:
    document = run_plugin("as_http_call", "--path", "/orders", "--callout", answer)
    assert document["callouts"][0]["headers"] == [
        [":method", "GET"], [":path", "/auth"], [":authority", "auth"], ["x-as-original-path", "/orders"],
    ]
    assert document["response"]["status"] == status
    assert document["response"]["body"] == body
    if status == 200:
        assert headers(document["upstream_request"])["x-as-callout"] == "ok"
    else:
        assert document["upstream_request"] is None


# -- WAT plugins ---------------------------------------------------------------------------------------

def test_trap_plugin_fails_closed() -> None:
    document = run_plugin("trap")
    assert document["response"]["status"] == 503
    assert messages(document)[0] == "trap: about to execute unreachable"
    assert document["trap"] is not None


def test_minimal_plugin_passes_everything_through() -> None:
    document = run_plugin("minimal", "--body", "b", "--response-body", "r")
    assert document["upstream_request"]["body"] == "b"
    assert document["response"]["body"] == "r"
    assert document["logs"] == [] and document["trap"] is None


def test_go_style_allocator_and_command_model() -> None:
    upstream = headers(run_plugin("go_style_allocator", "--path", "/go")["upstream_request"])
    assert (upstream["x-go-style-path"], upstream["x-go-style-started"]) == ("/go", "1")


@pytest.mark.parametrize(("name", "fragment"), [("no_abi_marker", "ABI version"), ("no_allocator", "allocator")])
def test_unloadable_modules_are_one_line_errors(name: str, fragment: str) -> None:
    assert fragment in fails_with_one_line(plugin_path(name))
