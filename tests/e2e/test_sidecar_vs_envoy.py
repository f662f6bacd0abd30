"""Differential tests: the wasmesh sidecar and real Envoy serve the same bootstrap the same way.

Each case starts one Envoy (``tests.e2e._envoy.EnvoyProcess``) and one ``wasmesh sidecar``
from the *same* bootstrap, sends both the same requests, and compares what the client sees
(status, headers, body) and what reached the upstream (method, path, headers, body).

Normalisation, and why: ``date`` and ``server`` differ by nature; ``x-envoy-*`` headers carry
timings (``x-envoy-upstream-service-time``) or are Envoy-internal; ``x-request-id`` is
random (only its presence is compared). Header order is compared as a multiset because
neither proxy promises an order. Weighted splits are compared statistically.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._envoy import EnvoyProcess
from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import FAULT, ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]

Request = dict[str, Any]
DROPPED = ("date", "server", "x-request-id")


def normalise_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    kept = [(k.lower(), v) for k, v in headers if k.lower() not in DROPPED and not k.lower().startswith("x-envoy-")]
    present = sorted({k.lower() for k, _ in headers if k.lower() == "x-request-id"})
    return sorted(kept) + [(name, "<present>") for name in present]


class Upstreams:
    """Named scripted upstreams; each answers with its own name as body and ``x-upstream`` header."""

    def __init__(self, names: tuple[str, ...] = ("a", "b", "c")) -> None:
        self.servers = {name: ScriptedUpstream(200, [("x-upstream", name)], name).start() for name in names}

    def port(self, name: str) -> int:
        return self.servers[name].port

    def take(self) -> list[tuple[str, str, str, list[tuple[str, str]], bytes]]:
        seen = []
        for name, server in self.servers.items():
            for request in server.requests:
                seen.append((name, request.method, request.path, normalise_headers(list(request.headers)),
                             request.body))
            server.clear()
        return seen

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    pool = Upstreams()
    try:
        yield pool
    finally:
        pool.stop()


class Pair:
    """Envoy and the sidecar running the same bootstrap."""

    def __init__(self, envoy: EnvoyProcess, sidecar: SidecarProcess) -> None:
        self.envoy = envoy
        self.sidecar = sidecar
        self.envoy_port = next(iter(envoy.listener_ports().values()))
        self.sidecar_port = next(iter(sidecar.listener_ports().values()))

    def send(self, port: int, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [("Host", request.get("host", "example.com")), *request.get("headers", [])]
        return http_request(port, request.get("method", "GET"), request.get("path", "/"), headers,
                            request.get("body"))


def start_pair(tmp_path: Path, envoy_binary: str, config: dict[str, Any]) -> Pair:
    envoy = EnvoyProcess(config, workdir=tmp_path / "envoy", binary=envoy_binary, component_log_level="misc:info")
    envoy.start()
    try:
        sidecar = SidecarProcess(config, workdir=tmp_path / "sidecar").start()
    except BaseException:
        envoy.stop()
        raise
    return Pair(envoy, sidecar)


def compare(tmp_path: Path, envoy_binary: str, config: dict[str, Any], requests: list[Request],
            upstreams: Upstreams) -> list[tuple[Any, Any]]:
    """Send every request to both; assert equal client-visible results and upstream requests."""
    pair = start_pair(tmp_path, envoy_binary, config)
    results = []
    try:
        for request in requests:
            upstreams.take()
            envoy_status, envoy_headers, envoy_body = pair.send(pair.envoy_port, request)
            envoy_upstream = upstreams.take()
            ours_status, ours_headers, ours_body = pair.send(pair.sidecar_port, request)
            ours_upstream = upstreams.take()
            envoy_view = (envoy_status, normalise_headers(envoy_headers), envoy_body, envoy_upstream)
            ours_view = (ours_status, normalise_headers(ours_headers), ours_body, ours_upstream)
            assert ours_view == envoy_view, f"request {request}"
            results.append((envoy_view, ours_view))
    finally:
        pair.sidecar.stop()
        pair.envoy.stop()
    return results


def vhosts(*hosts: dict[str, Any]) -> list[dict[str, Any]]:
    return list(hosts)


def route(match: dict[str, Any], action: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"match": match, "route": action or {"cluster": "a"}, **extra}


def three_clusters(upstreams: Upstreams) -> list[dict[str, Any]]:
    return [cluster(name, upstreams.port(name)) for name in ("a", "b", "c")]


def test_routing_by_domain_path_headers_and_query(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    config = bootstrap(
        virtual_hosts=vhosts(
            {"name": "exact", "domains": ["api.example.com"], "routes": [route({"prefix": "/"}, {"cluster": "a"})]},
            {"name": "suffix", "domains": ["*.example.com"], "routes": [route({"prefix": "/"}, {"cluster": "b"})]},
            {"name": "prefix", "domains": ["shop.*"], "routes": [route({"prefix": "/"}, {"cluster": "c"})]},
            {"name": "any", "domains": ["*"], "routes": [
                route({"path": "/exact"}, {"cluster": "a"}),
                route({"safe_regex": {"regex": "/items/[0-9]+"}}, {"cluster": "b"}),
                route({"path_separated_prefix": "/api"}, {"cluster": "c"}),
                route({"prefix": "/CASE", "case_sensitive": False}, {"cluster": "a"}),
                route({"prefix": "/", "headers": [{"name": "x-canary", "string_match": {"exact": "yes"}}]},
                      {"cluster": "b"}),
                route({"prefix": "/", "query_parameters": [{"name": "debug", "present_match": True}]},
                      {"cluster": "c"}),
                route({"prefix": "/"}, {"cluster": "a"}),
            ]},
        ),
        clusters=three_clusters(upstreams),
    )
    requests = [
        {"host": "api.example.com"}, {"host": "www.example.com"}, {"host": "shop.local"},
        {"host": "api.example.com:8080"}, {"path": "/exact?x=1"}, {"path": "/items/12"},
        {"path": "/items/12/x"}, {"path": "/api"}, {"path": "/api/v1"}, {"path": "/apis"}, {"path": "/case/x"},
        {"headers": [("X-Canary", "yes")]}, {"path": "/q?debug"}, {"path": "/q?debug=1&x=2"},
    ]
    compare(tmp_path, envoy_binary, config, requests, upstreams)


def test_rewrites_and_header_mutations(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    config = bootstrap(
        virtual_hosts=vhosts({
            "name": "v", "domains": ["*"],
            "request_headers_to_add": [{"header": {"key": "x-level", "value": "vhost"}}],
            "response_headers_to_add": [{"header": {"key": "x-resp-level", "value": "vhost"}}],
            "routes": [
                route({"prefix": "/api/"}, {"cluster": "a", "prefix_rewrite": "/v2/"},
                      request_headers_to_add=[{"header": {"key": "x-level", "value": "route"}},
                                              {"header": {"key": "x-client",
                                                          "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}],
                      request_headers_to_remove=["x-secret"],
                      response_headers_to_remove=["x-upstream"]),
                route({"prefix": "/svc/"}, {"cluster": "b", "regex_rewrite": {
                    "pattern": {"regex": "^/svc/([^/]+)/(.*)$"}, "substitution": "/\\2/of/\\1"},
                    "host_rewrite_literal": "internal.svc"}),
                route({"path": "/old"}, {"cluster": "c", "prefix_rewrite": "/new"}),
            ]}),
        clusters=three_clusters(upstreams),
        route_config_extra={
            "request_headers_to_add": [{"header": {"key": "x-level", "value": "global"},
                                        "append_action": "ADD_IF_ABSENT"},
                                       {"header": {"key": "x-global", "value": "g"},
                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
            "response_headers_to_add": [{"header": {"key": "x-resp-global", "value": "%REQ(x-level)%"}}],
        },
    )
    requests = [
        {"path": "/api/users?id=7", "headers": [("X-Secret", "s"), ("X-Global", "client")]},
        {"path": "/svc/orders/list?all=1"},
        {"path": "/old?keep=query"},
    ]
    compare(tmp_path, envoy_binary, config, requests, upstreams)


def test_direct_responses_redirects_and_local_replies(tmp_path: Path, envoy_binary: str,
                                                      upstreams: Upstreams) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there: connection refused
    config = bootstrap(
        virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [
            {"match": {"prefix": "/teapot"}, "direct_response": {"status": 418, "body": {"inline_string": "short"}},
             "response_headers_to_add": [{"header": {"key": "x-direct", "value": "1"}}]},
            {"match": {"prefix": "/empty"}, "direct_response": {"status": 204}},
            {"match": {"prefix": "/moved"}, "redirect": {"path_redirect": "/new-home"}},
            {"match": {"prefix": "/secure"}, "redirect": {"https_redirect": True}},
            {"match": {"prefix": "/elsewhere"}, "redirect": {"host_redirect": "other.example.org", "port_redirect": 8443,
                                                              "response_code": "PERMANENT_REDIRECT",
                                                              "strip_query": True}},
            {"match": {"prefix": "/prefixed/"}, "redirect": {"prefix_rewrite": "/p/", "response_code": "FOUND"}},
            {"match": {"prefix": "/dead"}, "route": {"cluster": "dead"}},
            {"match": {"prefix": "/nocluster"}, "route": {"cluster_header": "x-pick"}},
            {"match": {"prefix": "/known"}, "route": {"cluster": "a"}},
        ]}),
        clusters=[*three_clusters(upstreams), cluster("dead", dead_port)],
        route_config_extra={"validate_clusters": False},
    )
    requests = [
        {"path": "/teapot"}, {"path": "/empty"}, {"path": "/moved?q=1"}, {"path": "/secure/x?y=2", "host": "ex.com:80"},
        {"path": "/elsewhere/a?b=c"}, {"path": "/prefixed/x/y"}, {"path": "/dead"},
        {"path": "/nocluster", "headers": [("x-pick", "nope")]}, {"path": "/unrouted", "host": "x"},
        {"path": "/known", "method": "HEAD"}, {"path": "/known", "method": "POST", "body": b"payload"},
    ]
    compare(tmp_path, envoy_binary, config, requests, upstreams)


def test_no_route_is_404_in_both(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    config = bootstrap(virtual_hosts=vhosts({"name": "v", "domains": ["known.example"], "routes": [
        route({"prefix": "/only"}, {"cluster": "a"})]}), clusters=three_clusters(upstreams))
    compare(tmp_path, envoy_binary, config,
            [{"host": "known.example", "path": "/other"}, {"host": "unknown.example"},
             {"host": "known.example", "path": "/only/x"}], upstreams)


def test_retries_on_5xx_and_retriable_4xx(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    upstreams.servers["b"].set_response(503, [("x-upstream", "b")], "busy")
    upstreams.servers["c"].set_response(409, [("x-upstream", "c")], "conflict")
    config = bootstrap(
        virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [
            route({"prefix": "/five"}, {"cluster": "b", "retry_policy": {
                "retry_on": "5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.005s"}}}),
            route({"prefix": "/gateway"}, {"cluster": "b", "retry_policy": {
                "retry_on": "gateway-error", "num_retries": 1, "retry_back_off": {"base_interval": "0.005s"}}}),
            route({"prefix": "/four"}, {"cluster": "c", "retry_policy": {
                "retry_on": "retriable-4xx", "num_retries": 3, "retry_back_off": {"base_interval": "0.005s"}}}),
            route({"prefix": "/none"}, {"cluster": "c", "retry_policy": {"retry_on": "5xx", "num_retries": 3}}),
        ]}),
        clusters=three_clusters(upstreams),
    )
    results = compare(tmp_path, envoy_binary, config,
                      [{"path": "/five"}, {"path": "/gateway"}, {"path": "/four"}, {"path": "/none"},
                       {"path": "/five", "method": "POST", "body": b"replayed body"}], upstreams)
    attempts = [len(envoy_view[3]) for envoy_view, _ in results]
    assert attempts == [3, 2, 4, 1, 3]


def test_retry_moves_to_a_healthy_host(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    upstreams.servers["a"].set_response(503, [], "bad host")
    config = bootstrap(
        virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [
            route({"prefix": "/"}, {"cluster": "mixed", "retry_policy": {
                "retry_on": "5xx", "num_retries": 1, "retry_back_off": {"base_interval": "0.005s"}}})]}),
        clusters=[cluster("mixed", upstreams.port("a"), upstreams.port("b"))],
    )
    pair = start_pair(tmp_path, envoy_binary, config)
    try:
        for port in (pair.envoy_port, pair.sidecar_port):
            outcomes = [pair.send(port, {})[2] for _ in range(10)]
            assert outcomes == [b"b"] * 10
    finally:
        pair.sidecar.stop()
        pair.envoy.stop()


def fault_config(upstreams: Upstreams, fault: dict[str, Any]) -> dict[str, Any]:
    return bootstrap(
        http_filters=[{"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT, **fault}}, ROUTER_FILTER],
        virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [route({"prefix": "/"})]}),
        clusters=three_clusters(upstreams),
    )


def test_fault_aborts_fixed_and_header_controlled(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    config = fault_config(upstreams, {
        "abort": {"header_abort": {}, "percentage": {"numerator": 100}},
        "headers": [{"name": "x-chaos", "present_match": True}],
    })
    compare(tmp_path, envoy_binary, config, [
        {"headers": [("x-chaos", "1"), ("x-envoy-fault-abort-request", "429")]},
        {"headers": [("x-chaos", "1"), ("x-envoy-fault-abort-request", "503"),
                     ("x-envoy-fault-abort-request-percentage", "0")]},
        {"headers": [("x-envoy-fault-abort-request", "500")]},
        {"headers": [("x-chaos", "1")]},
    ], upstreams)
    config = fault_config(upstreams, {"abort": {"http_status": 503, "percentage": {"numerator": 100}}})
    compare(tmp_path / "fixed", envoy_binary, config, [{}, {"method": "POST", "body": b"x"}], upstreams)


def test_fault_delay(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    config = fault_config(upstreams, {"delay": {"header_delay": {}, "percentage": {"numerator": 100}}})
    pair = start_pair(tmp_path, envoy_binary, config)
    try:
        for port in (pair.envoy_port, pair.sidecar_port):
            started = time.monotonic()
            status, _, body = pair.send(port, {"headers": [("x-envoy-fault-delay-request", "300")]})
            elapsed = time.monotonic() - started
            assert (status, body) == (200, b"a") and 0.28 <= elapsed < 2.0
            started = time.monotonic()
            pair.send(port, {})
            assert time.monotonic() - started < 0.25
    finally:
        pair.sidecar.stop()
        pair.envoy.stop()


class SilentUpstream:
    """Accepts connections and never answers (drives timeouts)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def stop(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_route_and_per_try_timeouts(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    silent = SilentUpstream()
    try:
        config = bootstrap(
            virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [
                route({"prefix": "/route"}, {"cluster": "silent", "timeout": "0.3s"}),
                route({"prefix": "/try"}, {"cluster": "silent", "timeout": "2s", "retry_policy": {
                    "retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.2s",
                    "retry_back_off": {"base_interval": "0.005s"}}}),
            ]}),
            clusters=[*three_clusters(upstreams), cluster("silent", silent.port)],
        )
        compare(tmp_path, envoy_binary, config, [{"path": "/route"}, {"path": "/try"}], upstreams)
    finally:
        silent.stop()


