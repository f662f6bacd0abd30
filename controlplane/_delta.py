"""The incremental (delta) xDS protocol for one connected proxy, without any I/O.

`DeltaXdsSession` answers DeltaDiscoveryRequests and new snapshots with only what differs
from what the proxy holds: each resource carries its own version, removed resources are
named, and subscriptions change by `resource_names_subscribe` / `_unsubscribe` (LDS and CDS
start as wildcard subscriptions, as Envoy uses them). A reconnecting proxy's
`initial_resource_versions` count as held. An ACK makes the resources of that response held;
a NACK (error_detail) is reported while the proxy keeps its last good version, and, as with
state of the world, the rejected version is not offered again until its content changes (so a
proxy and the server never loop on a bad resource).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from controlplane._generate import TYPE_ORDER, Snapshot
from controlplane._protos import CLUSTER, LISTENER, TYPE_SHORT_NAMES
from controlplane._xds import NACKED, NOT_SENT, STALE, SYNCED

WILDCARD_TYPES = (LISTENER, CLUSTER)


@dataclass
class DeltaWatch:
    """One type: the subscription, what the proxy holds, and responses awaiting an answer."""

    wildcard: bool
    names: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # name -> version the proxy acknowledged
    sent: dict[str, str] = field(default_factory=dict)  # name -> version last offered
    pending: dict[str, dict[str, str]] = field(default_factory=dict)  # nonce -> what it carried
    nack_message: str = ""
    system_version: str = ""
    answered: bool = False
    sent_at: float = 0.0

    @property
    def status(self) -> str:
        if not self.answered:
            return NOT_SENT
        if self.nack_message:
            return NACKED
        return STALE if self.pending else SYNCED


@dataclass
class DeltaXdsSession:
    proxy_id: str
    watches: dict[str, DeltaWatch] = field(default_factory=dict)
    nacks: int = 0
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest,
                   snapshot: Snapshot) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        type_url = request.type_url
        if not type_url:
            return []
        watch = self.watches.get(type_url)
        first = watch is None
        if watch is None:
            subscribe = set(request.resource_names_subscribe)
            watch = DeltaWatch(wildcard=type_url in WILDCARD_TYPES and (not subscribe or "*" in subscribe))
            watch.held.update(request.initial_resource_versions)
            watch.sent.update(request.initial_resource_versions)
            self.watches[type_url] = watch
        if request.response_nonce:
            carried = watch.pending.pop(request.response_nonce, None)
            if carried is not None:
                if request.HasField("error_detail") and (request.error_detail.code or request.error_detail.message):
                    watch.nack_message = request.error_detail.message or f"code {request.error_detail.code}"
                    self.nacks += 1
                else:
                    watch.nack_message = ""
                    for name, version in carried.items():
                        if version:
                            watch.held[name] = version
                        else:
                            watch.held.pop(name, None)
        for name in request.resource_names_subscribe:
            if name == "*":
                watch.wildcard = True
            else:
                watch.names.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                watch.wildcard = False
            watch.names.discard(name)
            watch.sent.pop(name, None)
            watch.held.pop(name, None)
        response = self._respond(type_url, watch, snapshot, always=first)
        return [response] if response is not None else []

    def on_snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        out = []
        for type_url in sorted(self.watches, key=_order):
            response = self._respond(type_url, self.watches[type_url], snapshot, always=False)
            if response is not None:
                out.append(response)
        return out

    def _respond(self, type_url: str, watch: DeltaWatch, snapshot: Snapshot,
                 always: bool) -> discovery_pb2.DeltaDiscoveryResponse | None:
        available = snapshot.resources(type_url)
        wanted = set(available) if watch.wildcard else {n for n in watch.names if n in available}
        changed = sorted(n for n in wanted if watch.sent.get(n) != snapshot.resource_version(type_url, n))
        gone = sorted(n for n, version in watch.sent.items()
                      if version and (n not in available or (not watch.wildcard and n not in watch.names)))
        if not changed and not gone and not always:
            return None
        nonce = str(next(self._nonces))
        carried = {n: snapshot.resource_version(type_url, n) for n in changed}
        carried.update({n: "" for n in gone})
        watch.sent.update(carried)
        for name in gone:
            watch.sent.pop(name, None)
        watch.pending[nonce] = carried
        watch.system_version = snapshot.version(type_url)
        watch.answered = True
        watch.sent_at = time.time()
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=watch.system_version, type_url=type_url, nonce=nonce, removed_resources=gone,
            resources=[discovery_pb2.Resource(name=n, version=carried[n], resource=snapshot.packed(type_url, n))
                       for n in changed])

    def sent_names(self, type_url: str) -> tuple[str, ...]:
        watch = self.watches.get(type_url)
        return tuple(sorted(n for n, v in watch.sent.items() if v)) if watch is not None else ()

    def status(self) -> dict[str, dict[str, str]]:
        return {TYPE_SHORT_NAMES.get(t, t): {"status": w.status, "sent": w.system_version,
                                             "acked": w.system_version if w.status == SYNCED else "",
                                             "nack": w.nack_message, "resources": str(len(self.sent_names(t)))}
                for t, w in sorted(self.watches.items(), key=lambda item: _order(item[0]))}


def _order(type_url: str) -> int:
    return TYPE_ORDER.index(type_url) if type_url in TYPE_ORDER else len(TYPE_ORDER)


__all__ = ["DeltaXdsSession"]
