"""The service registry: services and their endpoints, from ServiceEntry, WorkloadEntry and
the proxies that connected (self-registered workloads), as Istio builds it.

A ServiceEntry with `endpoints` lists its instances; one with `workloadSelector` takes every
WorkloadEntry and every connected proxy in its namespace whose labels match. An instance's
port for a service port is its own port of that name, else `targetPort`, else the service
port. A self-registered workload is reached through its inbound listener when it has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controlplane._hosts import fqdn
from controlplane._proxies import Proxy, labels_match
from controlplane._resources import Resource

HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "GRPC-WEB")


@dataclass(frozen=True)
class ServicePort:
    number: int
    name: str
    protocol: str = "TCP"
    target_port: int = 0

    @property
    def is_http(self) -> bool:
        return self.protocol.upper() in HTTP_PROTOCOLS or self.name.split("-")[0].lower() in ("http", "http2", "grpc")

    @property
    def is_http2(self) -> bool:
        return self.protocol.upper() in ("HTTP2", "GRPC", "GRPC-WEB") or self.name.split("-")[0].lower() in ("http2", "grpc")


@dataclass(frozen=True)
class Endpoint:
    """One instance of a service on one port."""

    address: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict)
    weight: int = 1
    locality: str = ""
    service_account: str = ""


@dataclass(frozen=True)
class Workload:
    """Something that runs a service: a WorkloadEntry, a ServiceEntry endpoint or a proxy."""

    name: str
    namespace: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    weight: int = 1
    locality: str = ""
    service_account: str = ""
    inbound_ports: Mapping[int, int] = field(default_factory=dict)  # app port -> listener port


@dataclass(frozen=True)
class Service:
    hostname: str
    namespace: str
    ports: tuple[ServicePort, ...]
    resolution: str = "STATIC"
    location: str = "MESH_INTERNAL"
    addresses: tuple[str, ...] = ()
    selector: Mapping[str, str] | None = None
    static_workloads: tuple[Workload, ...] = ()
    source: str = ""
    export_to: tuple[str, ...] = ("*",)

    def visible_from(self, namespace: str) -> bool:
        return "*" in self.export_to or namespace in self.export_to or (
            "." in self.export_to and namespace == self.namespace)

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.number == number), None)


def _workload_from_entry(spec: Mapping[str, object], name: str, namespace: str) -> Workload:
    ports = spec.get("ports") or {}
    return Workload(
        name=name,
        namespace=namespace,
        address=str(spec.get("address", "")),
        labels=dict(spec.get("labels") or {}),  # type: ignore[call-overload]
        ports={str(k): int(v) for k, v in ports.items()} if isinstance(ports, Mapping) else {},
        weight=int(spec.get("weight") or 1),  # type: ignore[call-overload]
        locality=str(spec.get("locality", "")),
        service_account=str(spec.get("serviceAccount", "")),
    )


def workload_from_proxy(proxy: Proxy) -> Workload:
    return Workload(
        name=proxy.name,
        namespace=proxy.namespace,
        address=proxy.address,
        labels=dict(proxy.labels),
        ports={p.name: p.number for p in proxy.app_ports if p.name},
        service_account=proxy.service_account,
        inbound_ports=dict(proxy.inbound_ports),
    )


class ServiceRegistry:
    """Services and endpoints computed from one set of resources and connected proxies."""

    def __init__(self, resources: Iterable[Resource], proxies: Iterable[Proxy] = ()) -> None:
        self.services: list[Service] = []
        self.workloads: list[Workload] = []
        for res in resources:
            if res.kind == "ServiceEntry":
                self.services.extend(_services_from_entry(res))
            elif res.kind == "WorkloadEntry":
                self.workloads.append(_workload_from_entry(res.spec, res.name, res.namespace))
        self.workloads.extend(workload_from_proxy(p) for p in proxies)
        self.services.sort(key=lambda s: (s.hostname, s.namespace))
        self._by_host = {s.hostname: s for s in self.services}

    def service(self, hostname: str) -> Service | None:
        return self._by_host.get(hostname)

    def instances(self, service: Service) -> list[Workload]:
        if service.selector is None:
            return list(service.static_workloads)
        return [w for w in self.workloads
                if w.namespace == service.namespace and labels_match(service.selector, w.labels)]

    def endpoints(self, service: Service, port: ServicePort) -> list[Endpoint]:
        """Every endpoint of `service` on `port`, sorted for stable output."""
        out = []
        for workload in self.instances(service):
            if not workload.address:
                continue
            number = workload.ports.get(port.name) or port.target_port or port.number
            number = workload.inbound_ports.get(number, number)
            out.append(Endpoint(workload.address, number, workload.labels, workload.weight,
                                workload.locality, workload.service_account))
        return sorted(out, key=lambda e: (e.address, e.port))


def _services_from_entry(res: Resource) -> list[Service]:
    spec = res.spec
    ports = tuple(ServicePort(int(p["number"]), str(p.get("name", "")), str(p.get("protocol", "TCP")),
                              int(p.get("targetPort") or 0)) for p in spec.get("ports") or [])
    selector = (spec.get("workloadSelector") or {}).get("labels")
    statics = tuple(_workload_from_entry(e, f"{res.name}-{i}", res.namespace)
                    for i, e in enumerate(spec.get("endpoints") or []))
    resolution = str(spec.get("resolution") or "NONE")
    return [Service(
        hostname=fqdn(str(host), res.namespace),
        namespace=res.namespace,
        ports=ports,
        resolution=resolution,
        location=str(spec.get("location") or "MESH_EXTERNAL"),
        addresses=tuple(spec.get("addresses") or ()),
        selector=dict(selector) if selector is not None else None,
        static_workloads=statics,
        source=str(res.key),
        export_to=tuple(spec.get("exportTo") or ("*",)),
    ) for host in spec.get("hosts") or []]


__all__ = ["Endpoint", "Service", "ServicePort", "ServiceRegistry", "Workload", "workload_from_proxy"]
