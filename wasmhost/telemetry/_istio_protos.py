"""The two Istio proxy extension configs wasmesh understands, as protobuf messages.

Istio's control plane configures its telemetry filters with ``stats.PluginConfig``
(``istio.stats``) and ``io.istio.http.peer_metadata.Config`` (``istio.metadata_exchange``).
Those messages are not part of the Envoy API packages, so their descriptors are built here
(same package, message and field names and numbers as Istio's proxy, so the bytes are
interchangeable) and added to the default descriptor pool: a ``typed_config`` naming
``type.googleapis.com/stats.PluginConfig`` then unpacks like any Envoy type, in the sidecar
and in the control plane alike.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, symbol_database
from google.protobuf.message import Message

STATS_CONFIG_TYPE = "stats.PluginConfig"
PEER_METADATA_CONFIG_TYPE = "io.istio.http.peer_metadata.Config"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _field(message: Any, name: str, number: int, kind: int, *, repeated: bool = False,
           type_name: str = "", oneof: int | None = None) -> None:
    field = message.field.add(name=name, number=number, type=kind, label=_REPEATED if repeated else _OPTIONAL)
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof


def _stats_file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="wasmesh/istio/stats_config.proto", package="stats", syntax="proto3",
        dependency=["google/protobuf/duration.proto"])
    metric_type = proto.enum_type.add(name="MetricType")
    for index, name in enumerate(("COUNTER", "GAUGE", "HISTOGRAM")):
        metric_type.value.add(name=name, number=index)
    reporter = proto.enum_type.add(name="Reporter")
    reporter.value.add(name="UNSPECIFIED", number=0)
    reporter.value.add(name="SERVER_GATEWAY", number=1)

    metric_config = proto.message_type.add(name="MetricConfig")
    entry = metric_config.nested_type.add(name="DimensionsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_STRING)
    _field(metric_config, "dimensions", 1, _F.TYPE_MESSAGE, repeated=True,
           type_name=".stats.MetricConfig.DimensionsEntry")
    _field(metric_config, "name", 2, _F.TYPE_STRING)
    _field(metric_config, "tags_to_remove", 3, _F.TYPE_STRING, repeated=True)
    _field(metric_config, "match", 4, _F.TYPE_STRING)
    _field(metric_config, "drop", 5, _F.TYPE_BOOL)

    definition = proto.message_type.add(name="MetricDefinition")
    _field(definition, "name", 1, _F.TYPE_STRING)
    _field(definition, "value", 2, _F.TYPE_STRING)
    _field(definition, "type", 3, _F.TYPE_ENUM, type_name=".stats.MetricType")

    config = proto.message_type.add(name="PluginConfig")
    for number in range(1, 6):
        config.reserved_range.add(start=number, end=number + 1)
    _field(config, "disable_host_header_fallback", 6, _F.TYPE_BOOL)
    _field(config, "tcp_reporting_duration", 7, _F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")
    _field(config, "metrics", 8, _F.TYPE_MESSAGE, repeated=True, type_name=".stats.MetricConfig")
    _field(config, "definitions", 9, _F.TYPE_MESSAGE, repeated=True, type_name=".stats.MetricDefinition")
    _field(config, "reporter", 10, _F.TYPE_ENUM, type_name=".stats.Reporter")
    _field(config, "rotation_interval", 11, _F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")
    _field(config, "graceful_deletion_interval", 12, _F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")
    return proto


def _peer_metadata_file() -> descriptor_pb2.FileDescriptorProto:
    package = "io.istio.http.peer_metadata"
    proto = descriptor_pb2.FileDescriptorProto(
        name="wasmesh/istio/peer_metadata_config.proto", package=package, syntax="proto3")
    config = proto.message_type.add(name="Config")
    config.nested_type.add(name="Baggage")
    config.nested_type.add(name="WorkloadDiscovery")
    headers = config.nested_type.add(name="IstioHeaders")
    _field(headers, "skip_external_clusters", 1, _F.TYPE_BOOL)
    discovery = config.nested_type.add(name="DiscoveryMethod")
    discovery.oneof_decl.add(name="method_specifier")
    prefix = f".{package}.Config."
    _field(discovery, "baggage", 1, _F.TYPE_MESSAGE, type_name=prefix + "Baggage", oneof=0)
    _field(discovery, "workload_discovery", 2, _F.TYPE_MESSAGE, type_name=prefix + "WorkloadDiscovery", oneof=0)
    _field(discovery, "istio_headers", 3, _F.TYPE_MESSAGE, type_name=prefix + "IstioHeaders", oneof=0)
    propagation = config.nested_type.add(name="PropagationMethod")
    propagation.oneof_decl.add(name="method_specifier")
    _field(propagation, "istio_headers", 1, _F.TYPE_MESSAGE, type_name=prefix + "IstioHeaders", oneof=0)
    _field(config, "downstream_discovery", 1, _F.TYPE_MESSAGE, repeated=True, type_name=prefix + "DiscoveryMethod")
    _field(config, "upstream_discovery", 2, _F.TYPE_MESSAGE, repeated=True, type_name=prefix + "DiscoveryMethod")
    _field(config, "downstream_propagation", 3, _F.TYPE_MESSAGE, repeated=True,
           type_name=prefix + "PropagationMethod")
    _field(config, "upstream_propagation", 4, _F.TYPE_MESSAGE, repeated=True,
           type_name=prefix + "PropagationMethod")
    _field(config, "shared_with_upstream", 5, _F.TYPE_BOOL)
    _field(config, "additional_labels", 6, _F.TYPE_STRING, repeated=True)
    return proto


def _register(proto: descriptor_pb2.FileDescriptorProto) -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(proto.name)
        return
    except KeyError:
        pass
    from google.protobuf import duration_pb2  # noqa: F401  (the Duration dependency must be in the pool)

    pool.Add(proto)


_register(_stats_file())
_register(_peer_metadata_file())


def message_class(full_name: str) -> type[Message]:
    """The generated class of one of the registered Istio messages (also known to the symbol database)."""
    cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(full_name))
    symbol_database.Default().RegisterMessage(cls)
    return cls


StatsPluginConfig = message_class(STATS_CONFIG_TYPE)
PeerMetadataConfig = message_class(PEER_METADATA_CONFIG_TYPE)
