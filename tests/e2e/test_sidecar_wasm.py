"""The sidecar's Wasm HTTP filter against real Envoy, plugin metrics, and ``code.remote`` modules.

Differential cases start one Envoy and one ``wasmesh sidecar`` from the *same* bootstrap (a
Wasm filter in front of the router), send both the same requests and compare what the client
saw (status, headers, body), what reached the upstream and what reached the callout server.
Normalisation, and why: ``date``/``server`` differ by nature, ``x-envoy-*`` carry timings,
``x-request-id`` is random (only its presence is compared); header order is compared as a
multiset because neither proxy promises an order.

``code.remote`` cases serve the module from a loopback HTTP server started by the test and
check the module agent's verdict: a right sha256 runs the plugin, a wrong one becomes Istio's
deny-all (FAIL_CLOSE) or no filter at all (FAIL_OPEN), with the reason in ``/config_dump``.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests._tools import plugin_path
from tests.e2e._envoy import EnvoyProcess, wasm_filter
from tests.e2e._upstream import CalloutServer, ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = [pytest.mark.e2e]

DROPPED = ("date", "server", "x-request-id")
Response = tuple[int, list[tuple[str, str]], bytes]


def normalise_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    kept = [(k.lower(), v) for k, v in headers if k.lower() not in DROPPED and not k.lower().startswith("x-envoy-")]
    present = sorted({k.lower() for k, _ in headers if k.lower() == "x-request-id"})
    return sorted(kept) + [(name, "<present>") for name in present]


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None

    def send(self, port: int) -> Response:
        return http_request(port, self.method, self.path, [("Host", "example.com"), *self.headers], self.body)


@dataclass
class Peers:
    """The upstream behind the route and the callout server behind the plugin's clusters."""

    upstream: ScriptedUpstream
    callouts: CalloutServer
    dead_port: int

    def take(self) -> tuple[list[Any], list[Any]]:
        seen = [(r.method, r.path, normalise_headers(list(r.headers)), r.body) for r in self.upstream.requests]
        called = [(c.cluster, c.request.method, c.request.path, normalise_headers(list(c.request.headers)),
                   c.request.body) for c in self.callouts.requests]
        self.upstream.clear()
        self.callouts.clear()
        return seen, called

    def clusters(self) -> list[dict[str, Any]]:
        return [cluster("backend", self.upstream.port), cluster("auth", self.callouts.port_for("auth")),
                cluster("deny", self.callouts.port_for("deny")), cluster("broken", self.dead_port)]


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = int(probe.getsockname()[1])
    probe.close()
    return port


@pytest.fixture
def peers() -> Iterator[Peers]:
    upstream = ScriptedUpstream(200, [("x-upstream", "backend"), ("x-drop", "1")], "upstream says hi").start()
    callouts = CalloutServer().start()
    try:
        callouts.add_cluster("auth", 200, "pong")
        callouts.add_cluster("deny", 403, "go away")
        yield Peers(upstream, callouts, closed_port())
    finally:
        callouts.stop()
        upstream.stop()


def wasm_config(peers: Peers, *filters: dict[str, Any]) -> dict[str, Any]:
    return bootstrap(http_filters=[*filters, ROUTER_FILTER], clusters=peers.clusters())


@dataclass
class Pair:
    envoy: EnvoyProcess
    sidecar: SidecarProcess
    envoy_port: int = 0
    sidecar_port: int = 0
    results: list[Any] = field(default_factory=list)

    def compare(self, peers: Peers, requests: list[Request]) -> list[Any]:
        """Send each request to Envoy, then to the sidecar; assert both were seen the same."""
        views = []
        for request in requests:
            peers.take()
            envoy_status, envoy_headers, envoy_body = request.send(self.envoy_port)
            envoy_view = (envoy_status, normalise_headers(envoy_headers), envoy_body, *peers.take())
            ours_status, ours_headers, ours_body = request.send(self.sidecar_port)
            ours_view = (ours_status, normalise_headers(ours_headers), ours_body, *peers.take())
            assert ours_view == envoy_view, f"{request}\nenvoy log tail:\n{self.envoy.log_text()[-2000:]}"
            views.append(envoy_view)
        return views


