"""The real-Envoy harness does what differential tests rely on.

Plugins are WAT sources in `data/`, assembled per run. The Envoy tests check that the harness
reports what the plugin did (headers, local reply, trap, callouts, logs, metrics) and that
`comparable()` removes only what Envoy adds on its own.
"""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e._envoy import (
    EnvoyPluginSession,
    EnvoyProcess,
    EnvoyStartError,
    comparable,
    find_trap,
    parse_plugin_logs,
    run_plugin_in_envoy,
)
from tests.e2e._upstream import CalloutServer, ScriptedUpstream


def _names(headers: list[list[str]]) -> list[str]:
    return [name for name, _ in headers]


# --- loopback peers ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_scripted_upstream_records_request_verbatim_and_answers_as_scripted(
    scripted_upstream: ScriptedUpstream,
) -> None:
    scripted_upstream.set_response(201, [("X-Up", "1")], "created")
    connection = http.client.HTTPConnection("127.0.0.1", scripted_upstream.port, timeout=5)
    connection.putrequest("PUT", "/items?id=7", skip_host=True, skip_accept_encoding=True)
    for name, value in [("Host", "svc"), ("X-B", "2"), ("x-a", "1"), ("X-B", "3")]:
        connection.putheader(name, value)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders(b"4\r\nbody\r\n0\r\n\r\n")
    reply = connection.getresponse()
    assert (reply.status, reply.getheaders(), reply.read()) == (
        201,
        [("X-Up", "1"), ("content-length", "7")],
        b"created",
    )
    connection.close()
    [request] = scripted_upstream.requests
    assert (request.method, request.path, request.body) == ("PUT", "/items?id=7", b"body")
    assert request.headers[:4] == (("Host", "svc"), ("X-B", "2"), ("x-a", "1"), ("X-B", "3"))
    assert request.header_map()[:5] == [
        [":authority", "svc"],
        [":path", "/items?id=7"],
        [":method", "PUT"],
        ["x-b", "2"],
        ["x-a", "1"],
    ]


@pytest.mark.e2e
def test_callout_server_answers_each_cluster_on_its_own_port(callout_server: CalloutServer) -> None:
    ports = {name: callout_server.add_cluster(name, status, body)
             for name, status, body in [("authz", 200, "yes"), ("quota", 429, "no")]}  # fmt: skip
    assert len(set(ports.values())) == 2
    answers = {}
    for cluster in ("quota", "authz"):
        connection = http.client.HTTPConnection("127.0.0.1", ports[cluster], timeout=5)
        connection.request("POST", f"/{cluster}", body=cluster.encode())
        reply = connection.getresponse()
        answers[cluster] = (reply.status, reply.read())
        connection.close()
    assert answers == {"authz": (200, b"yes"), "quota": (429, b"no")}
    recorded = [(c.cluster, c.request.path, c.request.body) for c in callout_server.requests]
    assert recorded == [("quota", "/quota", b"quota"), ("authz", "/authz", b"authz")]


