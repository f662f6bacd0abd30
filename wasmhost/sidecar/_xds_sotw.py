"""State-of-the-world ADS, the sans-io part: what the sidecar asks for and how it answers.

The node goes on the first request of a stream; LDS and CDS are wildcard subscriptions; RDS,
EDS, ECDS and SDS ask for the names the accepted resources need. Every response is answered
with its nonce: an ACK carries its version, a NACK the last accepted version plus
``error_detail`` (which resource, which field, why), as Envoy does. A new stream starts over
with the versions already held.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from ._xds_resources import CLUSTER, ENDPOINT, EXTENSION, LISTENER, ROUTE, SECRET, TYPE_ORDER, WILDCARD

INVALID_ARGUMENT = 3
NAMED_TYPES = (ENDPOINT, ROUTE, EXTENSION, SECRET)


@dataclass
class AdsProtocol:
    """What the sidecar says on the ADS stream, given what it received and decided."""

    node: Any
    wildcard: tuple[str, ...] = (CLUSTER, LISTENER)
    node_on_first_message_only: bool = True
    names: dict[str, frozenset[str]] = field(default_factory=dict)  # named types: current subscription
    accepted: dict[str, str] = field(default_factory=dict)  # type -> version last ACKed
    nonces: dict[str, str] = field(default_factory=dict)  # type -> nonce of the last response answered
    _wire_names: dict[str, frozenset[str]] = field(default_factory=dict)  # named types: as last sent
    _node_sent: bool = False

    def _request(self, type_url: str, error: str = "") -> discovery_pb2.DiscoveryRequest:
        names = sorted(self.names.get(type_url, ())) if type_url not in WILDCARD else []
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, version_info=self.accepted.get(type_url, ""),
            response_nonce=self.nonces.get(type_url, ""), resource_names=names)
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=INVALID_ARGUMENT, message=error))
        if not self._node_sent or not self.node_on_first_message_only:
            request.node.CopyFrom(self.node)
            self._node_sent = True
        if type_url not in WILDCARD:
            self._wire_names[type_url] = frozenset(names)
        return request

    def connected(self, held: Any = None) -> list[discovery_pb2.DiscoveryRequest]:
        """The first requests of a (new) stream: every type we want, with the versions we hold."""
        self._node_sent = False
        self._wire_names = {}
        self.nonces = {}
        requests = [self._request(type_url) for type_url in self.wildcard]
        requests += [self._request(t) for t in NAMED_TYPES if self.names.get(t)]
        return requests

    def answer(self, verdicts: Mapping[str, tuple[str, str, str]],
               wanted: Mapping[str, frozenset[str]]) -> list[discovery_pb2.DiscoveryRequest]:
        """ACK/NACK each answered type (with the names wanted now) and follow subscription changes.

        ``verdicts``: type -> (response version, response nonce, error message or "").
        """
        self.names.update(wanted)
        requests = []
        for type_url in TYPE_ORDER:
            verdict = verdicts.get(type_url)
            if verdict is not None:
                version, nonce, error = verdict
                self.nonces[type_url] = nonce
                if not error:
                    self.accepted[type_url] = version
                requests.append(self._request(type_url, error))
            elif type_url in NAMED_TYPES and self.names.get(type_url, frozenset()) != self._wire_names.get(
                    type_url, frozenset()):
                requests.append(self._request(type_url))
        return requests



__all__ = ["INVALID_ARGUMENT", "NAMED_TYPES", "AdsProtocol"]
