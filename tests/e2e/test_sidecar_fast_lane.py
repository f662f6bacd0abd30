"""The sidecar's fast lane (``_lane.pyx``) against its full request path, byte for byte.

Two ``wasmesh sidecar`` processes run the same bootstrap: one as it starts by default (the
lane takes plain-TCP connections when ``make native`` compiled it), one with
``WASMESH_FAST_LANE=0`` (the full path only). Each has its own raw-socket upstream that
records every request's exact bytes and answers with scripted raw bytes. Every case sends the
same raw client bytes to both proxies and compares what each end saw: the request bytes at
the upstream (x-request-id values aside), the response bytes at the client (date, x-request-id
and x-envoy-upstream-service-time values aside), how the client connection ended, and the
change of the connection manager's and the clusters' counters. Every case starts with no
upstream connection open (the upstreams close what earlier cases left in the proxies' pools).

The lane serves only body-less HTTP/1.1 requests to simple routes and hands everything else to
the full path, so the cases cover both what it serves and what it must hand over unchanged.
"""

from __future__ import annotations

import email.utils
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests._tools import ROOT
from tests.e2e._socket_server import SocketServer
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e]

LANE_ENV = "WASMESH_FAST_LANE"
STAT_PREFIX = "ingress_http"
CLUSTERS = ("backend", "dead")
ROUTE_TIMEOUT = "0.5s"
WRITE_GAP_S = 0.1  # between scripted writes, so each arrives in a read of its own (in both proxies)
CLIENT_TIMEOUT_S = 5.0
UPSTREAM_IDLE_S = 120.0  # an upstream connection stays open for as long as the proxy keeps it
SETTLE_S = 3.0

_LANE_PROBE = "from wasmhost.sidecar._worker import LANE; print(LANE is not None)"


# --- the lane must exist when compiled ---------------------------------------------------------


def _probe_lane(env_update: dict[str, str | None]) -> bool:
    """Whether a fresh interpreter's worker picks the lane, with ``env_update`` applied (None: unset)."""
    env = dict(os.environ)
    for name, value in env_update.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    out = subprocess.run([sys.executable, "-c", _LANE_PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout.strip()
    return out == "True"


def _skip_or_fail(reason: str) -> None:
    """Skip, or fail under CI=true (CI must never pass by skipping)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the compiled lane must be tested)")
    pytest.skip(reason)


def _compiled_current() -> bool:
    from wasmhost import _native

    report = _native.status()
    return all(entry["built"] and not entry["stale"] for entry in report.values())


def test_the_lane_is_active_when_compiled() -> None:
    """With the compiled copies current, the worker takes plain-TCP connections on the lane."""
    if not _compiled_current():
        _skip_or_fail("the compiled copies are missing or stale; `make native` builds them")
    from wasmhost import _native

    if os.environ.get(_native.DISABLE_ENV) == "1":
        _skip_or_fail(f"{_native.DISABLE_ENV}=1 turns every compiled module off")
    assert _probe_lane({LANE_ENV: None}), "the lane is compiled but the worker does not use it"
    assert not _probe_lane({LANE_ENV: "0"}), f"{LANE_ENV}=0 must turn the lane off"


# --- the scripted upstream ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the upstream does with one request: write ``writes`` (a gap between them), then maybe close.

    ``hang``: never answer (wait until the proxy closes); ``close`` with no writes: close at once.
    """

    writes: tuple[bytes, ...] = ()
    close: bool = False
    hang: bool = False


def reply(*writes: bytes, close: bool = False) -> Reply:
    return Reply(tuple(writes), close=close)


OK_EMPTY = reply(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
OK_BODY = reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream: One\r\ncontent-length: 5\r\n"
                b"\r\nhello")


def _read_request(connection: socket.socket, buffer: bytearray) -> bytes | None:
    """One request off ``buffer`` (reading more as needed): head plus a content-length or chunked body."""
    while b"\r\n\r\n" not in buffer:
        data = connection.recv(65536)
        if not data:
            return None
        buffer += data
    head_end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:head_end]).lower()
    length_match = re.search(rb"\r\ncontent-length: *(\d+)", head)
    if length_match:
        end = head_end + int(length_match.group(1))
    elif re.search(rb"\r\ntransfer-encoding:[^\r]*chunked", head):
        while not re.search(rb"\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n", bytes(buffer[head_end - 2:])):
            data = connection.recv(65536)
            if not data:
                return None
            buffer += data
        found = re.search(rb"\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n", bytes(buffer[head_end - 2:]))
        assert found is not None
        end = head_end - 2 + found.end()
    else:
        end = head_end
    while len(buffer) < end:
        data = connection.recv(65536)
        if not data:
            return None
        buffer += data
    request = bytes(buffer[:end])
    del buffer[:end]
    return request


