"""``/config_dump`` for what arrived over xDS, in Envoy's shapes and order.

Dynamic clusters (active and warming), ECDS filters, listeners (active, warming and the last
refused update as ``error_state``), RDS route configurations and, with ``?include_eds``, EDS
assignments — each with the version and time it was last updated, as Envoy reports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.admin.v3 import config_dump_shared_pb2 as shared
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message

from ._xds_resources import CLUSTER, ENDPOINT, EXTENSION, LISTENER, ROUTE, SECRET, XdsResource


def _pack(message: Message) -> Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _stamp(seconds: float) -> Any:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _failure(snapshot: Any, type_url: str, name: str) -> Any | None:
    failure = snapshot.failures.get((type_url, name))
    if failure is None:
        return None
    return shared.UpdateFailureState(failed_configuration=_pack(failure.resource), last_update_attempt=_stamp(failure.at),
                                     details=failure.message, version_info=failure.version)


def _names(snapshot: Any, type_url: str, *groups: Iterable[str]) -> list[str]:
    found = {name for group in groups for name in group}
    found |= {name for (t, name) in snapshot.failures if t == type_url}
    return sorted(found)


def clusters_dump(snapshot: Any, static_clusters: Iterable[Message]) -> Any:
    dump = shared.ClustersConfigDump(version_info=snapshot.versions.get(CLUSTER, ""))
    for cluster in static_clusters:
        dump.static_clusters.append(shared.ClustersConfigDump.StaticCluster(cluster=_pack(cluster)))
    accepted = snapshot.resources.get(CLUSTER, {})
    serving = snapshot.serving.get(CLUSTER, {})
    for name in _names(snapshot, CLUSTER, accepted, serving):
        active: XdsResource | None = serving.get(name)
        latest: XdsResource | None = accepted.get(name)
        error = _failure(snapshot, CLUSTER, name)
        if active is not None:
            entry = shared.ClustersConfigDump.DynamicCluster(
                version_info=active.version, cluster=_pack(active.message), last_updated=_stamp(active.updated))
            if error is not None and (latest is None or latest is active):
                entry.error_state.CopyFrom(error)
            dump.dynamic_active_clusters.append(entry)
        if latest is not None and latest is not active:
            entry = shared.ClustersConfigDump.DynamicCluster(
                version_info=latest.version, cluster=_pack(latest.message), last_updated=_stamp(latest.updated))
            if error is not None:
                entry.error_state.CopyFrom(error)
            dump.dynamic_warming_clusters.append(entry)
        elif active is None and latest is None and error is not None:
            dump.dynamic_active_clusters.append(shared.ClustersConfigDump.DynamicCluster(error_state=error))
    return dump


def listeners_dump(snapshot: Any, static_listeners: Iterable[Message]) -> Any:
    dump = shared.ListenersConfigDump(version_info=snapshot.versions.get(LISTENER, ""))
    for listener in static_listeners:
        dump.static_listeners.append(shared.ListenersConfigDump.StaticListener(listener=_pack(listener)))
    accepted = snapshot.resources.get(LISTENER, {})
    serving = snapshot.serving.get(LISTENER, {})
    for name in _names(snapshot, LISTENER, accepted, serving):
        entry = shared.ListenersConfigDump.DynamicListener(name=name)
        active = serving.get(name)
        latest = accepted.get(name)
        if active is not None:
            entry.active_state.CopyFrom(shared.ListenersConfigDump.DynamicListenerState(
                version_info=active.version, listener=_pack(active.message), last_updated=_stamp(active.updated)))
        if latest is not None and latest is not active:
            entry.warming_state.CopyFrom(shared.ListenersConfigDump.DynamicListenerState(
                version_info=latest.version, listener=_pack(latest.message), last_updated=_stamp(latest.updated)))
        error = _failure(snapshot, LISTENER, name)
        if error is not None:
            entry.error_state.CopyFrom(error)
        dump.dynamic_listeners.append(entry)
    return dump


def _dynamic_dump(snapshot: Any, type_url: str, dump: Any, entry_type: Any, field: str, entries: Any) -> Any:
    """One entry per named resource: the accepted version (if any) and the last refusal (if any)."""
    accepted = snapshot.resources.get(type_url, {})
    for name in _names(snapshot, type_url, accepted):
        entry = entry_type()
        resource = accepted.get(name)
        if resource is not None:
            entry.version_info = resource.version
            getattr(entry, field).CopyFrom(_pack(resource.message))
            entry.last_updated.CopyFrom(_stamp(resource.updated))
        error = _failure(snapshot, type_url, name)
        if error is not None:
            entry.error_state.CopyFrom(error)
        entries.append(entry)
    return dump


def routes_dump(snapshot: Any) -> Any:
    dump = shared.RoutesConfigDump()
    return _dynamic_dump(snapshot, ROUTE, dump, shared.RoutesConfigDump.DynamicRouteConfig, "route_config",
                         dump.dynamic_route_configs)


def ecds_dump(snapshot: Any) -> Any:
    dump = shared.EcdsConfigDump()
    return _dynamic_dump(snapshot, EXTENSION, dump, shared.EcdsConfigDump.EcdsFilterConfig, "ecds_filter",
                         dump.ecds_filters)


def endpoints_dump(snapshot: Any) -> Any:
    dump = shared.EndpointsConfigDump()
    return _dynamic_dump(snapshot, ENDPOINT, dump, shared.EndpointsConfigDump.DynamicEndpointConfig,
                         "endpoint_config", dump.dynamic_endpoint_configs)


def _redacted(secret: Any) -> Any:
    copy = type(secret)()
    copy.CopyFrom(secret)
    if copy.HasField("tls_certificate") and copy.tls_certificate.HasField("private_key"):
        copy.tls_certificate.private_key.Clear()
        copy.tls_certificate.private_key.inline_string = "[redacted]"
    return copy


def secrets_dump(snapshot: Any) -> Any:
    """SDS secrets (over ADS, then the identity agent's) with private keys redacted, as Envoy shows them."""
    from envoy.admin.v3 import config_dump_pb2

    from ._dynamic import AGENT_SECRETS

    dump = config_dump_pb2.SecretsConfigDump()
    for table in (SECRET, AGENT_SECRETS):
        accepted = snapshot.resources.get(table, {})
        for name in _names(snapshot, table, accepted):
            entry = config_dump_pb2.SecretsConfigDump.DynamicSecret(name=name)
            resource = accepted.get(name)
            if resource is not None:
                entry.version_info = resource.version
                entry.secret.CopyFrom(_pack(_redacted(resource.message)))
                entry.last_updated.CopyFrom(_stamp(resource.updated))
            dump.dynamic_active_secrets.append(entry)
    return dump


__all__ = ["clusters_dump", "ecds_dump", "endpoints_dump", "listeners_dump", "routes_dump", "secrets_dump"]
