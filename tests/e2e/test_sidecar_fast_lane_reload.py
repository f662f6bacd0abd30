"""Reloads while the fast lane serves: every request takes the listener's current configuration.

The lane reads the listener's context per request, so a keep-alive connection follows a reload
on its next request, and a reload that makes a route the full path's hands the connection over
between two requests. Under load, flipping the route between two clusters fails no request.
(With the lane absent the same holds for the full path; the tests are meaningful either way.)
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._upstream import ScriptedUpstream
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e]

LOAD_S = 4.0
SWAP_EVERY_S = 0.4
CLIENTS = 4


@pytest.fixture()
def upstreams() -> Iterator[tuple[ScriptedUpstream, ScriptedUpstream]]:
    with ScriptedUpstream(body=b"one") as one, ScriptedUpstream(body=b"two") as two:
        yield one, two


def _config(upstreams: tuple[ScriptedUpstream, ScriptedUpstream], target: str, **route_extra: Any) -> dict[str, Any]:
    route = {"match": {"prefix": "/"}, "route": {"cluster": target}, **route_extra}
    return bootstrap([{"name": "all", "domains": ["*"], "routes": [route]}],
                     clusters=[cluster("one", upstreams[0].port), cluster("two", upstreams[1].port)])


def _lane_runs() -> bool:
    """Whether the sidecars started here run the fast lane (compiled, current, not turned off)."""
    from wasmhost import _native

    if os.environ.get(_native.DISABLE_ENV) == "1" or os.environ.get("WASMESH_FAST_LANE") == "0":
        return False
    return all(entry["built"] and not entry["stale"] for entry in _native.status().values())


def _get(connection: http.client.HTTPConnection) -> tuple[int, dict[str, str], bytes]:
    connection.request("GET", "/", headers={"Host": "lane.test"})
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _wait_for(port: int, check: Any, timeout: float = 15.0) -> None:
    """Poll on new connections until ``check(status, headers, body)`` holds (the reload has landed)."""
    deadline = time.monotonic() + timeout
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            if check(*_get(connection)):
                return
        finally:
            connection.close()
        assert time.monotonic() < deadline, "the reload did not take effect"
        time.sleep(0.05)


def test_a_keep_alive_connection_follows_reloads_and_is_handed_over_between_requests(
        tmp_path: Path, upstreams: tuple[ScriptedUpstream, ScriptedUpstream]) -> None:
    with SidecarProcess(_config(upstreams, "one"), workdir=tmp_path / "sidecar") as sidecar:
        port = next(iter(sidecar.listener_ports().values()))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            assert _get(connection)[::2] == (200, b"one")
            sidecar.write_config(_config(upstreams, "two"))
            _wait_for(port, lambda status, headers, body: body == b"two")
            assert _get(connection)[::2] == (200, b"two")  # the same connection, the new route
            # a response header to add: only the full path serves this route now
            sidecar.write_config(_config(upstreams, "two", response_headers_to_add=[
                {"header": {"key": "x-served-by", "value": "full-path"}}]))
            _wait_for(port, lambda status, headers, body: headers.get("x-served-by") == "full-path")
            for _ in range(3):
                status, headers, body = _get(connection)
                assert (status, body, headers.get("x-served-by")) == (200, b"two", "full-path")
            sidecar.write_config(_config(upstreams, "one"))
            _wait_for(port, lambda status, headers, body: body == b"one")
            status, headers, body = _get(connection)  # handed over for good: the full path serves it
            assert (status, body, "x-served-by" in headers) == (200, b"one", False)
        finally:
            connection.close()
        stats = sidecar.stats()
    assert stats["http.ingress_http.downstream_rq_2xx"] >= 7
    assert stats["http.ingress_http.downstream_rq_active"] == 0
    if _lane_runs():
        # the first two requests on the lane; the connection handed over when its route stopped qualifying
        assert stats["http.ingress_http.fast_lane.rq_total"] >= 2
        assert stats["http.ingress_http.fast_lane.handoff_total"] >= 1


class _Client(threading.Thread):
    """Keep-alive requests until ``until``; records bodies and failures."""

    def __init__(self, port: int, until: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.until = until
        self.bodies: list[bytes] = []
        self.failures: list[str] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            while time.monotonic() < self.until:
                try:
                    status, _, body = _get(connection)
                except (OSError, http.client.HTTPException) as err:
                    self.failures.append(repr(err))
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                    continue
                if status != 200 or body not in (b"one", b"two"):
                    self.failures.append(f"{status} {body!r}")
                self.bodies.append(body)
        finally:
            connection.close()


def test_flipping_the_route_under_load_fails_no_request(tmp_path: Path,
                                                        upstreams: tuple[ScriptedUpstream, ScriptedUpstream]) -> None:
    configs = [_config(upstreams, "one"), _config(upstreams, "two")]
    with SidecarProcess(configs[0], workdir=tmp_path / "sidecar") as sidecar:
        port = next(iter(sidecar.listener_ports().values()))
        until = time.monotonic() + LOAD_S
        clients = [_Client(port, until) for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        swaps = 0
        while time.monotonic() < until - SWAP_EVERY_S:
            time.sleep(SWAP_EVERY_S)
            swaps += 1
            sidecar.write_config(configs[swaps % 2])
        for client in clients:
            client.join(timeout=LOAD_S + 30)
        log = sidecar.log_text()
    failures = [failure for client in clients for failure in client.failures]
    bodies = [body for client in clients for body in client.bodies]
    assert not failures, failures[:5]
    assert swaps >= 6 and "config reload rejected" not in log
    assert len(bodies) > 100 and {b"one", b"two"} <= set(bodies)


def test_lane_counts_reach_the_stats_of_every_worker_process(tmp_path: Path,
                                                            upstreams: tuple[ScriptedUpstream, ScriptedUpstream]) -> None:
    """With two worker processes, each adds its lane counts to the stats the admin merges."""
    with SidecarProcess(_config(upstreams, "one"), workdir=tmp_path / "sidecar", concurrency=2) as sidecar:
        port = next(iter(sidecar.listener_ports().values()))
        before = sidecar.stats()
        for _ in range(40):  # new connections, so both workers take some
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                assert _get(connection)[::2] == (200, b"one")
            finally:
                connection.close()
        after = sidecar.stats()

    def grew(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    assert grew("http.ingress_http.downstream_rq_total") == 40
    assert grew("http.ingress_http.downstream_rq_2xx") == 40
    assert grew("cluster.one.upstream_rq_total") == 40 and grew("cluster.one.upstream_rq_200") == 40
    assert after["http.ingress_http.downstream_rq_active"] == 0 and after["cluster.one.upstream_rq_active"] == 0
