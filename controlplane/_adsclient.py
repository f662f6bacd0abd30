"""A minimal ADS client: subscribes like Envoy (CDS and LDS wildcard, then the EDS, RDS and
ECDS names they reference), ACKs (or NACKs on request) and records what it holds.

Used to simulate many proxies (the scale benchmark) and to drive the server in tests without
an Envoy; it is not a data plane.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from controlplane._protos import CLUSTER, ENDPOINT, EXTENSION_CONFIG, HCM_TYPE, LISTENER, ROUTE, unpack

Rejector = Callable[[discovery_pb2.DiscoveryResponse], str]


@dataclass
class AdsClient:
    """One simulated proxy. `reject(response)` returning a message NACKs that response."""

    address: str
    node_id: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    reject: Rejector | None = None
    versions: dict[str, str] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    updated_at: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    error: str = ""
    _names: dict[str, set[str]] = field(default_factory=dict)
    _outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = field(default_factory=asyncio.Queue)
    channel: grpc.aio.Channel | None = None  # shared by several clients when given
    _channel: grpc.aio.Channel | None = None
    _task: asyncio.Task[None] | None = None

    def node(self) -> base_pb2.Node:
        metadata = struct_pb2.Struct()
        metadata.update(dict(self.metadata))
        return base_pb2.Node(id=self.node_id, cluster="sim", metadata=metadata)

    async def start(self) -> AdsClient:
        if self.channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel or self._channel)
        first = True
        for type_url in (CLUSTER, LISTENER):
            request = discovery_pb2.DiscoveryRequest(type_url=type_url)
            if first:
                request.node.CopyFrom(self.node())
                first = False
            self._outbox.put_nowait(request)

        async def requests() -> Any:
            while True:
                item = await self._outbox.get()
                if item is None:
                    return
                yield item

        call = stub.StreamAggregatedResources(requests())
        self._task = asyncio.get_running_loop().create_task(self._receive(call))
        return self

    async def _receive(self, call: Any) -> None:
        try:
            async for response in call:
                self._on_response(response)
        except grpc.aio.AioRpcError as err:
            self.error = f"{err.code().name}: {err.details()}"
        except asyncio.CancelledError:
            pass

    def _on_response(self, response: discovery_pb2.DiscoveryResponse) -> None:
        type_url = response.type_url
        message = self.reject(response) if self.reject is not None else ""
        if message:
            self._outbox.put_nowait(discovery_pb2.DiscoveryRequest(
                type_url=type_url, version_info=self.versions.get(type_url, ""), response_nonce=response.nonce,
                resource_names=sorted(self._names.get(type_url, ())),
                error_detail=status_pb2.Status(code=3, message=message)))
            return
        decoded = {}
        for item in response.resources:
            msg = unpack(item)
            decoded[getattr(msg, "name", "") or getattr(msg, "cluster_name", "")] = msg
        self.resources[type_url] = decoded
        self.versions[type_url] = response.version_info
        self.updated_at[type_url] = time.monotonic()
        self._outbox.put_nowait(discovery_pb2.DiscoveryRequest(
            type_url=type_url, version_info=response.version_info, response_nonce=response.nonce,
            resource_names=sorted(self._names.get(type_url, ()))))
        if type_url == CLUSTER:
            self._subscribe(ENDPOINT, {c.eds_cluster_config.service_name or c.name for c in decoded.values()
                                       if c.type == c.EDS})
        elif type_url == LISTENER:
            routes, extensions = set(), set()
            for listener in decoded.values():
                for chain in listener.filter_chains:
                    for net_filter in chain.filters:
                        if net_filter.HasField("config_discovery"):
                            extensions.add(net_filter.name)
                        if net_filter.typed_config.type_url == HCM_TYPE:
                            hcm = unpack(net_filter.typed_config)
                            if hcm.HasField("rds"):
                                routes.add(hcm.rds.route_config_name)
                            extensions.update(f.name for f in hcm.http_filters if f.HasField("config_discovery"))
            self._subscribe(ROUTE, routes)
            self._subscribe(EXTENSION_CONFIG, extensions)
        self.changed.set()

    def _subscribe(self, type_url: str, names: set[str]) -> None:
        if names and names != self._names.get(type_url):
            self._names[type_url] = names
            self._outbox.put_nowait(discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=sorted(names), version_info=self.versions.get(type_url, ""),
                response_nonce=""))

    async def stop(self) -> None:
        self._outbox.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._channel is not None:
            await self._channel.close()


__all__ = ["AdsClient"]
