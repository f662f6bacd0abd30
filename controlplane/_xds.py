"""The state-of-the-world xDS protocol for one connected proxy, without any I/O.

`XdsSession` takes what arrives (a DiscoveryRequest, a new snapshot) and returns the
DiscoveryResponses to send. It tracks, per type: what the proxy subscribed to, the version
and nonce last sent, the version the proxy ACKed and the message of its last NACK. The
rules are Envoy's: a request whose nonce is not the latest one sent is stale and ignored; a
request carrying `error_detail` NACKs the last response (the proxy keeps its previous
config, we report it); any other request with the latest nonce ACKs it, and a change of
subscribed names is answered right away. Types subscribed by name (routes, endpoints,
extension configs) are versioned by the resources the proxy asked for. A new snapshot is sent
only for types whose version changed, in the order Envoy needs (clusters, endpoints, listeners, routes, extensions).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from controlplane._generate import TYPE_ORDER, Snapshot
from controlplane._protos import CLUSTER, LISTENER, TYPE_SHORT_NAMES

WILDCARD_TYPES = (LISTENER, CLUSTER)
SYNCED, STALE, NACKED, NOT_SENT = "SYNCED", "STALE", "NACKED", "NOT SENT"


@dataclass
class Watch:
    """One subscribed type: names (None = all), what was sent, what the proxy said about it."""

    names: frozenset[str] | None
    sent_version: str = ""
    sent_nonce: str = ""
    sent_names: tuple[str, ...] = ()
    acked_version: str = ""
    nack_message: str = ""
    nacked_version: str = ""
    sent_at: float = 0.0

    @property
    def status(self) -> str:
        if not self.sent_nonce:
            return NOT_SENT
        if self.nack_message and self.nacked_version == self.sent_version:
            return NACKED
        return SYNCED if self.acked_version == self.sent_version else STALE


@dataclass
class XdsSession:
    """Protocol state of one ADS stream."""

    proxy_id: str
    watches: dict[str, Watch] = field(default_factory=dict)
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    nacks: int = 0

    def on_request(self, request: discovery_pb2.DiscoveryRequest, snapshot: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        type_url = request.type_url
        if not type_url:
            return []
        names = self._names(type_url, request.resource_names)
        watch = self.watches.get(type_url)
        if watch is None or not request.response_nonce:
            # A first request (or a reconnect-style request without nonce): always answer.
            previous = watch
            watch = Watch(names)
            if previous is not None:
                watch.acked_version = previous.acked_version
            self.watches[type_url] = watch
            return [self._respond(type_url, watch, snapshot)]
        if request.response_nonce != watch.sent_nonce:
            return []  # stale: answers a response that a newer one superseded
        if request.HasField("error_detail") and (request.error_detail.code or request.error_detail.message):
            watch.nack_message = request.error_detail.message or f"code {request.error_detail.code}"
            watch.nacked_version = watch.sent_version
            self.nacks += 1
        else:
            watch.acked_version = request.version_info
            watch.nack_message = ""
        if names != watch.names:
            watch.names = names
            return [self._respond(type_url, watch, snapshot)]
        return []

    def on_snapshot(self, snapshot: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        """Responses for every subscribed type whose content changed, in dependency order."""
        out = []
        for type_url in sorted(self.watches, key=_order):
            watch = self.watches[type_url]
            if self._selection(type_url, watch, snapshot) != (watch.sent_version, watch.sent_names):
                out.append(self._respond(type_url, watch, snapshot))
        return out

    @staticmethod
    def _names(type_url: str, names: Iterable[str]) -> frozenset[str] | None:
        chosen = frozenset(names)
        if type_url in WILDCARD_TYPES and (not chosen or "*" in chosen):
            return None
        return chosen - {"*"}

    @staticmethod
    def _selection(type_url: str, watch: Watch, snapshot: Snapshot) -> tuple[str, tuple[str, ...]]:
        available = snapshot.resources(type_url)
        if watch.names is None:
            return snapshot.version(type_url), tuple(sorted(available))
        names = tuple(sorted(n for n in watch.names if n in available))
        return snapshot.subset_version(type_url, names), names

    def _respond(self, type_url: str, watch: Watch, snapshot: Snapshot) -> discovery_pb2.DiscoveryResponse:
        version, names = self._selection(type_url, watch, snapshot)
        nonce = str(next(self._nonces))
        watch.sent_version, watch.sent_nonce, watch.sent_names, watch.sent_at = version, nonce, names, time.time()
        return discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=type_url, nonce=nonce,
            resources=[snapshot.packed(type_url, name) for name in names])

    def sent_names(self, type_url: str) -> tuple[str, ...]:
        watch = self.watches.get(type_url)
        return watch.sent_names if watch is not None else ()

    def status(self) -> dict[str, dict[str, str]]:
        """Per type short name: sent and acked versions, SYNCED/STALE/NACKED and the NACK message."""
        return {TYPE_SHORT_NAMES.get(t, t): {"status": w.status, "sent": w.sent_version, "acked": w.acked_version,
                                             "nack": w.nack_message, "resources": str(len(w.sent_names))}
                for t, w in sorted(self.watches.items(), key=lambda item: _order(item[0]))}


def _order(type_url: str) -> int:
    return TYPE_ORDER.index(type_url) if type_url in TYPE_ORDER else len(TYPE_ORDER)


__all__ = ["NACKED", "NOT_SENT", "STALE", "SYNCED", "Watch", "XdsSession"]