def test_weighted_split_is_statistically_the_same(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    config = bootstrap(
        virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [route({"prefix": "/"}, {
            "weighted_clusters": {"clusters": [{"name": "a", "weight": 20}, {"name": "b", "weight": 30},
                                               {"name": "c", "weight": 50}]}})]}),
        clusters=three_clusters(upstreams),
    )
    pair = start_pair(tmp_path, envoy_binary, config)
    total = 400
    try:
        shares: dict[str, Counter[bytes]] = {}
        for name, port in (("envoy", pair.envoy_port), ("sidecar", pair.sidecar_port)):
            shares[name] = Counter(pair.send(port, {})[2] for _ in range(total))
    finally:
        pair.sidecar.stop()
        pair.envoy.stop()
    for counts in shares.values():
        for body, weight in ((b"a", 0.2), (b"b", 0.3), (b"c", 0.5)):
            # binomial: 5 standard deviations of slack (a false alarm about once in 300,000 runs per
            # cluster); an even three-way split still misses a and c by more than that
            slack = 5 * (total * weight * (1 - weight)) ** 0.5
            assert abs(counts[body] - total * weight) <= slack, counts


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received and received.split(b"\r\n\r\n", 1)[1] is not None:
                head = received.split(b"\r\n\r\n", 1)[0].lower()
                if b"content-length: 0" in head or b"connection: close" in head:
                    continue
                break
        return received


