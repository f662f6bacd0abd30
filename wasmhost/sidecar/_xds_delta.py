"""Incremental xDS (``DELTA_GRPC``): the same client, speaking in differences.

Each response carries only changed resources (each with its own version) and the names of
removed ones; subscriptions change by ``resource_names_subscribe``/``_unsubscribe``; a new
stream tells the server what the sidecar holds (``initial_resource_versions``). Every
response is answered on its own nonce — an ACK, or a NACK with ``error_detail`` when one of
the resources it carried was refused — because a delta server tracks each one separately.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from ._xds_resources import (
    CLUSTER,
    LISTENER,
    SHORT_NAMES,
    TYPE_ORDER,
    WILDCARD,
    XdsResource,
    decode_resources,
)
from ._xds_sotw import INVALID_ARGUMENT, NAMED_TYPES


def decode_delta(response: Any, now: float | None = None) -> tuple[dict[str, XdsResource], set[str], list[str]]:
    """(resources by name with their own versions, removed names, problems) of one delta response."""
    stamp = time.time() if now is None else now
    resources: dict[str, XdsResource] = {}
    errors: list[str] = []
    short = SHORT_NAMES.get(response.type_url, response.type_url)
    for index, item in enumerate(response.resources):
        found, problems = decode_resources(response.type_url, item.version, [item.resource], stamp)
        errors += [problem.replace("resources[0]", f"resources[{index}]") for problem in problems]
        for name, resource in found.items():
            if item.name and item.name != name:
                errors.append(f"resources[{index}]: named {item.name!r} but the {short} is named {name!r}")
            elif name in resources:
                errors.append(f"{short} {name}: sent twice in one response")
            else:
                resources[name] = resource
    return resources, set(response.removed_resources), errors


@dataclass
class DeltaAdsProtocol:
    """What the sidecar says on an incremental ADS stream."""

    node: Any
    wildcard: tuple[str, ...] = (CLUSTER, LISTENER)
    node_on_first_message_only: bool = True
    names: dict[str, frozenset[str]] = field(default_factory=dict)  # named types: wanted now
    _wire: dict[str, frozenset[str]] = field(default_factory=dict)  # named types: subscribed on this stream
    _node_sent: bool = False

    def _request(self, type_url: str, nonce: str = "", error: str = "", subscribe: Iterable[str] = (),
                 unsubscribe: Iterable[str] = (),
                 held: Mapping[str, str] | None = None) -> discovery_pb2.DeltaDiscoveryRequest:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, response_nonce=nonce, resource_names_subscribe=sorted(subscribe),
            resource_names_unsubscribe=sorted(unsubscribe))
        if held:
            request.initial_resource_versions.update(held)
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=INVALID_ARGUMENT, message=error))
        if not self._node_sent or not self.node_on_first_message_only:
            request.node.CopyFrom(self.node)
            self._node_sent = True
        return request

    def connected(self, held: Mapping[str, Mapping[str, XdsResource]]) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        """A new stream: wildcard LDS/CDS and the named subscriptions, with the versions held."""
        self._node_sent = False
        self._wire = {}
        requests = []
        for type_url in self.wildcard:
            requests.append(self._request(type_url, held={n: r.version for n, r in held.get(type_url, {}).items()}))
        for type_url in NAMED_TYPES:
            names = self.names.get(type_url, frozenset())
            if names:
                versions = {n: r.version for n, r in held.get(type_url, {}).items() if n in names}
                requests.append(self._request(type_url, subscribe=names, held=versions))
                self._wire[type_url] = names
        return requests

    def answer(self, verdicts: Mapping[str, list[tuple[str, str]]],
               wanted: Mapping[str, frozenset[str]]) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        """Answer every response (type -> [(nonce, error or "")]) and follow subscription changes."""
        self.names.update(wanted)
        requests = []
        for type_url in TYPE_ORDER:
            subscribe: frozenset[str] = frozenset()
            unsubscribe: frozenset[str] = frozenset()
            if type_url in NAMED_TYPES and type_url not in WILDCARD:
                names = self.names.get(type_url, frozenset())
                on_wire = self._wire.get(type_url, frozenset())
                subscribe, unsubscribe = names - on_wire, on_wire - names
                self._wire[type_url] = names
            answers = verdicts.get(type_url, [])
            for index, (nonce, error) in enumerate(answers):
                first = index == 0
                requests.append(self._request(type_url, nonce, error, subscribe if first else (),
                                              unsubscribe if first else ()))
            if not answers and (subscribe or unsubscribe):
                requests.append(self._request(type_url, subscribe=subscribe, unsubscribe=unsubscribe))
        return requests


__all__ = ["DeltaAdsProtocol", "decode_delta"]
