"""The ADS endpoint (grpcio, asyncio): streams between proxies and the control plane, both
state of the world (StreamAggregatedResources) and incremental (DeltaAggregatedResources).

Each stream becomes a `Connection`: the first request's node identifies the proxy (and
registers its workload), requests go through the sans-io `XdsSession`, and pushes from the
control plane land in the connection's outbox. A malformed node ends the stream with
INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane._delta import DeltaXdsSession
from controlplane._generate import Snapshot
from controlplane._proxies import NodeError, Proxy, proxy_from_node
from controlplane._security import StreamRefused, is_secure
from controlplane._xds import XdsSession

log = logging.getLogger("wasmesh.controlplane")
_connection_ids = itertools.count(1)


class Session(Protocol):
    """What both protocol variants (state of the world, delta) offer the server."""

    nacks: int

    def on_request(self, request: Any, snapshot: Snapshot) -> list[Any]: ...

    def on_snapshot(self, snapshot: Snapshot) -> list[Any]: ...

    def sent_names(self, type_url: str) -> tuple[str, ...]: ...

    def status(self) -> dict[str, dict[str, str]]: ...


@dataclass(eq=False)
class Connection:
    """One ADS stream: its proxy, protocol state, the snapshot last pushed and an outbox."""

    proxy: Proxy
    session: Session
    delta: bool = False
    outbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    id: int = field(default_factory=lambda: next(_connection_ids))
    connected_at: float = field(default_factory=time.time)
    snapshot: Snapshot | None = None
    pushes: int = 0
    metadata: tuple[tuple[str, Any], ...] = ()  # the stream's invocation metadata (credentials)
    secure: bool = False  # arrived over TLS (the secure port)
    identity: Any = None  # the SPIFFE ID its credentials proved (``Plane.authenticate``), if any

    def send_all(self, responses: list[Any]) -> None:
        for response in responses:
            self.outbox.put_nowait(response)
        self.pushes += len(responses)


class Plane(Protocol):
    """What the ADS endpoint needs from the control plane."""

    async def authenticate(self, connection: Connection) -> None: ...

    def connected(self, connection: Connection) -> Snapshot: ...

    def disconnected(self, connection: Connection) -> None: ...

    def nacked(self, connection: Connection, type_url: str, message: str) -> None: ...


class AdsService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, plane: Plane) -> None:
        self.plane = plane

    # grpc.aio recognises a streaming handler by being an async generator function itself.
    async def StreamAggregatedResources(  # noqa: N802 (gRPC's method name)
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for response in self._stream(request_iterator, context, delta=False):
            yield response

    async def DeltaAggregatedResources(  # noqa: N802 (gRPC's method name)
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self._stream(request_iterator, context, delta=True):
            yield response

    async def _stream(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                      delta: bool) -> AsyncIterator[Any]:
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        try:
            proxy = proxy_from_node(first.node)
        except NodeError as err:
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)  # ends the stream with this status
            context.set_details(str(err))
            return
        session: Session = DeltaXdsSession(proxy.id) if delta else XdsSession(proxy.id)
        connection = Connection(proxy, session, delta, metadata=tuple(
            (m.key, m.value) for m in context.invocation_metadata() or ()), secure=is_secure(context))
        try:
            await self.plane.authenticate(connection)
            connection.snapshot = self.plane.connected(connection)
        except StreamRefused as refused:
            context.set_code(refused.code)
            context.set_details(refused.details)
            return
        reader = asyncio.get_running_loop().create_task(self._read(first, request_iterator, connection))
        try:
            while True:
                response = await connection.outbox.get()
                if response is None:
                    break
                yield response
        finally:
            reader.cancel()
            self.plane.disconnected(connection)

    async def _read(self, first: Any, requests: AsyncIterator[Any], connection: Connection) -> None:
        try:
            self._handle(first, connection)
            async for request in requests:
                self._handle(request, connection)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - one bad stream must not take the server down
            log.exception("ADS stream of %s failed", connection.proxy.id)
        finally:
            connection.outbox.put_nowait(None)

    def _handle(self, request: Any, connection: Connection) -> None:
        assert connection.snapshot is not None
        before = connection.session.nacks
        connection.send_all(connection.session.on_request(request, connection.snapshot))
        if connection.session.nacks != before:
            self.plane.nacked(connection, request.type_url, request.error_detail.message)


def add_to_server(server: grpc.aio.Server, plane: Plane) -> None:
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AdsService(plane), server)




__all__ = ["AdsService", "Connection", "Plane", "Session", "add_to_server"]