@pytest.fixture
def run_pair(tmp_path: Path, envoy_binary: str) -> Iterator[Callable[[dict[str, Any]], Pair]]:
    started: list[Pair] = []

    def start(config: dict[str, Any]) -> Pair:
        workdir = tmp_path / f"pair{len(started)}"
        envoy = EnvoyProcess(config, workdir=workdir / "envoy", binary=envoy_binary, component_log_level="wasm:info")
        envoy.start()
        try:
            sidecar = SidecarProcess(config, workdir=workdir / "sidecar").start()
        except BaseException:
            envoy.stop()
            raise
        pair = Pair(envoy, sidecar)
        started.append(pair)
        pair.envoy_port = next(iter(envoy.listener_ports().values()))
        pair.sidecar_port = next(iter(sidecar.listener_ports().values()))
        return pair

    try:
        yield start
    finally:
        for pair in started:
            pair.sidecar.stop()
            pair.envoy.stop()


# --- differential: the same bootstrap, the same requests ---------------------------------------------

HEADERS_CONFIG = "\n".join([
    "add request x-added from-plugin",
    "replace request user-agent plugin-agent",
    "remove request x-secret",
    "add response x-plugin-response yes",
    "replace response x-upstream rewritten",
    "remove response x-drop",
])


@pytest.mark.envoy
def test_headers_plugin_config_driven_mutations(run_pair: Callable[[dict[str, Any]], Pair], peers: Peers) -> None:
    pair = run_pair(wasm_config(peers, wasm_filter(plugin_path("headers"), configuration=HEADERS_CONFIG)))
    views = pair.compare(peers, [
        Request(path="/a/b?c=d", headers=(("User-Agent", "curl"), ("X-Secret", "s"), ("X-Multi", "1"),
                                           ("X-Multi", "2"))),
        Request("POST", "/submit", body=b"payload"),
        Request("HEAD", "/head"),
    ])
    status, headers, _, upstream, _ = views[0]
    assert status == 200 and ("x-echo-path", "/a/b?c=d") in headers and ("x-upstream", "rewritten") in headers
    assert ("x-added", "from-plugin") in upstream[0][2] and not any(k == "x-secret" for k, _ in upstream[0][2])


@pytest.mark.envoy
def test_body_plugin_buffers_and_rewrites(run_pair: Callable[[dict[str, Any]], Pair], peers: Peers) -> None:
    pair = run_pair(wasm_config(peers, wasm_filter(plugin_path("body"), configuration=" [suffix]")))
    views = pair.compare(peers, [
        Request("POST", "/upper", body=b"hello, wasm body!"),
        Request("PUT", "/bigger", body=b"abc" * 20000),
        Request("GET", "/nobody"),
    ])
    assert views[0][3][0][3] == b"HELLO, WASM BODY!"
    assert views[0][2] == b"upstream says hi [suffix]"


@pytest.mark.envoy
def test_local_reply_plugin(run_pair: Callable[[dict[str, Any]], Pair], peers: Peers) -> None:
    pair = run_pair(wasm_config(peers, wasm_filter(plugin_path("local_reply"))))
    views = pair.compare(peers, [
        Request(headers=(("x-deny", "mallory"),)),
        Request("POST", "/deny-with-body", headers=(("x-deny", "x"),), body=b"ignored"),
        Request(path="/allowed"),
    ])
    assert views[0][0] == 403 and views[0][2] == b"access denied: mallory\n" and views[0][3] == []
    assert views[2][0] == 200


@pytest.mark.envoy
@pytest.mark.parametrize("target", ["auth", "deny", "broken",
                                    "no_such_cluster"])
def test_http_call_plugin(run_pair: Callable[[dict[str, Any]], Pair], peers: Peers, target: str) -> None:
    pair = run_pair(wasm_config(peers, wasm_filter(plugin_path("http_call"), configuration=target)))
    views = pair.compare(peers, [Request(path="/checked"), Request("POST", "/posted", body=b"data")])
    status, _, _, upstream, called = views[0]
    if target == "no_such_cluster":
        assert status == 500 and upstream == []  # dispatch refused: BAD_ARGUMENT
        return
    assert status == 200 and ("x-callout-status", {"auth": "200", "deny": "403", "broken": "503"}[target]) in \
        upstream[0][2]
    if target != "broken":
        assert called and called[0][0] == target and ("content-length", "4") in called[0][3]


