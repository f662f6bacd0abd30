"""An SDS server (``envoy.service.secret.v3.SecretDiscoveryService``) for the agent's secrets.

What istio-agent does for its Envoy: serve ``default`` and ``ROOTCA`` over gRPC (a Unix
socket in production, ``unix:/path``; loopback TCP in tests) and push a new version on every
renewal, so a co-located real Envoy rotates with the wasmesh agent. State-of-the-world
protocol: each response carries every requested secret; an ACK (same nonce, no error) sends
nothing; a NACK is recorded in ``nacks``. ``SdsStream`` is the sans-io per-stream state.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from ._agent import IdentityAgent
from ._sds import SECRET_TYPE_URL, sds_secrets
from ._svid import WorkloadSvid

log = logging.getLogger(__name__)
_UPDATED = object()


@dataclass(frozen=True)
class SecretSnapshot:
    version: str
    secrets: dict[str, Any]  # name -> envoy.extensions.transport_sockets.tls.v3.Secret


def snapshot_of(svid: WorkloadSvid) -> SecretSnapshot:
    """Secrets for an SVID; the version changes whenever the certificate or bundle does."""
    digest = hashlib.sha256(svid.chain_pem() + svid.bundle_pem()).hexdigest()[:16]
    return SecretSnapshot(digest, sds_secrets(svid))


class SdsStream:
    """One SotW stream: what to answer to each request and to each new snapshot."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.sent_version = ""
        self._nonces = itertools.count(1)
        self.nonce = ""
        self.nacks: list[str] = []

    def _respond(self, snapshot: SecretSnapshot) -> discovery_pb2.DiscoveryResponse:
        self.nonce = str(next(self._nonces))
        self.sent_version = snapshot.version
        resources = []
        for name in self.names:
            if name in snapshot.secrets:
                packed = any_pb2.Any()
                packed.Pack(snapshot.secrets[name])
                resources.append(packed)
        return discovery_pb2.DiscoveryResponse(
            version_info=snapshot.version, resources=resources, type_url=SECRET_TYPE_URL, nonce=self.nonce
        )

    def on_request(self, request: discovery_pb2.DiscoveryRequest, snapshot: SecretSnapshot | None
                   ) -> discovery_pb2.DiscoveryResponse | None:
        if request.type_url and request.type_url != SECRET_TYPE_URL:
            self.nacks.append(f"unsupported type {request.type_url}")
            return None
        if request.error_detail.code:
            self.nacks.append(request.error_detail.message)
            log.warning("SDS NACK for %s: %s", list(request.resource_names), request.error_detail.message)
        names = tuple(sorted(request.resource_names))
        is_ack = request.response_nonce and request.response_nonce == self.nonce and names == self.names
        self.names = names
        if is_ack or snapshot is None:
            return None
        return self._respond(snapshot)

    def on_snapshot(self, snapshot: SecretSnapshot) -> discovery_pb2.DiscoveryResponse | None:
        if not self.names or snapshot.version == self.sent_version:
            return None
        return self._respond(snapshot)


class SdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    """Serves the current snapshot from ``source`` and pushes every change to open streams."""

    def __init__(self, source: Callable[[], SecretSnapshot | None]) -> None:
        self._source = source
        self._queues: set[asyncio.Queue[object]] = set()
        self._server: grpc.aio.Server | None = None
        self.streams: list[SdsStream] = []
        self.port = 0

    @classmethod
    def for_agent(cls, agent: IdentityAgent) -> SdsServer:
        server = cls(lambda: snapshot_of(agent.svid) if agent.has_certificate else None)
        agent.subscribe(lambda _svid: server.notify())
        return server

    def notify(self) -> None:
        """Call (on the server's event loop) when the snapshot changed."""
        for queue in self._queues:
            queue.put_nowait(_UPDATED)

    async def StreamSecrets(  # noqa: N802 - the gRPC method name
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = SdsStream()
        self.streams.append(stream)
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._queues.add(queue)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    queue.put_nowait(request)
            finally:
                queue.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (item := await queue.get()) is not None:
                snapshot = self._source()
                if item is _UPDATED:
                    response = stream.on_snapshot(snapshot) if snapshot is not None else None
                else:
                    assert isinstance(item, discovery_pb2.DiscoveryRequest)
                    response = stream.on_request(item, snapshot)
                if response is not None:
                    yield response
        finally:
            reader.cancel()
            self._queues.discard(queue)

    async def start(self, address: str = "127.0.0.1:0") -> SdsServer:
        """Listen on ``address`` (``host:port`` or ``unix:/path``)."""
        self._server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port(address)
        await self._server.start()
        return self

    async def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)