class RawUpstream:
    """A loopback upstream that records each request's exact bytes with its connection's number."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: list[Reply] = []
        self._connections = 0
        self._live: set[socket.socket] = set()
        self.requests: list[tuple[int, bytes]] = []
        self.unexpected = 0
        self._server = SocketServer(self._session)
        self.port = self._server.port

    def script(self, replies: Sequence[Reply]) -> None:
        """The replies for the next requests, in order; forget what was recorded so far."""
        with self._lock:
            self._replies = list(replies)
            self.requests = []
            self.unexpected = 0

    def _next_reply(self, number: int, request: bytes) -> Reply:
        with self._lock:
            self.requests.append((number, request))
            if self._replies:
                return self._replies.pop(0)
            self.unexpected += 1
            return OK_EMPTY

    def _session(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            number = self._connections
            self._live.add(connection)
        try:
            self._serve(connection, number)
        finally:
            with self._lock:
                self._live.discard(connection)

    def close_all(self) -> None:
        """End every open connection from this side (the proxy sees its pooled connections close)."""
        with self._lock:
            live = list(self._live)
        for connection in live:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve(self, connection: socket.socket, number: int) -> None:
        connection.settimeout(UPSTREAM_IDLE_S)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        while True:
            request = _read_request(connection, buffer)
            if request is None:
                return
            answer = self._next_reply(number, request)
            if answer.hang:
                while connection.recv(65536):
                    pass
                return
            for index, chunk in enumerate(answer.writes):
                if index:
                    time.sleep(WRITE_GAP_S)
                connection.sendall(chunk)
            if answer.close:
                return  # the caller's ``with`` closes the socket

    def stop(self) -> None:
        self._server.stop()


# --- the two proxies ---------------------------------------------------------------------------


class EnvSidecar(SidecarProcess):
    """The sidecar with ``WASMESH_FAST_LANE`` set (or unset: None) in its environment."""

    def __init__(self, *args: Any, lane_env: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lane_env = lane_env

    def command(self, admin_path: Path) -> list[str]:
        setting = ["-u", LANE_ENV] if self.lane_env is None else [f"{LANE_ENV}={self.lane_env}"]
        return ["env", *setting, *super().command(admin_path)]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proxy_config(upstream_port: int, dead_port: int) -> dict[str, Any]:
    routes = [
        {"match": {"path": "/exact"}, "route": {"cluster": "backend"}},
        {"match": {"prefix": "/slow"}, "route": {"cluster": "backend", "timeout": ROUTE_TIMEOUT}},
        {"match": {"prefix": "/dead"}, "route": {"cluster": "dead"}},
        {"match": {"prefix": "/rewrite/"}, "route": {"cluster": "backend", "prefix_rewrite": "/new/"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
    ]
    virtual_hosts = [{"name": "all", "domains": ["*"], "routes": routes}]
    clusters = [cluster("backend", upstream_port), cluster("dead", dead_port)]
    config = bootstrap(virtual_hosts, clusters)
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stat_prefix"] = STAT_PREFIX
    return config


@dataclass
class Side:
    """One proxy with its own upstream."""

    name: str
    proxy: EnvSidecar
    upstream: RawUpstream
    port: int = 0


@dataclass
class Pair:
    lane: Side
    full: Side

    @property
    def sides(self) -> tuple[Side, Side]:
        return (self.lane, self.full)


@pytest.fixture(scope="module")
def lane_available() -> None:
    if not _probe_lane({LANE_ENV: None}):
        _skip_or_fail("the fast lane is not compiled (`make native` builds it) or compiled code is off")


@pytest.fixture(scope="module")
def pair(lane_available: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    dead_port = _closed_port()
    started: list[Side] = []
    try:
        for name, lane_env in (("lane", None), ("full", "0")):
            upstream = RawUpstream()
            proxy = EnvSidecar(proxy_config(upstream.port, dead_port),
                               workdir=tmp_path_factory.mktemp(f"sidecar-{name}"), lane_env=lane_env)
            side = Side(name, proxy, upstream)
            started.append(side)
            side.proxy.start()
            side.port = side.proxy.listener_ports()["listener_0"]
        yield Pair(started[0], started[1])
    finally:
        for side in started:
            side.proxy.stop()
            side.upstream.stop()


# --- the client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Send ``sends`` (a gap between them), then read one response per method in ``methods``."""

    sends: tuple[bytes, ...]
    methods: tuple[str, ...] = ("GET",)


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    replies: tuple[Reply, ...] = ()
    connections: int = 0  # when set: how many upstream connections the requests must have used