@pytest.mark.envoy
@pytest.mark.parametrize("plugin,configuration,requests", [
    ("as_add_header", "configured value", [Request(), Request("POST", "/p", body=b"x")]),
    ("as_add_header", "", [Request()]),
    ("as_deny", "", [Request(headers=(("x-deny", "eve"),)), Request(path="/ok")]),
    ("as_http_call", "auth", [Request(path="/authz")]),
    ("as_http_call", "deny", [Request(path="/authz")]),
    pytest.param("as_http_call", "broken", [Request(path="/authz")]),
], ids=["add-header", "add-header-empty", "deny", "call-ok", "call-denied", "call-failed"])
def test_assemblyscript_plugins(run_pair: Callable[[dict[str, Any]], Pair], peers: Peers, plugin: str,
                                configuration: str, requests: list[Request]) -> None:
    pair = run_pair(wasm_config(peers, wasm_filter(plugin_path(plugin), root_id=plugin,
                                                   configuration=configuration)))
    views = pair.compare(peers, requests)
    if plugin == "as_add_header":
        assert ("x-as-config", configuration or "<empty>") in views[0][1]
    if plugin == "as_http_call":
        # a failed connection reaches the plugin as Envoy's 503 answer, which as_http_call denies
        assert views[0][0] == {"auth": 200, "deny": 403, "broken": 403}[configuration]


@pytest.mark.envoy
def test_trap_fail_closed_answers_503(run_pair: Callable[[dict[str, Any]], Pair], peers: Peers) -> None:
    pair = run_pair(wasm_config(peers, wasm_filter(plugin_path("trap"), failure_policy="FAIL_CLOSED")))
    views = pair.compare(peers, [Request(), Request(path="/after-the-trap")])
    assert [v[0] for v in views] == [503, 503] and all(v[3] == [] for v in views)


@pytest.mark.envoy
def test_two_plugins_in_one_chain(run_pair: Callable[[dict[str, Any]], Pair], peers: Peers) -> None:
    pair = run_pair(wasm_config(
        peers,
        wasm_filter(plugin_path("local_reply"), name="gate"),
        wasm_filter(plugin_path("headers"), name="decorate", configuration="add request x-second ran"),
    ))
    views = pair.compare(peers, [Request(headers=(("x-deny", "1"),)), Request()])
    assert views[0][0] == 403 and ("x-second", "ran") in views[1][3][0][2]


