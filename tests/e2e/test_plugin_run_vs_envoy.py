"""`wasmesh plugin run --json` against real Envoy: the same plugin and request give the same
result (upstream request, client response, callouts, plugin logs, trap) in both.

Each case starts one Envoy with the plugin (`run_plugin_in_envoy`) and runs the CLI in a
separate process with the equivalent flags; both results go through `comparable()`, which
drops what Envoy adds that is not plugin behaviour. Metrics are compared where the values
are deterministic; plugin-defined metric ids differ between the hosts (see
tests/e2e/test_differential_envoy.py), so plugins that log them are not used here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests._tools import plugin_path
from tests.e2e._envoy import comparable, run_plugin_in_envoy
from tests.e2e.test_plugin_run_cli import run_json

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]


@dataclass(frozen=True)
class Case:
    id: str
    plugin: str
    configuration: str = ""
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    response_status: int = 200
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: str = ""
    callouts: dict[str, tuple[int, str]] = field(default_factory=dict)

    def flags(self) -> list[str]:
        flags = ["--method", self.method, "--path", self.path, "--response-status", str(self.response_status)]
        if self.configuration:
            flags += ["--config", self.configuration]
        for name, value in self.headers:
            flags += ["-H", f"{name}: {value}"]
        if self.body:
            flags += ["--body", self.body]
        for name, value in self.response_headers:
            flags += ["--response-header", f"{name}: {value}"]
        if self.response_body:
            flags += ["--response-body", self.response_body]
        for cluster, (status, body) in self.callouts.items():
            flags += ["--callout", f"{cluster}={status}:{body}"]
        return flags


CASES = [
    Case("local-reply-denied", "local_reply", headers=(("x-deny", "me"),)),
    Case("local-reply-allowed", "local_reply", method="POST", body="b", response_body="r"),
    Case("headers", "headers", configuration="add request x-a 1\nremove response x-r\nadd response x-b 2",
         headers=(("x-in", "1"),), response_headers=(("x-r", "1"),), body="abc"),
    Case("body", "body", configuration="!", method="POST", body="shout", response_body="whisper"),
    Case("http-call-allowed", "http_call", configuration="authz", callouts={"authz": (200, "ok")}),
    Case("http-call-busy", "http_call", configuration="authz", callouts={"authz": (503, "busy")}),
    Case("http-call-no-cluster", "http_call", configuration="nowhere"),
    Case("stream-control-tick", "stream_control", headers=(("x-pause-response", "1"),), response_body="r"),
    Case("stream-control-reset", "stream_control", headers=(("x-close", "1"),)),
    Case("abi010-pause", "abi010_headers", configuration="c", headers=(("x-pause", "1"),)),
    Case("abi020", "abi020_headers", method="POST", body="b"),
    Case("lifecycle", "lifecycle", configuration="cfg"),
    Case("log-level", "log_level"),
    Case("shared", "shared", path="/item"),
    Case("as-deny", "as_deny", headers=(("x-deny", "v"),)),
    Case("as-http-call-denied", "as_http_call", callouts={"auth": (401, "no")}),
    Case("trap", "trap"),
    Case("go-style", "go_style_allocator", path="/go"),
]


def envoy_result(case: Case) -> dict[str, Any]:
    return run_plugin_in_envoy(
        plugin_path(case.plugin),
        configuration=case.configuration,
        method=case.method,
        path=case.path,
        headers=list(case.headers),
        body=case.body,
        response_status=case.response_status,
        response_headers=list(case.response_headers),
        response_body=case.response_body,
        callouts=case.callouts,
    )


def without_connection_close(result: dict[str, Any]) -> dict[str, Any]:
    """Envoy's HTTP/1.1 codec closes a connection whose request body it did not read."""
    if result["response"] is not None:
        result["response"]["headers"] = [h for h in result["response"]["headers"] if h != ["connection", "close"]]
    return result


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plugin_run_matches_envoy(case: Case, envoy_binary: str) -> None:
    theirs = without_connection_close(comparable(envoy_result(case)))
    ours = comparable(run_json(plugin_path(case.plugin), *case.flags()))
    assert ours == theirs