def status_line_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"BROKEN\r\n\r\n",
], ids=["http10", "no-host", "upgrade", "garbage"])
def test_protocol_edge_cases_answer_with_the_same_status(tmp_path: Path, envoy_binary: str, upstreams: Upstreams,
                                                         request_bytes: bytes) -> None:
    config = bootstrap(clusters=three_clusters(upstreams),
                       virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [route({"prefix": "/"})]}))
    pair = start_pair(tmp_path, envoy_binary, config)
    try:
        envoy = status_line_of(raw_exchange(pair.envoy_port, request_bytes))
        ours = status_line_of(raw_exchange(pair.sidecar_port, request_bytes))
    finally:
        pair.sidecar.stop()
        pair.envoy.stop()
    assert ours == envoy



@pytest.mark.parametrize("hcm_extra", [
    {},
    {"use_remote_address": True},
    {"use_remote_address": True, "xff_num_trusted_hops": 1},
    {"xff_num_trusted_hops": 1, "via": "wasmesh-test", "server_name": "edge-proxy",
     "always_set_request_id_in_response": True},
    {"use_remote_address": True, "skip_xff_append": True, "preserve_external_request_id": True,
     "server_header_transformation": "PASS_THROUGH"},
], ids=["defaults", "remote-address", "trusted-hop", "via-server-name", "skip-append"])
def test_forwarding_headers(tmp_path: Path, envoy_binary: str, upstreams: Upstreams,
                            hcm_extra: dict[str, Any]) -> None:
    config = bootstrap(
        virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [route({"prefix": "/"})],
                              "response_headers_to_add": [
                                  {"header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}]}),
        clusters=three_clusters(upstreams), hcm_extra=hcm_extra,
    )
    upstreams.servers["a"].set_response(200, [("server", "upstream-server")], "a")
    compare(tmp_path, envoy_binary, config, [
        {},
        {"headers": [("X-Forwarded-For", "203.0.113.7, 198.51.100.2"), ("X-Forwarded-Proto", "https")]},
        {"headers": [("X-Request-Id", "client-chosen-id"), ("Via", "1.1 earlier")]},
        {"headers": [("X-Envoy-Internal", "true"), ("X-Envoy-Max-Retries", "3"),
                     ("X-Envoy-Upstream-Rq-Timeout-Ms", "10"), ("Connection", "keep-alive, x-hop"),
                     ("X-Hop", "1"), ("Te", "trailers")]},
    ], upstreams)


def test_access_log_and_stats_match(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    logs = {"envoy": tmp_path / "envoy-access.log", "sidecar": tmp_path / "sidecar-access.log"}
    upstreams.servers["b"].set_response(503, [], "busy")

    def config_for(name: str) -> dict[str, Any]:
        return bootstrap(
            http_filters=[{"name": "envoy.filters.http.fault", "typed_config": {
                "@type": FAULT, "abort": {"header_abort": {}, "percentage": {"numerator": 100}}}}, ROUTER_FILTER],
            virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [
                route({"prefix": "/a"}, {"cluster": "a"}),
                route({"prefix": "/b"}, {"cluster": "b", "retry_policy": {
                    "retry_on": "5xx", "num_retries": 1, "retry_back_off": {"base_interval": "0.005s"}}}),
                {"match": {"prefix": "/direct"}, "direct_response": {"status": 202}},
            ]}),
            clusters=three_clusters(upstreams),
            hcm_extra={"access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(logs[name])}}]},
        )

    requests: list[Request] = [
        {"path": "/a/x?y=1", "headers": [("User-Agent", "probe/1"), ("X-Forwarded-For", "198.51.100.9")]},
        {"path": "/b"}, {"path": "/direct"}, {"path": "/nowhere"},
        {"path": "/a", "headers": [("x-envoy-fault-abort-request", "418")]},
        {"path": "/a", "method": "POST", "body": b"12345"},
    ]
    stats = {}
    with EnvoyProcess(config_for("envoy"), workdir=tmp_path / "envoy", binary=envoy_binary,
                      component_log_level="misc:info") as envoy:
        port = next(iter(envoy.listener_ports().values()))
        for request in requests:
            Pair.send(None, port, request)  # type: ignore[arg-type]
        time.sleep(1.5)  # access logs are flushed every second
        stats["envoy"] = envoy.stats()
    with SidecarProcess(config_for("sidecar"), workdir=tmp_path / "sidecar") as sidecar:
        port = sidecar.listener_ports()["listener_0"]
        for request in requests:
            Pair.send(None, port, request)  # type: ignore[arg-type]
        time.sleep(1.5)
        stats["sidecar"] = sidecar.stats()

    import re

    def masked(path: Path) -> list[str]:
        lines = []
        for line in path.read_text().splitlines():
            line = re.sub(r"^\[[^]]+\]", "[TIME]", line)
            line = re.sub(r'" (\d{3}) (\S+) (\d+) (\d+) \d+ (\S+) "', lambda m: f'" {m.group(1)} {m.group(2)} '
                          f'{m.group(3)} {m.group(4)} DURATION {"-" if m.group(5) == "-" else "SVC"} "', line)
            line = re.sub(r'"[0-9a-f]{8}-[0-9a-f-]{27}"', '"REQUEST-ID"', line)
            lines.append(line)
        return lines

    assert masked(logs["sidecar"]) == masked(logs["envoy"])
    keys = ["http.ingress_http.downstream_rq_total", "http.ingress_http.downstream_rq_2xx",
            "http.ingress_http.downstream_rq_4xx", "http.ingress_http.downstream_rq_5xx",
            "http.ingress_http.downstream_rq_completed", "http.ingress_http.no_route",
            "http.ingress_http.rq_direct_response", "http.ingress_http.fault.aborts_injected",
            "cluster.a.upstream_rq_total", "cluster.a.upstream_rq_2xx", "cluster.a.upstream_rq_200",
            "cluster.b.upstream_rq_5xx", "cluster.b.upstream_rq_503", "cluster.b.upstream_rq_retry",
            "cluster.a.upstream_cx_total", "cluster.b.upstream_rq_total"]
    assert {k: stats["sidecar"].get(k) for k in keys} == {k: stats["envoy"].get(k) for k in keys}


def dns_cluster(name: str, kind: str, port: int) -> dict[str, Any]:
    config = cluster(name, port)
    config["type"] = kind
    config["dns_lookup_family"] = "V4_ONLY"
    config["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
        "address"] = "localhost"
    return config


def test_dns_clusters(tmp_path: Path, envoy_binary: str, upstreams: Upstreams) -> None:
    config = bootstrap(
        virtual_hosts=vhosts({"name": "v", "domains": ["*"], "routes": [
            route({"prefix": "/strict"}, {"cluster": "strict", "auto_host_rewrite": True}),
            route({"prefix": "/logical"}, {"cluster": "logical"}),
        ]}),
        clusters=[dns_cluster("strict", "STRICT_DNS", upstreams.port("a")),
                  dns_cluster("logical", "LOGICAL_DNS", upstreams.port("b"))],
    )
    compare(tmp_path, envoy_binary, config, [{"path": "/strict"}, {"path": "/logical"}], upstreams)