# --- plugin metrics in the admin ------------------------------------------------------------------------


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def prometheus_value(text: str, metric: str) -> float | None:
    """The value of the first sample whose metric name ends with ``metric`` (any prefix, any labels)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.split("{", 1)[0].split(" ", 1)[0], line.rsplit(" ", 1)[1]
        if name.endswith(metric):
            return float(value)
    return None


def metric_lines(text: str, needle: str) -> list[tuple[str, float]]:
    """Samples as (series, value): the exposition text may spell ``x{} 3`` or ``x 3.0``."""
    samples = []
    for line in text.splitlines():
        if needle not in line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        samples.append((series.removesuffix("{}"), float(value)))
    return sorted(samples)


@pytest.mark.envoy
def test_plugin_metrics_in_stats(run_pair: Callable[[dict[str, Any]], Pair], peers: Peers) -> None:
    pair = run_pair(wasm_config(peers, wasm_filter(plugin_path("metrics"))))
    requests = 5
    for _ in range(requests):
        assert Request().send(pair.sidecar_port)[0] == 200
        assert Request().send(pair.envoy_port)[0] == 200
    counter = "wasmcustom.wasmesh_test_requests_total"
    assert wait_for(lambda: pair.sidecar.stats().get(counter) == requests), sorted(pair.sidecar.stats())
    ours, theirs = pair.sidecar.stats(), pair.envoy.stats()
    for name in (counter, "wasmcustom.wasmesh_test_inflight", "wasmcustom.wasmesh_test_last_header_count"):
        assert ours[name] == theirs[name], name
    assert theirs[counter] == requests and theirs["wasmcustom.wasmesh_test_inflight"] == 0
    ours_prom = pair.sidecar.admin_get("/stats/prometheus")
    assert prometheus_value(ours_prom, "wasmesh_test_requests_total") == requests
    assert prometheus_value(ours_prom, "wasmesh_test_header_count_count") == requests


@pytest.mark.envoy
def test_plugin_metric_prometheus_names_match_envoy(run_pair: Callable[[dict[str, Any]], Pair],
                                                    peers: Peers) -> None:
    pair = run_pair(wasm_config(peers, wasm_filter(plugin_path("metrics"))))
    for _ in range(3):
        assert Request().send(pair.sidecar_port)[0] == 200
        assert Request().send(pair.envoy_port)[0] == 200
    assert wait_for(lambda: pair.sidecar.stats().get("wasmcustom.wasmesh_test_requests_total") == 3)
    ours_prom = pair.sidecar.admin_get("/stats/prometheus")
    theirs_prom = pair.envoy.admin_get("/stats/prometheus")
    for metric in ("wasmesh_test_requests_total", "wasmesh_test_inflight", "wasmesh_test_last_header_count"):
        assert metric_lines(ours_prom, metric) == metric_lines(theirs_prom, metric), metric


# --- code.remote through the module agent ---------------------------------------------------------------


class ModuleServer:
    """Serves files by name on 127.0.0.1 (the ``http://`` source of ``code.remote``); counts fetches."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fetches: list[str] = []
        files, fetches = self.files, self.fetches

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fetches.append(self.path)
                body = files.get(self.path.lstrip("/"))
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ModuleServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def remote_filter(url: str, sha256: str, *, name: str, configuration: str, fail_open: bool) -> dict[str, Any]:
    """A Wasm filter whose module comes from ``code.remote`` (as istiod writes it for WasmPlugin)."""
    entry = wasm_filter(plugin_path("as_add_header"), name=name, root_id="as_add_header",
                        configuration=configuration, failure_policy="FAIL_OPEN" if fail_open else "FAIL_CLOSED")
    entry["typed_config"]["config"]["vm_config"]["code"] = {
        "remote": {"http_uri": {"uri": url, "cluster": "unused", "timeout": "10s"}, "sha256": sha256}
    }
    return entry


def config_dump_module_status(sidecar: SidecarProcess) -> dict[str, Any]:
    """The module agent's verdict per plugin, wherever /config_dump carries it."""
    found: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "module_status" and isinstance(value, dict):
                    found.update(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(sidecar.admin_get("/config_dump")))
    return found


@dataclass
class RemoteRun:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    module_status: dict[str, Any]
    log: str
    fetches: list[str]


@pytest.fixture
def remote_run(tmp_path: Path, peers: Peers, monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], RemoteRun]:
    """Start a sidecar whose two plugins come from a loopback HTTP server: one with the module's
    sha256, one with a wrong sha256; send one request; report what was seen."""
    monkeypatch.setenv("WASMESH_CACHE_DIR", str(tmp_path / "cache"))

    def run(fail_open: bool) -> RemoteRun:
        module = plugin_path("as_add_header").read_bytes()
        good, bad = hashlib.sha256(module).hexdigest(), hashlib.sha256(b"another module").hexdigest()
        with ModuleServer() as modules:
            modules.files["plugin.wasm"] = module
            modules.files["other.wasm"] = module
            config = wasm_config(
                peers,
                remote_filter(modules.url("plugin.wasm"), good, name="trusted", configuration="remote-ok",
                              fail_open=fail_open),
                remote_filter(modules.url("other.wasm"), bad, name="tampered", configuration="never",
                              fail_open=fail_open),
            )
            with SidecarProcess(config, workdir=tmp_path / f"sidecar-{fail_open}") as sidecar:
                port = next(iter(sidecar.listener_ports().values()))
                status, headers, body = Request().send(port)
                module_status = config_dump_module_status(sidecar)
            return RemoteRun(status, headers, body, module_status, sidecar.log_text(), list(modules.fetches))

    return run


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-close", "fail-open"])
def test_remote_module_sha256(remote_run: Callable[[bool], RemoteRun], fail_open: bool) -> None:
    seen = remote_run(fail_open)
    assert "/plugin.wasm" in seen.fetches and "/other.wasm" in seen.fetches
    if fail_open:
        # the tampered plugin is left out; the trusted one runs
        assert seen.status == 200 and ("x-as-config", "remote-ok") in seen.headers
        assert seen.body == b"upstream says hi"
    else:
        assert (seen.status, seen.body) == (403, b"RBAC: access denied")
    reason = [line for line in seen.log.splitlines() if "tampered" in line and "does not match the expected" in line]
    assert reason, seen.log[-3000:]


def test_remote_module_verdict_in_config_dump(remote_run: Callable[[bool], RemoteRun]) -> None:
    seen = remote_run(False)
    assert seen.module_status["trusted"]["ok"] is True
    assert seen.module_status["tampered"]["ok"] is False
    assert "does not match the expected" in str(seen.module_status["tampered"]["message"])