@pytest.mark.e2e
def test_scripted_upstream_rejects_a_malformed_request(scripted_upstream: ScriptedUpstream) -> None:
    with socket.create_connection(("127.0.0.1", scripted_upstream.port), timeout=5) as sock:
        sock.sendall(b"NOT-HTTP\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"request line" in answer
    assert scripted_upstream.requests == []


# --- parsing Envoy's log -----------------------------------------------------------------------


def test_plugin_logs_are_unescaped_and_main_thread_instances_are_skipped() -> None:
    log = "\n".join(
        [
            "[100][info][wasm] wasm log: from the canary",
            "[100][info][main] wasm log: not the wasm logger",
            "[200][info][wasm] wasm log: line one\\nline two \\303\\251 \\\\ \\\"q\\\"",
            "[200][warning][wasm] wasm log plugin root vm: has: colons",
            "[200][trace][wasm] [host->vm] proxy_on_request_headers(2, 5, 1)",
            "[200][critical][wasm] wasm log plugin: bad",
        ]
    )
    assert parse_plugin_logs(log, skip_thread=100) == [
        {"level": "info", "message": 'line one\nline two é \\ "q"'},
        {"level": "warn", "message": "has: colons"},
        {"level": "critical", "message": "bad"},
    ]


def test_trap_is_the_failed_call_without_backtrace() -> None:
    log = (
        "[200][error][wasm] wasm log plugin: about to trap\n"
        "[200][error][wasm] Function: proxy_on_request_headers failed: Uncaught RuntimeError: "
        "unreachable\\nProxy-Wasm plugin in-VM backtrace:\\n  0:  0xd2 - unknown\n"
    )
    assert find_trap(log) == "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"
    assert find_trap("[200][error][wasm] wasm log plugin: Function: x failed: y") is None


# --- comparable() ------------------------------------------------------------------------------


def test_comparable_drops_only_what_envoy_adds() -> None:
    result = {
        "upstream_request": {
            "headers": [[":path", "/"], [":authority", "a"], [":method", "GET"], [":scheme", "http"],
                        ["X-Mine", "1"], ["content-length", "3"], ["x-forwarded-proto", "http"],
                        ["x-request-id", "kept"]],
            "body": "abc",
        },
        "response": {"status": 200, "body": "",
                     "headers": [["date", "now"], ["x-b", "2"], ["content-type", "text/plain"], ["x-a", "1"]]},
        "callouts": [{"cluster": "c", "body": "",
                      "headers": [[":method", "GET"], ["x-envoy-internal", "true"], ["x-envoy-other", "1"]]}],
        "logs": [{"level": "info", "message": "m"}],
        "metrics": {"n": 1},
        "trap": "proxy_on_log failed: Uncaught RuntimeError: unreachable",
    }  # fmt: skip
    assert comparable(result) == {
        "upstream_request": {
            "headers": [[":authority", "a"], [":path", "/"], [":method", "GET"], ["x-mine", "1"],
                        ["x-request-id", "kept"]],
            "body": "abc",
        },
        "response": {"status": 200, "body": "",
                     "headers": [["x-b", "2"], ["content-type", "text/plain"], ["x-a", "1"]]},
        "callouts": [{"cluster": "c", "body": "", "headers": [[":method", "GET"], ["x-envoy-other", "1"]]}],
        "logs": [{"level": "info", "message": "m"}],
        "metrics": {"n": 1},
        "trap": True,
    }  # fmt: skip
    assert comparable({**result, "upstream_request": None, "response": None, "trap": None})["trap"] is False


# --- real Envoy --------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.envoy
def test_envoy_process_serves_a_bootstrap_and_stops_by_pid(envoy_binary: str, tmp_path: Path) -> None:
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 204}}
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "plain",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network."
                             "http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "plain",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                },
            }]}],
        }]},
    }  # fmt: skip
    envoy = EnvoyProcess(bootstrap, workdir=tmp_path, binary=envoy_binary)
    with envoy:
        pid = envoy.pid
        port = envoy.listener_ports()["plain"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/")
        assert connection.getresponse().status == 204
        connection.close()
        assert envoy.stats()["http.plain.downstream_rq_2xx"] == 1
        assert envoy.admin_url.startswith("http://127.0.0.1:")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.e2e
@pytest.mark.envoy
def test_run_reports_headers_logs_metrics_and_upstream_request(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path
) -> None:
    result = run_plugin_in_envoy(
        wat_plugin("headers_and_log"),
        root_id="my_root",
        configuration='line one\nline two é \\ "q"',
        vm_configuration="vm settings",
        method="POST",
        path="/hello?x=1",
        headers=[("X-Custom", "A"), ("x-custom", "B")],
        body="payload",
        response_status=202,
        response_headers=[("X-Up", "1")],
        response_body="from upstream",
        workdir=tmp_path,
        binary=envoy_binary,
    )
    assert result["trap"] is None
    assert result["logs"] == [
        {"level": "debug", "message": "vm settings"},
        {"level": "info", "message": 'line one\nline two é \\ "q"'},
        {"level": "info", "message": "request path: /hello?x=1"},
        {"level": "warn", "message": "response headers"},
        {"level": "trace", "message": "stream done"},
    ]
    assert result["metrics"] == {"requests_total": 1}
    upstream = result["upstream_request"]
    assert upstream["body"] == "payload"
    assert upstream["headers"][:3] == [[":authority", "example.com"], [":path", "/hello?x=1"], [":method", "POST"]]
    assert [h for h in upstream["headers"] if h[0] in ("x-custom", "x-wasm-request")] == [
        ["x-custom", "A"],
        ["x-custom", "B"],
        ["x-wasm-request", "seen"],
    ]
    response = result["response"]
    assert (response["status"], response["body"]) == (202, "from upstream")
    assert _names(response["headers"]).index("x-up") < _names(response["headers"]).index("x-wasm")
    assert ["x-wasm", "hello"] in response["headers"]
    assert result["callouts"] == []
    assert comparable(result)["response"]["headers"] == [["x-up", "1"], ["x-wasm", "hello"]]


@pytest.fixture(scope="module")
def headers_session(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyPluginSession]:
    """One Envoy for several requests: start-up is paid once per plugin and configuration."""
    session = EnvoyPluginSession(
        wat_plugin("headers_and_log"),
        configuration=b"session config",  # sent as a BytesValue
        workdir=tmp_path_factory.mktemp("headers-session"),
        binary=envoy_binary,
    )
    with session:
        yield session


@pytest.mark.e2e
@pytest.mark.envoy
def test_session_serves_many_requests_and_keeps_plugin_state(headers_session: EnvoyPluginSession) -> None:
    assert headers_session.startup_logs == [{"level": "info", "message": "session config"}]
    first = headers_session.request(path="/one")
    second = headers_session.request(path="/two", response_status=404, response_body="missing")
    assert [log["message"] for log in first["logs"]] == ["request path: /one", "response headers", "stream done"]
    assert [log["message"] for log in second["logs"]] == ["request path: /two", "response headers", "stream done"]
    assert second["metrics"]["requests_total"] == first["metrics"]["requests_total"] + 1
    assert second["response"]["status"] == 404
    assert second["response"]["body"] == "missing"
    assert second["upstream_request"]["headers"][1] == [":path", "/two"]


@pytest.mark.e2e
@pytest.mark.envoy
def test_session_rejects_undeclared_callout_cluster(headers_session: EnvoyPluginSession) -> None:
    with pytest.raises(ValueError, match="undeclared"):
        headers_session.request(callouts={"undeclared": (200, "")})


@pytest.mark.e2e
@pytest.mark.envoy
def test_local_reply_never_reaches_the_upstream(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path
) -> None:
    result = run_plugin_in_envoy(wat_plugin("local_reply"), workdir=tmp_path, binary=envoy_binary)
    assert result["upstream_request"] is None
    assert result["logs"] == [{"level": "info", "message": "denying"}]
    assert comparable(result)["response"] == {
        "status": 403,
        "headers": [["x-denied", "yes"], ["content-type", "text/plain"]],
        "body": "denied by plugin",
    }


@pytest.mark.e2e
@pytest.mark.envoy
def test_trap_fails_closed_with_503_and_the_vm_stays_failed(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path
) -> None:
    with EnvoyPluginSession(wat_plugin("trap"), workdir=tmp_path, binary=envoy_binary) as session:
        first = session.request()
        second = session.request()
    assert first["trap"] == "proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"
    assert first["logs"] == [{"level": "error", "message": "about to trap"}]
    assert (first["response"]["status"], first["upstream_request"]) == (503, None)
    assert (second["response"]["status"], second["upstream_request"], second["logs"]) == (503, None, [])


@pytest.mark.e2e
@pytest.mark.envoy
def test_trap_with_fail_open_lets_later_requests_through(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path
) -> None:
    session = EnvoyPluginSession(wat_plugin("trap"), failure_policy="FAIL_OPEN", workdir=tmp_path, binary=envoy_binary)
    with session:
        trapped = session.request()
        after = session.request(response_body="passed through")
    assert trapped["trap"] is not None
    # Envoy 1.40 still answers 503 to the request whose callback trapped; FAIL_OPEN applies after.
    assert trapped["response"]["status"] == 503
    assert after["trap"] is None
    assert (after["response"]["status"], after["response"]["body"]) == (200, "passed through")
    assert after["upstream_request"] is not None


@pytest.mark.e2e
@pytest.mark.envoy
@pytest.mark.parametrize(("status", "answer"), [(200, "allowed"), (503, "nope")])
def test_callout_is_recorded_and_its_answer_reaches_the_plugin(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path, status: int, answer: str
) -> None:
    result = run_plugin_in_envoy(
        wat_plugin("callout"), callouts={"authz": (status, answer)}, workdir=tmp_path, binary=envoy_binary
    )
    [callout] = comparable(result)["callouts"]
    assert callout == {
        "cluster": "authz",
        "headers": [[":authority", "authz"], [":path", "/check"], [":method", "GET"]],
        "body": "ping",
    }
    assert result["logs"] == [{"level": "info", "message": answer}]
    assert ["x-authz", answer] in result["upstream_request"]["headers"]
    assert result["response"]["status"] == 200


@pytest.mark.e2e
@pytest.mark.envoy
def test_module_without_abi_marker_is_refused_at_start(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path
) -> None:
    with pytest.raises(EnvoyStartError) as refused:
        run_plugin_in_envoy(wat_plugin("no_abi_marker"), workdir=tmp_path, binary=envoy_binary)
    assert "envoy exited" in str(refused.value)
    assert "ABI" in refused.value.log


@pytest.mark.e2e
@pytest.mark.envoy
def test_two_envoys_run_side_by_side(
    headers_session: EnvoyPluginSession, envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path
) -> None:
    with EnvoyPluginSession(wat_plugin("local_reply"), workdir=tmp_path, binary=envoy_binary) as other:
        assert other.request()["response"]["status"] == 403
        assert headers_session.request()["response"]["status"] == 200
        assert other.envoy is not None and headers_session.envoy is not None
        assert other.envoy.pid != headers_session.envoy.pid


@pytest.mark.e2e
@pytest.mark.envoy
def test_reset_stream_gives_no_response(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path
) -> None:
    result = run_plugin_in_envoy(wat_plugin("close_stream"), workdir=tmp_path, binary=envoy_binary)
    assert (result["response"], result["upstream_request"]) == (None, None)
    assert result["logs"] == [{"level": "info", "message": "closing"}]
    assert comparable(result)["response"] is None


@pytest.mark.e2e
@pytest.mark.envoy
def test_comparable_result_is_the_same_on_every_run(
    envoy_binary: str, wat_plugin: Callable[[str], Path], tmp_path: Path
) -> None:
    """Differential tests need a deterministic reference: nothing run-specific may survive."""
    runs = [
        comparable(
            run_plugin_in_envoy(
                wat_plugin(name),
                configuration="cfg",
                headers=[("x-client", "1")],
                body="b",
                response_headers=[("x-up", "2")],
                callouts={"authz": (200, "ok")},
                workdir=tmp_path / f"{name}-{attempt}",
                binary=envoy_binary,
            )
        )
        for name in ("headers_and_log", "callout")
        for attempt in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[2] == runs[3]
    assert runs[0] != runs[2]
