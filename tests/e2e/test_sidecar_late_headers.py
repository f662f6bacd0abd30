"""Header maps touched after they were forwarded: the sidecar against real Envoy.

The ``late_headers`` plugin (``tests/data/plugins/c/late_headers.c``) reads and writes the
request headers from ``proxy_on_request_body`` and the response headers from
``proxy_on_response_body``, after their header callbacks continued, and logs the status of
every host call. Envoy forgets a header map once its callback continued (the map has been
handed on), so those writes must not reach the upstream or the client, and the statuses the
plugin sees must be Envoy's. A request held with Pause keeps its map open: its writes must
arrive.

Each request goes to a route whose cluster is used once before (``warm``: the upstream
connection is pooled and ready) or never (``cold``: the connection is still being opened
when the body callback runs), so the result must not depend on connection timing.
Normalisation, and why: ``date``/``server`` differ by nature, ``x-envoy-*`` carry timings,
``x-request-id`` is random (only its presence is compared); header order is compared as a
multiset because neither proxy promises an order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests._tools import plugin_path
from tests.e2e._envoy import EnvoyProcess, wasm_filter
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]

DROPPED = ("date", "server", "x-request-id")
LOG_LINE = re.compile(r"late_headers: (.*)$")
ROUTES = ("cold-continue", "cold-pause", "warm")
LOG_WAIT_S = 20.0


def normalise_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    kept = [(k.lower(), v) for k, v in headers if k.lower() not in DROPPED and not k.lower().startswith("x-envoy-")]
    present = sorted({k.lower() for k, _ in headers if k.lower() == "x-request-id"})
    return sorted(kept) + [(name, "<present>") for name in present]


def config(upstream: ScriptedUpstream) -> dict[str, Any]:
    """One cluster per route (each with its own connection pool) in front of the same upstream."""
    routes = [{"match": {"prefix": f"/{name}"}, "route": {"cluster": name}} for name in ROUTES]
    return bootstrap(
        virtual_hosts=[{"name": "all", "domains": ["*"], "routes": routes}],
        clusters=[cluster(name, upstream.port) for name in ROUTES],
        http_filters=[wasm_filter(plugin_path("late_headers")), ROUTER_FILTER],
    )


@dataclass(frozen=True)
class View:
    """What one request did: the client's response, what the upstream got, what the plugin saw."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    upstream: list[tuple[str, str, list[tuple[str, str]], bytes]]
    plugin_log: list[str]


def plugin_lines(text: str) -> list[str]:
    return [m.group(1).strip() for line in text.splitlines() if (m := LOG_LINE.search(line))]


def send(proxy: EnvoyProcess | SidecarProcess, port: int, upstream: ScriptedUpstream, path: str,
         mode: str) -> View:
    """One POST with a body (sent with its headers, in one write); waits for the plugin's log line."""
    offset = proxy.log_size()
    headers = [("Host", "example.com"), ("x-client", "original"), ("x-remove-me", "1"), ("x-mode", mode)]
    status, response_headers, body = http_request(port, "POST", path, headers, b"request body")
    deadline = time.monotonic() + LOG_WAIT_S
    lines = plugin_lines(proxy.log_text(offset))
    while not any(line.startswith("log ") for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
        lines = plugin_lines(proxy.log_text(offset))
    seen = [(r.method, r.path, normalise_headers(list(r.headers)), r.body) for r in upstream.requests]
    upstream.clear()
    return View(status, normalise_headers(response_headers), body, seen, lines)


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream(200, [("x-upstream", "backend"), ("x-drop", "1")], "upstream says hi").start()
    try:
        yield server
    finally:
        server.stop()


def run(proxy: EnvoyProcess | SidecarProcess, upstream: ScriptedUpstream) -> dict[str, View]:
    """The same request sequence on one proxy: cold connections first, then a pooled one."""
    port = next(iter(proxy.listener_ports().values()))
    return {
        "cold-continue": send(proxy, port, upstream, "/cold-continue", "continue"),
        "cold-pause": send(proxy, port, upstream, "/cold-pause", "pause"),
        "warm-first": send(proxy, port, upstream, "/warm", "continue"),
        "warm-continue": send(proxy, port, upstream, "/warm", "continue"),
        "warm-pause": send(proxy, port, upstream, "/warm", "pause"),
    }


def test_late_header_mutations_match_envoy(tmp_path: Path, envoy_binary: str, upstream: ScriptedUpstream) -> None:
    bootstrap_config = config(upstream)
    with EnvoyProcess(bootstrap_config, workdir=tmp_path / "envoy", binary=envoy_binary,
                      component_log_level="wasm:info") as envoy:
        envoy_views = run(envoy, upstream)
    with SidecarProcess(bootstrap_config, workdir=tmp_path / "sidecar") as sidecar:
        ours = run(sidecar, upstream)
    assert ours == envoy_views, "\n".join(
        f"{name}:\n  envoy: {view}\n  ours:  {ours.get(name)}" for name, view in envoy_views.items()
        if ours.get(name) != view)
    # what Envoy does, spelled out: a forwarded map refuses writes and they never reach the wire
    for name, view in envoy_views.items():
        sent = dict(view.upstream[0][2])
        assert "x-late-add" not in sent and sent["x-client"] == "original" and "x-remove-me" in sent, name
        assert ("x-upstream", "backend") in view.headers and ("x-late-resp", "body") not in view.headers, name
        assert "request_body get=2:- pairs=0 size=2 add=2 replace=2 remove=2" in view.plugin_log, name
        assert ("x-held-add" in sent) == name.endswith("pause"), name
