"""The sidecar as a real process on 127.0.0.1: streaming, keep-alive, admin, access logs, reload."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster, hcm_of
from tests.wasmhost.sidecar._process import SidecarProcess, http_request

pytestmark = pytest.mark.e2e


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream(200, [("content-type", "text/plain")], "from-upstream").start()
    try:
        yield server
    finally:
        server.stop()


def run(tmp_path: Path, config: dict[str, Any]) -> SidecarProcess:
    return SidecarProcess(config, workdir=tmp_path)


def port_of(sidecar: SidecarProcess) -> int:
    return sidecar.listener_ports()["listener_0"]


def test_get_is_proxied_with_envoy_headers(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with run(tmp_path, bootstrap(clusters=[cluster("backend", upstream.port)])) as sidecar:
        status, headers, body = http_request(port_of(sidecar), path="/hello?x=1", headers=[("X-Test", "1")])
    assert (status, body) == (200, b"from-upstream")
    names = [name for name, _ in headers]
    assert "x-envoy-upstream-service-time" in names and ("server", "envoy") in headers
    seen = upstream.requests[0]
    assert seen.path == "/hello?x=1"
    sent = {name.lower(): value for name, value in seen.headers}
    assert sent["x-test"] == "1" and sent["x-forwarded-proto"] == "http"
    assert sent["x-envoy-expected-rq-timeout-ms"] == "15000" and len(sent["x-request-id"]) == 36


def test_keep_alive_on_both_sides(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    import http.client

    with run(tmp_path, bootstrap(clusters=[cluster("backend", upstream.port)])) as sidecar:
        connection = http.client.HTTPConnection("127.0.0.1", port_of(sidecar), timeout=5)
        for _ in range(5):
            connection.request("GET", "/")
            assert connection.getresponse().read() == b"from-upstream"
        connection.close()
        stats = sidecar.stats()
    assert stats["http.ingress_http.downstream_cx_total"] == 1
    assert stats["cluster.backend.upstream_cx_total"] == 1
    assert stats["cluster.backend.upstream_rq_total"] == 5
    assert stats["http.ingress_http.downstream_rq_2xx"] == 5


def test_large_chunked_upload_and_download_stream_through(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    upstream.set_response(200, [], payload)
    with run(tmp_path, bootstrap(clusters=[cluster("backend", upstream.port)])) as sidecar:
        sock = socket.create_connection(("127.0.0.1", port_of(sidecar)))
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        for offset in range(0, len(payload), 65536):
            chunk = payload[offset:offset + 65536]
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        head, _, rest = received.partition(b"\r\n\r\n")
        length = int([line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0]
                     .split(b":")[1])
        while len(rest) < length:
            rest += sock.recv(1 << 20)
        sock.close()
    assert upstream.requests[0].body == payload
    assert rest == payload


def test_pipelined_requests_are_answered_in_order(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with run(tmp_path, bootstrap(clusters=[cluster("backend", upstream.port)])) as sidecar:
        sock = socket.create_connection(("127.0.0.1", port_of(sidecar)))
        sock.sendall(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"from-upstream") < 2 and time.monotonic() < deadline:
            data += sock.recv(65536)
        sock.close()
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert [r.path for r in upstream.requests] == ["/1", "/2"]


def test_head_and_no_content(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with run(tmp_path, bootstrap(clusters=[cluster("backend", upstream.port)])) as sidecar:
        status, headers, body = http_request(port_of(sidecar), method="HEAD")
        assert (status, body) == (200, b"")
        upstream.set_response(204, [], b"")
        status, headers, body = http_request(port_of(sidecar))
        assert (status, body) == (204, b"")


def test_bad_request_gets_400_and_close(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with run(tmp_path, bootstrap(clusters=[cluster("backend", upstream.port)])) as sidecar:
        sock = socket.create_connection(("127.0.0.1", port_of(sidecar)))
        sock.sendall(b"GARBAGE\r\n\r\n")
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 400 Bad Request")
        assert sock.recv(65536) == b""  # closed
        sock.close()


def test_admin_endpoints(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    with run(tmp_path, bootstrap(clusters=[cluster("backend", upstream.port)])) as sidecar:
        http_request(port_of(sidecar))
        assert sidecar.admin_get("/ready") == "LIVE\n"
        info = json.loads(sidecar.admin_get("/server_info"))
        assert info["state"] == "LIVE"
        dump = json.loads(sidecar.admin_get("/config_dump"))
        assert dump["configs"][0]["@type"].endswith("BootstrapConfigDump")
        assert dump["configs"][0]["bootstrap"]["static_resources"]["clusters"][0]["name"] == "backend"
        clusters = sidecar.admin_get("/clusters")
        assert f"backend::127.0.0.1:{upstream.port}::rq_total::1" in clusters
        assert f"backend::127.0.0.1:{upstream.port}::health_flags::healthy" in clusters
        assert "http.ingress_http.downstream_rq_2xx: 1" in sidecar.admin_get("/stats?filter=downstream_rq_2xx")
        prometheus = sidecar.admin_get("/stats/prometheus")
        assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 1.0' in prometheus
        assert 'envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="ingress_http",' \
               'envoy_response_code_class="2"} 1.0' in prometheus
        assert "router: debug" in sidecar.admin_post("/logging?router=debug")
        assert "server.live: 1" in sidecar.admin_get("/stats?filter=^server")
        assert "envoy_server_live 1.0" in sidecar.admin_get("/stats?format=prometheus")


def test_access_log_to_file(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    log_file = tmp_path / "access.log"
    config = bootstrap(clusters=[cluster("backend", upstream.port)], hcm_extra={"access_log": [{
        "name": "envoy.access_loggers.file",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                         "path": str(log_file),
                         "log_format": {"text_format_source": {
                             "inline_string": "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_CLUSTER% "
                                              "%RESPONSE_FLAGS%\n"}}}}]})
    with run(tmp_path, config) as sidecar:
        http_request(port_of(sidecar), path="/logged")
        deadline = time.monotonic() + 5
        while (not log_file.exists() or not log_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert log_file.read_text() == "GET /logged 200 backend -\n"


def direct(body: str) -> dict[str, Any]:
    return bootstrap(virtual_hosts=[{"name": "v", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": body}}}]}])


def wait_for_body(port: int, expected: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_request(port)[2] == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"never saw {expected!r}")


def test_reload_applies_good_config_and_rejects_bad_one(tmp_path: Path) -> None:
    with run(tmp_path, direct("one")) as sidecar:
        port = port_of(sidecar)
        assert http_request(port)[2] == b"one"
        sidecar.write_config(direct("two"))
        wait_for_body(port, b"two")
        broken = direct("three")
        hcm_of(broken)["route_config"]["virtual_hosts"][0]["bogus_field"] = 1
        sidecar.write_config(broken)
        deadline = time.monotonic() + 10
        while "config reload rejected" not in sidecar.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "route_config.virtual_hosts[0].bogus_field" in sidecar.log_text()
        assert http_request(port)[2] == b"two"


class SlowUpstream:
    """Accepts one request per connection and answers after ``delay`` seconds with a fixed body."""

    def __init__(self, body: bytes, delay: float) -> None:
        self.body = body
        self.delay = delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            time.sleep(self.delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                         % (len(self.body), self.body))

    def stop(self) -> None:
        self._stop = True
        self.sock.close()


def test_in_flight_stream_finishes_on_the_old_plan(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    slow = SlowUpstream(b"old-plan", 1.5)
    try:
        old = bootstrap(clusters=[cluster("backend", slow.port)])
        new = bootstrap(clusters=[cluster("backend", upstream.port)])
        with run(tmp_path, old) as sidecar:
            port = port_of(sidecar)
            result: dict[str, Any] = {}
            thread = threading.Thread(target=lambda: result.update(r=http_request(port)))
            thread.start()
            time.sleep(0.3)
            sidecar.write_config(new)
            wait_for_body(port, b"from-upstream")
            thread.join(10)
            assert result["r"][0] == 200 and result["r"][2] == b"old-plan"
    finally:
        slow.stop()


def test_reload_under_load_has_no_failed_requests(tmp_path: Path) -> None:
    with run(tmp_path, direct("v1")) as sidecar:
        port = port_of(sidecar)
        failures: list[str] = []
        bodies: set[bytes] = set()
        stop = time.monotonic() + 4.0

        def client() -> None:
            import http.client

            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            while time.monotonic() < stop:
                try:
                    connection.request("GET", "/")
                    response = connection.getresponse()
                    body = response.read()
                    if response.status != 200:
                        failures.append(f"status {response.status}")
                    bodies.add(body)
                except Exception as err:  # every failure counts, whatever it is
                    failures.append(repr(err))
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.close()

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        version = 1
        while time.monotonic() < stop - 0.5:
            time.sleep(0.4)
            version += 1
            sidecar.write_config(direct(f"v{version}"))
        for thread in threads:
            thread.join(10)
    assert failures == []
    assert len(bodies) >= 3


def test_concurrency_workers_share_the_port_and_reload_together(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    sidecar = SidecarProcess(bootstrap(clusters=[cluster("backend", upstream.port)]), workdir=tmp_path,
                             concurrency=2)
    with sidecar:
        port = port_of(sidecar)
        for _ in range(60):
            assert http_request(port)[2] == b"from-upstream"
        stats = sidecar.stats()
        prefix = f"listener.127.0.0.1_{port}"
        per_worker = [stats.get(f"{prefix}.worker_{i}.downstream_cx_total", 0) for i in range(2)]
        assert sum(per_worker) == 60 and min(per_worker) > 0
        assert stats["cluster.backend.upstream_rq_total"] == 60
        sidecar.write_config(direct("reloaded"))
        deadline = time.monotonic() + 15
        seen: set[bytes] = set()
        while time.monotonic() < deadline:
            seen = {http_request(port)[2] for _ in range(20)}
            if seen == {b"reloaded"}:
                break
            time.sleep(0.1)
        assert seen == {b"reloaded"}
