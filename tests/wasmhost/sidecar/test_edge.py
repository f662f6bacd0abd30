"""The I/O edge driven with in-memory transports: commands become bytes, failures stay contained."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap
from wasmhost.sidecar import HeaderMap, HeadersStatus, HttpFilter, load_plan, register_http_filter
from wasmhost.sidecar._context import PlanRuntime
from wasmhost.sidecar._downstream import DownstreamConnection
from wasmhost.sidecar._upstream import UpstreamConnection
from wasmhost.sidecar._worker import ListenerState, Worker

STRUCT = "type.googleapis.com/google.protobuf.Struct"


class MemoryTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.extra = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def data(self) -> bytes:
        return b"".join(self.written)


class Exploding(HttpFilter):
    def __init__(self, callbacks: Any) -> None:
        self.callbacks = callbacks

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        if headers.get(b":path") == b"/explode":
            raise RuntimeError("filter bug")
        return HeadersStatus.Continue


@pytest.fixture
def exploding_filter() -> Iterator[None]:
    unregister = register_http_filter(STRUCT, lambda config, context: Exploding)
    try:
        yield
    finally:
        unregister()


def finish(worker: Worker) -> None:
    """Cancel what the worker started on its (never run) loop and close it."""
    loop = worker.loop
    tasks = list(worker._tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


def serve(config: dict[str, Any]) -> tuple[Worker, ListenerState]:
    loop = asyncio.new_event_loop()
    worker = Worker(loop)
    plan = load_plan(yaml.safe_dump(config), "test", 1, worker)
    runtime = PlanRuntime(plan, worker.runtime)
    worker.current = runtime
    listener = plan.listeners[0]
    return worker, ListenerState(listener, runtime.listeners[listener.name])


def connect(worker: Worker, state: ListenerState) -> tuple[DownstreamConnection, MemoryTransport]:
    transport = MemoryTransport()
    connection = DownstreamConnection(worker, state)
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


def test_a_failing_filter_answers_500_and_the_worker_keeps_serving(exploding_filter: None) -> None:
    config = bootstrap(http_filters=[{"name": "boom", "typed_config": {"@type": STRUCT, "value": {}}}, ROUTER_FILTER])
    worker, state = serve(config)
    connection, transport = connect(worker, state)
    connection.data_received(b"GET /explode HTTP/1.1\r\nHost: a\r\n\r\n")
    assert transport.data().startswith(b"HTTP/1.1 500 Internal Server Error")
    assert worker.runtime.out == []
    other, other_transport = connect(worker, state)
    other.data_received(b"GET /fine HTTP/1.1\r\nHost: a\r\n\r\n")
    # the request went on towards the upstream (a connection is being opened for it)
    cluster = worker.current.clusters["backend"]  # type: ignore[union-attr]
    assert cluster.rq_pending == 1
    finish(worker)


def test_pooled_upstream_connection_is_reused_and_response_written_once() -> None:
    worker, state = serve(bootstrap())
    cluster = worker.current.clusters["backend"]  # type: ignore[union-attr]
    pool = worker._pool(cluster, cluster.hosts[0])
    upstream = UpstreamConnection(pool)
    upstream_transport = MemoryTransport()
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    cluster.cx_active += 1
    pool.release(upstream)
    connection, transport = connect(worker, state)
    for index in range(3):
        connection.data_received(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % index)
        assert upstream_transport.written[-1].startswith(b"GET /%d HTTP/1.1\r\nhost: a\r\n" % index)
        upstream.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    responses = transport.data().split(b"HTTP/1.1 200 OK")
    assert len(responses) == 4 and all(r.endswith(b"\r\n\r\nok") for r in responses[1:])
    assert len(transport.written) == 3  # one write per response: headers and body coalesced
    assert pool.idle == [upstream]
    finish(worker)
