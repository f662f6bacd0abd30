"""Peers for xDS client tests: the sidecar in this process, and a scripted ADS server.

``InProcessSidecar`` runs ``Sidecar`` on its own event loop thread from a bootstrap file, so a
test can look at its xDS state directly and send it requests. ``ScriptedAdsServer`` is a fake
control plane (grpcio, 127.0.0.1 port 0): it records every DiscoveryRequest verbatim and sends
exactly the DiscoveryResponses the test queues — for checking the wire protocol byte by byte,
which the real control plane (used by the other tests) would hide behind its own logic.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from wasmhost.sidecar._sidecar import Sidecar

T = TypeVar("T")


class InProcessSidecar:
    """A ``Sidecar`` serving ``bootstrap`` on a loop in a daemon thread."""

    def __init__(self, bootstrap: Any, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / "bootstrap.json"
        data = bootstrap if isinstance(bootstrap, dict) else json_format.MessageToDict(
            bootstrap, preserving_proto_field_name=True)
        self.path.write_text(json.dumps(data))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="sidecar")
        self.sidecar = Sidecar(str(self.path))

    def start(self) -> InProcessSidecar:
        self.thread.start()
        self.call(self.sidecar.start())
        return self

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def run(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the sidecar's loop (its state belongs to that thread)."""
        async def wrapper() -> T:
            return fn()

        result: T = self.call(wrapper(), timeout)
        return result

    def port(self, listener: str) -> int:
        worker = self.sidecar.worker
        assert worker is not None
        return self.run(lambda: worker.bound_ports()[listener])

    def stop(self) -> None:
        try:
            self.call(self.sidecar.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


class ScriptedAdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """A fake ADS server: records requests, answers with the responses a test queues (named a fake)."""

    def __init__(self) -> None:
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.metadata: list[tuple[tuple[str, str], ...]] = []
        self._responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.streams = 0

    def start(self) -> ScriptedAdsServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._responses.put(None)
        self._server.stop(grace=0).wait(5)

    def send(self, *responses: discovery_pb2.DiscoveryResponse) -> None:
        for response in responses:
            self._responses.put(response)

    def end_stream(self) -> None:
        self._responses.put(None)

    def StreamAggregatedResources(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:  # noqa: N802
        with self._lock:
            self.streams += 1
            self.metadata.append(tuple((m.key, m.value) for m in context.invocation_metadata()))

        def read() -> None:
            try:
                for request in request_iterator:
                    with self._lock:
                        self.requests.append(request)
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()
        while context.is_active():
            try:
                item = self._responses.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            yield item

    def of_type(self, type_url: str) -> list[discovery_pb2.DiscoveryRequest]:
        with self._lock:
            return [r for r in self.requests if r.type_url == type_url]

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or predicate}; requests: {self.requests}")