@dataclass
class Outcome:
    response: bytes = b""
    ending: str = ""
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    unexpected: int = 0
    stats: dict[str, int] = field(default_factory=dict)


class _Reader:
    """Frames HTTP/1.1 responses off a client socket, keeping every byte it read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.pos = 0
        self.eof = False

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            raise EOFError
        self.data += chunk

    def _find(self, marker: bytes) -> int:
        while True:
            index = self.data.find(marker, self.pos)
            if index >= 0:
                return index
            self._more()

    def _need(self, end: int) -> None:
        while len(self.data) < end:
            self._more()

    def response(self, method: str) -> None:
        while True:
            head_end = self._find(b"\r\n\r\n") + 4
            head = bytes(self.data[self.pos:head_end]).decode("latin-1")
            status = int(head[9:12])
            self.pos = head_end
            if 100 <= status < 200 and status != 101:
                continue  # informational: the real response follows
            break
        lower = head.lower()
        if method == "HEAD" or status in (204, 304):
            return
        if re.search(r"\r\ntransfer-encoding:[^\r]*chunked", lower):
            while True:
                line_end = self._find(b"\r\n")
                size = int(bytes(self.data[self.pos:line_end]).split(b";")[0], 16)
                self.pos = line_end + 2
                if size == 0:
                    while True:  # trailers up to the empty line
                        line_end = self._find(b"\r\n")
                        empty = line_end == self.pos
                        self.pos = line_end + 2
                        if empty:
                            return
                self._need(self.pos + size + 2)
                self.pos += size + 2
        length = re.search(r"\r\ncontent-length: *(\d+)", lower)
        if length:
            self._need(self.pos + int(length.group(1)))
            self.pos += int(length.group(1))
            return
        while True:  # close-delimited
            self._more()

    def ending(self) -> str:
        """How the connection stands after the last expected response: closed, open, or more bytes."""
        if self.eof:
            return "closed"
        if len(self.data) > self.pos:
            return "extra bytes"
        self.sock.settimeout(0.3)
        try:
            self._more()
        except EOFError:
            return "closed"
        except TimeoutError:
            return "open"
        return "extra bytes"


def run_client(port: int, steps: Sequence[Step]) -> tuple[bytes, str]:
    """Play the steps on one client connection: (every byte received, how it ended)."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = _Reader(sock)
        try:
            for step in steps:
                for index, chunk in enumerate(step.sends):
                    if index:
                        time.sleep(WRITE_GAP_S)
                    sock.sendall(chunk)
                for method in step.methods:
                    reader.response(method)
            ending = reader.ending()
        except EOFError:
            ending = "closed before the expected responses"
        except ConnectionResetError:
            ending = "reset"
        except TimeoutError:
            ending = "timed out waiting for a response"
        return bytes(reader.data), ending


# --- normalising and the stats -----------------------------------------------------------------

_UUID = rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
_REQUEST_ID = re.compile(rb"(?im)^(x-request-id: )" + _UUID + rb"(?=\r$)")
_SERVICE_TIME = re.compile(rb"(?im)^(x-envoy-upstream-service-time: )\d+(?=\r$)")
_DATE = re.compile(rb"(?im)^(date: )([^\r\n]*)(?=\r$)")


def _now_date(match: re.Match[bytes]) -> bytes:
    """A ``date`` value the proxy made (near now) becomes ``<date>``; an upstream's fixed past date stays."""
    try:
        value = email.utils.parsedate_to_datetime(match.group(2).decode("latin-1"))
    except (TypeError, ValueError):
        return match.group(0)
    if abs((value - datetime.now(UTC)).total_seconds()) < 86400:
        return match.group(1) + b"<date>"
    return match.group(0)


def normalise_request(data: bytes) -> bytes:
    return _REQUEST_ID.sub(rb"\1<id>", data)


def normalise_response(data: bytes) -> bytes:
    data = _REQUEST_ID.sub(rb"\1<id>", data)
    data = _SERVICE_TIME.sub(rb"\1<ms>", data)
    return _DATE.sub(_now_date, data)


