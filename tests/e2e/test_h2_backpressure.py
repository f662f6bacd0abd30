"""HTTP/2 back-pressure through the sidecar, both directions, to HTTP/1.1 and h2c upstreams.

The client speaks HTTP/2 with small receive windows and one stream it does not read (or one
upload whose upstream does not read). Flow control must hold back only that stream: the sender
stalls far below the body size, the sidecar's memory stays far below it, other streams on the
same client connection still complete, and once the reader resumes every byte arrives. Real
Envoy runs the same tests as the reference for what the bounds should be.

The proxy's windows are configured as Envoy's edge best practice suggests (1 MiB per stream):
a peer may legitimately send one whole window (16 MiB by default) into a stream nobody reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._envoy import EnvoyProcess
from tests.e2e._h2_peers import H2Client, H2Upstream
from tests.e2e._socket_server import SocketServer
from tests.e2e._upstream import ScriptedUpstream
from tests.e2e.test_sidecar_buffer_limits import (
    STREAMED,
    Progress,
    RawUpstream,
    huge_response,
    limited,
    slow_reader,
)
from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster
from tests.wasmhost.sidecar._process import SidecarProcess

pytestmark = [pytest.mark.e2e]

#: far below STREAMED (256 MiB): a stalled sender is held by the windows and buffers, not by the
#: body's end (measured here: 2 to 6 MiB)
STALL_BOUND = 64 * 1024 * 1024
#: the sidecar's resident memory may grow by less than this while one stream is stalled
MEMORY_BOUND = 64 * 1024 * 1024
OTHER_STREAMS = 3
#: other streams must complete well before the stalled peer gives up holding (60 s): they may not
#: be waiting for it (they take milliseconds; this only has to be shorter than the hold)
OTHERS_DEADLINE_S = 20.0
#: the whole body through pure-Python HTTP/2 peers after the release: about 20 s here
TRANSFER_DEADLINE_S = 300.0
_H2_OPTIONS = {"initial_stream_window_size": 1 << 20, "initial_connection_window_size": 16 << 20}
_H2_UPSTREAM = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": _H2_OPTIONS}}}


def resident_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (the sidecar's workers are child processes)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited meanwhile
        # a zombie has no VmRSS line
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in task.read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
    assert total > 0, f"no resident memory found for process {pid}"
    return total


class Backend:
    """The upstream under test: an HTTP/1.1 ``RawUpstream`` (plus a scripted one for other streams)
    or an ``H2Upstream`` that serves every path on one h2c connection."""

    def __init__(self, kind: str, stack: ExitStack, *, upload: bool) -> None:
        self.kind = kind
        if kind == "h2c":
            self.h2 = H2Upstream(STREAMED)
            server = SocketServer(self.h2.session)
            stack.callback(server.stop)
            stack.callback(self.h2.stop)
            self.clusters = [cluster("backend", server.port, typed_extension_protocol_options=_H2_UPSTREAM)]
            self.routes = [{"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "0s"}}]
            self.sent: Progress = self.h2.sent
            return
        self.raw = RawUpstream().serve(slow_reader if upload else huge_response)
        stack.callback(self.raw.stop)
        other = stack.enter_context(ScriptedUpstream())
        other.set_response(200, [("content-type", "text/plain")], b"ok other")
        self.clusters = [cluster("backend", self.raw.port), cluster("other", other.port)]
        self.routes = [{"match": {"prefix": "/other"}, "route": {"cluster": "other"}},
                       {"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "0s"}}]
        self.sent = self.raw.sent

    def config(self) -> dict[str, Any]:
        config = bootstrap(virtual_hosts=[{"name": "all", "domains": ["*"], "routes": self.routes}],
                           clusters=self.clusters,
                           hcm_extra={"codec_type": "AUTO", "http2_protocol_options": _H2_OPTIONS})
        return limited(config)

    def release(self) -> None:
        (self.h2 if self.kind == "h2c" else self.raw).release.set()

    def upload_received(self) -> int:
        return self.h2.received if self.kind == "h2c" else self.raw.received

    def failure(self) -> BaseException | None:
        return self.sent.failure


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as running:
        yield running


Start = Callable[[dict[str, Any]], tuple[int, int]]


#: (proxy, upstream kind): real Envoy is the reference where both hops are HTTP/2
CASES = [("sidecar", "http1"), ("sidecar", "h2c"), pytest.param(("envoy", "h2c"), marks=pytest.mark.envoy)]


@pytest.fixture(params=CASES, ids=lambda case: "-".join(case))
def case(request: pytest.FixtureRequest, tmp_path: Path, stack: ExitStack) -> tuple[str, Start]:
    """The upstream kind, and a function starting the proxy under test: (listener port, pid)."""
    proxy, kind = request.param

    def start(config: dict[str, Any]) -> tuple[int, int]:
        if proxy == "envoy":
            binary = request.getfixturevalue("envoy_binary")
            envoy = stack.enter_context(EnvoyProcess(config, workdir=tmp_path / "envoy", binary=binary))
            return next(iter(envoy.listener_ports().values())), envoy.pid
        sidecar = stack.enter_context(SidecarProcess(config, workdir=tmp_path))
        return sidecar.listener_ports()["listener_0"], sidecar.pid

    return kind, start


def stall_point(progress: Progress) -> int:
    """Where a sender stopped: it must first have started (a quiet start is not a stall)."""
    deadline = time.monotonic() + 60.0
    while progress.count == 0 and progress.failure is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert progress.count > 0, f"the sender never started ({progress.failure!r})"
    return progress.stalled(quiet_s=2.0)


def others_complete(client: H2Client) -> list[tuple[bytes, bytes]]:
    """Requests on other streams of the stalled connection: (status, body) of each."""
    streams = [client.request("GET", f"/other/{index}") for index in range(OTHER_STREAMS)]
    answers = []
    for stream_id in streams:
        status, _, sample = client.wait(stream_id, OTHERS_DEADLINE_S)
        answers.append((status, sample))
    return answers


def test_an_upstream_that_stops_reading_stalls_only_that_upload(case: tuple[str, Start], stack: ExitStack) -> None:
    kind, start = case
    backend = Backend(kind, stack, upload=True)
    port, pid = start(backend.config())
    client = stack.enter_context(H2Client(port))
    assert others_complete(client)[0][0] == b"200"  # warm: connections open, memory settled
    baseline = resident_bytes(pid)
    upload = client.request("POST", "/up", body_size=STREAMED)
    stalled = stall_point(client.sent[upload])
    grown = resident_bytes(pid) - baseline
    others = others_complete(client)
    still_stalled = client.sent[upload].count  # the other streams must not have waited for the upload
    backend.release()
    status, size, answer = client.wait(upload, TRANSFER_DEADLINE_S)
    assert client.failure is None and backend.failure() is None
    assert stalled < STALL_BOUND, f"the client sent {stalled} of {STREAMED} bytes to an upstream reading none"
    assert grown < MEMORY_BOUND, f"the sidecar grew by {grown} bytes while the upload was stalled"
    assert still_stalled < STALL_BOUND, "the other streams completed only after the upload moved on"
    expected_other = b"ok other" if kind == "http1" else b"ok /other/"
    assert [(code, body[:len(expected_other)]) for code, body in others] == \
        [(b"200", expected_other)] * OTHER_STREAMS
    assert (status, answer, backend.upload_received()) == (b"200", str(STREAMED).encode(), STREAMED)
    assert size == len(answer)


def test_a_client_that_stops_reading_stalls_only_that_download(case: tuple[str, Start], stack: ExitStack) -> None:
    kind, start = case
    backend = Backend(kind, stack, upload=False)
    port, pid = start(backend.config())
    client = stack.enter_context(H2Client(port))
    assert others_complete(client)[0][0] == b"200"
    baseline = resident_bytes(pid)
    download = client.request("GET", "/big", hold=True)
    stalled = stall_point(backend.sent)
    grown = resident_bytes(pid) - baseline
    others = others_complete(client)
    still_stalled = backend.sent.count  # the other streams must not have waited for the download
    client.release(download)
    status, size, _ = client.wait(download, TRANSFER_DEADLINE_S)
    assert client.failure is None and backend.failure() is None
    assert stalled < STALL_BOUND, f"the upstream sent {stalled} of {STREAMED} bytes to a client reading none"
    assert grown < MEMORY_BOUND, f"the sidecar grew by {grown} bytes while the download was stalled"
    assert still_stalled < STALL_BOUND, "the other streams completed only after the download moved on"
    assert [code for code, _ in others] == [b"200"] * OTHER_STREAMS
    assert (status, size) == (b"200", STREAMED)