def renumbered(requests: Sequence[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Upstream connection numbers as 0, 1, ... in order of first use in this case; request ids normalised."""
    order: dict[int, int] = {}
    return [(order.setdefault(number, len(order)), normalise_request(data)) for number, data in requests]


def _wanted_stat(name: str) -> bool:
    if name.startswith(f"http.{STAT_PREFIX}."):
        rest = name[len(f"http.{STAT_PREFIX}."):]
        return rest.startswith(("downstream_rq_", "downstream_cx_"))
    for name_of_cluster in CLUSTERS:
        if name.startswith(f"cluster.{name_of_cluster}."):
            rest = name[len(f"cluster.{name_of_cluster}."):]
            return rest.startswith(("upstream_rq_", "upstream_cx_"))
    return False


def fresh_start(side: Side) -> None:
    """No upstream connection left from an earlier case: the upstream closes them, the proxy lets go."""
    side.upstream.close_all()
    names = [f"cluster.{name}.upstream_cx_active" for name in CLUSTERS]
    deadline = time.monotonic() + SETTLE_S
    while True:
        stats = side.proxy.stats()
        if all(stats.get(name, 0) == 0 for name in names):
            return
        if time.monotonic() > deadline:
            still = {name: stats.get(name) for name in names}
            raise AssertionError(f"{side.name}: upstream connections still open: {still}")
        time.sleep(0.02)


def counters(proxy: SidecarProcess) -> dict[str, int]:
    return {name: value for name, value in proxy.stats().items() if _wanted_stat(name)}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    names = set(before) | set(after)
    changed = {name: after.get(name, 0) - before.get(name, 0) for name in names}
    return {name: value for name, value in sorted(changed.items()) if value}


# --- the cases ---------------------------------------------------------------------------------

HOST = b"Host: service.local\r\n"


def get(path: bytes = b"/", extra: bytes = b"", method: bytes = b"GET") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\n" + HOST + extra + b"\r\n"


PLAIN_HEADERS = b"User-Agent: lane-test/1.0\r\nAccept: */*\r\nX-Custom-Thing: Mixed Case Value\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
PAST_DATE_1 = b"Mon, 01 Jan 2001 00:00:00 GMT"
PAST_DATE_2 = b"Tue, 02 Jan 2001 00:00:00 GMT"


def one(request: bytes, method: str = "GET") -> tuple[Step, ...]:
    return (Step((request,), (method,)),)


CASES = [
    Case("plain-get-mixed-case-headers", one(get(b"/plain?q=1", PLAIN_HEADERS)), (OK_BODY,)),
    Case("exact-path-route", one(get(b"/exact?x=y")), (OK_BODY,)),
    Case("head", one(get(b"/head", method=b"HEAD"), "HEAD"),
         (reply(b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n"),)),
    Case("post-content-length-zero", one(get(b"/post", b"Content-Length: 0\r\n", b"POST"), "POST"),
         (OK_BODY,)),
    Case("post-no-length", one(get(b"/post", b"", b"POST"), "POST"), (OK_BODY,)),
    Case("delete-no-body", one(get(b"/item/1", b"", b"DELETE"), "DELETE"),
         (reply(b"HTTP/1.1 204 No Content\r\n\r\n"),)),
    Case("client-connection-close", one(get(b"/bye", b"Connection: close\r\n")), (OK_BODY,)),
    Case("client-request-id-and-forwarded-proto",
         one(get(b"/ids", b"X-Request-Id: client-chosen-id-1\r\nX-Forwarded-Proto: https\r\n")), (OK_BODY,)),
    Case("header-with-underscore", one(get(b"/under", b"x_with_underscore: yes\r\n")), (OK_BODY,)),
    Case("upstream-content-length-body", one(get(b"/cl")),
         (reply(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello", b" world"),)),
    Case("upstream-chunked-with-trailers", one(get(b"/chunked")),
         (reply(CHUNKED_HEAD + b"5\r\nhello\r\n", b"6\r\n world\r\n", b"3;ext=1\r\n!!!\r\n",
                b"0\r\nX-Trailer: done\r\nX-Other: 1\r\n\r\n"),)),
    Case("upstream-close-delimited", one(get(b"/eof")),
         (reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part ", b"second part",
                close=True),)),
    Case("upstream-204", one(get(b"/nothing")), (reply(b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"),)),
    Case("upstream-304", one(get(b"/cached", b"If-None-Match: \"v1\"\r\n")),
         (reply(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"),)),
    Case("upstream-100-then-200", one(get(b"/continue")),
         (reply(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),)),
    Case("upstream-103-then-200", one(get(b"/hints")),
         (reply(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),)),
    Case("upstream-server-and-duplicate-date", one(get(b"/dates")),
         (reply(b"HTTP/1.1 200 OK\r\nServer: upstream-server/2\r\nDate: " + PAST_DATE_1 + b"\r\nDate: "
                + PAST_DATE_2 + b"\r\ncontent-length: 2\r\n\r\nok"),)),
    Case("upstream-connection-close-then-new-connection",
         (Step((get(b"/first"),)), Step((get(b"/second"),))),
         (reply(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 1\r\n\r\n1", close=True),
          reply(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n2")), connections=2),
    Case("upstream-http10-response", one(get(b"/old")),
         (reply(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 3\r\n\r\nold",
                close=True),)),
    Case("upstream-http10-close-delimited", one(get(b"/older")),
         (reply(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nolder", close=True),)),
    Case("upstream-invalid-header-line", one(get(b"/invalid")),
         (reply(b"HTTP/1.1 200 OK\r\nthis is not a header\r\ncontent-length: 0\r\n\r\n"),)),
    Case("upstream-closes-before-responding", one(get(b"/vanish")), (Reply(close=True),)),
    Case("route-timeout", one(get(b"/slow")), (Reply(hang=True),)),
    Case("connect-failure", one(get(b"/dead"))),
    Case("keep-alive-sequence",
         (Step((get(b"/ka/1"),)), Step((get(b"/ka/2", method=b"HEAD"),), ("HEAD",)),
          Step((get(b"/ka/3"),))),
         (OK_BODY, reply(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"), OK_BODY)),
    Case("pipelined", (Step((get(b"/pipe/1") + get(b"/pipe/2"),), ("GET", "GET")),), (OK_BODY, OK_BODY)),
    Case("request-with-body",
         one(b"POST /body HTTP/1.1\r\n" + HOST + b"Content-Type: text/plain\r\nContent-Length: 5\r\n"
             b"\r\nhello", "POST"), (OK_BODY,)),
    Case("head-in-two-sends",
         (Step((b"GET /split HTTP/1.1\r\nHo", b"st: service.local\r\nAccept: */*\r\n\r\n")),),
         (OK_BODY,)),
    Case("prefix-rewrite", one(get(b"/rewrite/thing?x=1")), (OK_BODY,)),
    Case("x-envoy-request-header", one(get(b"/envoy", b"x-envoy-foo: bar\r\n")), (OK_BODY,)),
    # beyond the list above: edges of what the lane parses itself
    Case("host-with-port-and-duplicate-headers",
         one(b"GET /dup HTTP/1.1\r\nHost: service.local:8080\r\nAccept: a\r\nACCEPT: b\r\n\r\n"), (OK_BODY,)),
    Case("request-header-whitespace-and-empty-value",
         one(get(b"/ws", b"X-Padded:   padded value \t \r\nX-Empty:\r\nX-Tab:\tv\r\n")), (OK_BODY,)),
    Case("client-connection-keep-alive", one(get(b"/keep", b"Connection: keep-alive\r\n")), (OK_BODY,)),
    Case("get-with-content-length-zero", one(get(b"/getcl", b"Content-Length: 0\r\n")), (OK_BODY,)),
    Case("http10-client-request", one(b"GET /ten HTTP/1.0\r\n" + HOST + b"\r\n"), (OK_BODY,)),
    Case("upstream-custom-reason-phrase", one(get(b"/reason")),
         (reply(b"HTTP/1.1 299 Quite Fine\r\ncontent-length: 2\r\n\r\nok"),)),
    Case("upstream-header-whitespace-and-empty-value", one(get(b"/rws")),
         (reply(b"HTTP/1.1 200 OK\r\nX-Padded:  v  \r\nX-Empty:\r\ncontent-length: 2\r\n\r\nok"),)),
    Case("upstream-hop-by-hop-headers", one(get(b"/hop")),
         (reply(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                b"Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\ncontent-length: 2\r\n\r\nok"),)),
    Case("upstream-length-and-chunked", one(get(b"/both")),
         (reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nok\r\n0\r\n\r\n"),)),
    Case("upstream-200-length-zero", one(get(b"/zero")), (OK_EMPTY,)),
    Case("upstream-500", one(get(b"/error")),
         (reply(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nboom"),)),
    Case("upstream-chunked-in-one-write", one(get(b"/chunked1")),
         (reply(CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\r\n"),)),
    Case("upstream-two-chunks-in-one-write", one(get(b"/chunked3")),
         (reply(CHUNKED_HEAD + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),)),
    Case("upstream-chunk-split-across-writes", one(get(b"/chunked4")),
         (reply(CHUNKED_HEAD + b"b\r\nhello", b" world\r\n2\r\n!!\r\n0\r\n\r\n"),)),
    Case("upstream-chunked-head-then-body", one(get(b"/chunked2")),
         (reply(CHUNKED_HEAD, b"5\r\nhello\r\n0\r\n\r\n"),)),
    Case("upstream-closes-mid-body", one(get(b"/cut")),
         (reply(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", close=True),)),
    Case("upstream-bad-chunk-size", one(get(b"/badchunk")), (reply(CHUNKED_HEAD, b"zz\r\nhello\r\n"),)),
    Case("unknown-method", one(get(b"/m", method=b"FROB")), (OK_BODY,)),
    Case("target-with-raw-high-bytes", one(get(b"/caf\xc3\xa9")), (OK_BODY,)),
    Case("upstream-head-in-two-writes", one(get(b"/rsplit")),
         (reply(b"HTTP/1.1 200 OK\r\nX-A:", b" b\r\ncontent-length: 2\r\n\r\nok"),)),
]


def _param(case: Case) -> Any:
    return pytest.param(case, id=case.id)


# How many requests of each case the lane must answer itself (the rest: 1). The others are handed
# to the full path: a body, pipelining, a split head, HTTP/1.0, an unknown method or an unusual
# target, an x-envoy-* header, a rewriting route, and every local reply (failures, timeouts).
LANE_SERVED = {
    "upstream-connection-close-then-new-connection": 2, "keep-alive-sequence": 3,
    "upstream-invalid-header-line": 0, "upstream-closes-before-responding": 0, "route-timeout": 0,
    "connect-failure": 0, "pipelined": 0, "request-with-body": 0, "head-in-two-sends": 0, "prefix-rewrite": 0,
    "x-envoy-request-header": 0, "http10-client-request": 0, "upstream-length-and-chunked": 0,
    "unknown-method": 0, "target-with-raw-high-bytes": 0,
}
SERVED_STAT = f"http.{STAT_PREFIX}.fast_lane.rq_total"


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_lane_and_full_path_agree(pair: Pair, case: Case) -> None:
    outcomes: dict[str, Outcome] = {}
    before: dict[str, dict[str, int]] = {}
    served: dict[str, int] = {}
    for side in pair.sides:
        fresh_start(side)
        side.upstream.script(case.replies)
        before[side.name] = counters(side.proxy)
        served[side.name] = side.proxy.stats().get(SERVED_STAT, 0)
        response, ending = run_client(side.port, case.steps)
        outcomes[side.name] = Outcome(normalise_response(response), ending)
    lane, full = outcomes["lane"], outcomes["full"]

    # the counters settle once both connections are closed everywhere
    deadline = time.monotonic() + SETTLE_S
    while True:
        for side in pair.sides:
            outcomes[side.name].stats = delta(before[side.name], counters(side.proxy))
        if lane.stats == full.stats or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for side in pair.sides:
        outcome = outcomes[side.name]
        outcome.requests = renumbered(side.upstream.requests)
        outcome.unexpected = side.upstream.unexpected

    assert full.unexpected == 0, f"the full path sent more requests than the case scripts: {full.requests}"
    if case.connections:
        assert len({number for number, _ in full.requests}) == case.connections, full.requests
    differences = []
    if lane.requests != full.requests:
        differences.append(f"upstream requests:\n  lane {lane.requests!r}\n  full {full.requests!r}")
    if (lane.response, lane.ending) != (full.response, full.ending):
        differences.append(f"client responses:\n  lane {lane.response!r} ({lane.ending})"
                           f"\n  full {full.response!r} ({full.ending})")
    if lane.stats != full.stats:
        names = sorted(name for name in set(lane.stats) | set(full.stats)
                       if lane.stats.get(name, 0) != full.stats.get(name, 0))
        differences.append("counter changes: " + ", ".join(
            f"{name} lane {lane.stats.get(name, 0)} full {full.stats.get(name, 0)}" for name in names))
    assert not differences, "the lane and the full path differ:\n" + "\n".join(differences)
    # and the lane really served what it should (else the comparison above would prove nothing)
    on_lane = {side.name: side.proxy.stats().get(SERVED_STAT, 0) - served[side.name] for side in pair.sides}
    assert on_lane == {"lane": LANE_SERVED.get(case.id, 1), "full": 0}, on_lane
