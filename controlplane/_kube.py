"""The Kubernetes source: list/watch Istio CRDs plus Services, Endpoints, Pods and image pull
Secrets through the
`kubernetes` client, and feed the same store the folder source feeds.

The adapter is deliberately thin: each watched collection is a dict of objects by
namespace/name kept current by list-then-watch (relisting on 410 Gone or a dropped stream);
after every event the whole Kubernetes slice is rebuilt and handed to the store, which keeps
versions stable for unchanged objects. CRD objects are validated like manifests from a
folder (a bad one is reported and its last good version kept). A Service with its Endpoints
becomes a ServiceEntry-equivalent resource (STATIC, one endpoint per ready address, labelled
with its Pod's labels), so the registry and translation see one model. The one write is
`patch_status`: module status conditions onto a WasmPlugin's `status` subresource.

`token_reviewer` posts TokenReviews for the CA (`ca.TokenReviewAuthenticator`), so
service-account tokens can serve as bootstrap credentials on a cluster.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane._resources import Document, Origin, Resource, ResourceKey
from controlplane._schemas import KINDS, Kind
from controlplane._secrets import DOCKER_CONFIG_TYPE, SecretError, pull_secret
from controlplane._store import ConfigStore
from controlplane._validation import ERROR, SCHEMA_ERROR, Diagnostic, validate_document

log = logging.getLogger("wasmesh.controlplane.kube")
SOURCE = "kubernetes"
SERVICE_DOMAIN = "svc.cluster.local"
POOL_SIZE = 32


@dataclass(frozen=True)
class Collection:
    """One list/watch endpoint: a CRD (group/version/plural) or a core kind."""

    name: str
    kind: Kind | None = None

    @property
    def is_core(self) -> bool:
        return self.kind is None


class KubernetesSource:
    """Watches a Kubernetes API server in background threads (one per collection)."""

    def __init__(self, store: ConfigStore, api_client: Any, *, watch_timeout: int = 30,
                 relist_backoff: float = 1.0) -> None:
        from kubernetes import client

        self.store = store
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.watch_timeout = watch_timeout
        self.relist_backoff = relist_backoff
        self.collections = [Collection(k.plural, k) for k in KINDS] + [
            Collection("services"), Collection("endpoints"), Collection("pods"), Collection("secrets")]
        self._objects: dict[str, dict[str, dict[str, Any]]] = {c.name: {} for c in self.collections}
        self._last_good: dict[ResourceKey, Resource] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open_watches: dict[int, tuple[Any, Any]] = {}  # id(response) -> (Watch, response)
        self.synced = threading.Event()
        self._synced_collections: set[str] = set()

    @classmethod
    def from_config(cls, store: ConfigStore, kubeconfig: str | None = None) -> KubernetesSource:
        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = POOL_SIZE  # one open watch per collection
        return cls(store, client.ApiClient(configuration))

    # ---- the loops ------------------------------------------------------------------------------------
    def start(self) -> KubernetesSource:
        for collection in self.collections:
            thread = threading.Thread(target=self._run, args=(collection,), daemon=True,
                                      name=f"kube-watch-{collection.name}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the watch threads and wait for them. An idle watch is a long poll the server only ends
        after `watch_timeout`, so the open watches are cut here rather than waited out; the join
        deadline is a backstop should a transport not let its socket be shut down."""
        self._stop.set()
        with self._lock:
            opened = list(self._open_watches.values())
        for watcher, response in opened:
            _interrupt(watcher, response)
        deadline = time.monotonic() + self.watch_timeout + 5
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _watch_call(self, list_call: Callable[..., Any], watcher: Any) -> Callable[..., Any]:
        """`list_call` recording the streaming response it returns, so `stop()` can cut it; `wraps`
        keeps the signature and docstring the `kubernetes` Watch reads the return type from."""

        @functools.wraps(list_call)
        def call(*args: Any, **kwargs: Any) -> Any:
            response = list_call(*args, **kwargs)
            with self._lock:
                self._open_watches[id(response)] = (watcher, response)
                stopping = self._stop.is_set()
            if stopping:  # stop() ran between its sweep and this request: cut this one too
                _interrupt(watcher, response)
            return response

        return call

    def _forget_watch(self, watcher: Any) -> None:
        with self._lock:
            for key in [k for k, (w, _) in self._open_watches.items() if w is watcher]:
                del self._open_watches[key]

    def _list_call(self, collection: Collection) -> Callable[..., Any]:
        if collection.kind is not None:
            kind = collection.kind
            version = kind.versions[0]

            def list_custom(**kwargs: Any) -> Any:
                return self.custom.list_cluster_custom_object(kind.group, version, kind.plural, **kwargs)

            return list_custom

        def pull_secrets(**kwargs: Any) -> Any:
            return self.core.list_secret_for_all_namespaces(field_selector=f"type={DOCKER_CONFIG_TYPE}", **kwargs)

        calls: dict[str, Callable[..., Any]] = {
            "services": self.core.list_service_for_all_namespaces,
            "endpoints": self.core.list_endpoints_for_all_namespaces,
            "pods": self.core.list_pod_for_all_namespaces,
            "secrets": pull_secrets,
        }
        return calls[collection.name]

    def _as_dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else dict(self.api_client.sanitize_for_serialization(obj))

    def _run(self, collection: Collection) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        list_call = self._list_call(collection)
        while not self._stop.is_set():
            try:
                listing = self._as_dict(list_call())
                version = str((listing.get("metadata") or {}).get("resourceVersion", ""))
                with self._lock:
                    self._objects[collection.name] = {_object_key(o): o for o in listing.get("items") or []}
                self._mark_synced(collection)
                self._rebuild()
                while not self._stop.is_set():
                    watcher = watch.Watch()
                    stream: Iterator[dict[str, Any]] = watcher.stream(
                        self._watch_call(list_call, watcher), resource_version=version,
                        timeout_seconds=self.watch_timeout)
                    try:
                        for event in stream:
                            obj = self._as_dict(event["object"])
                            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                            self._apply_event(collection, str(event["type"]), obj)
                            if self._stop.is_set():
                                break
                    finally:
                        self._forget_watch(watcher)
            except ApiException as err:
                if err.status != 410 and not self._stop.is_set():
                    log.warning("kubernetes %s: %s %s", collection.name, err.status, err.reason)
            except Exception as err:  # noqa: BLE001 - a lost stream must not end the source
                if not self._stop.is_set():  # a watch cut by stop() is no lost stream
                    log.warning("kubernetes %s watch ended: %s", collection.name, err)
            self._stop.wait(self.relist_backoff)

    def _mark_synced(self, collection: Collection) -> None:
        self._synced_collections.add(collection.name)
        if len(self._synced_collections) == len(self.collections):
            self.synced.set()

    def _apply_event(self, collection: Collection, kind: str, obj: dict[str, Any]) -> None:
        key = _object_key(obj)
        with self._lock:
            if kind == "DELETED":
                self._objects[collection.name].pop(key, None)
            elif kind in ("ADDED", "MODIFIED"):
                self._objects[collection.name][key] = obj
            else:
                return  # BOOKMARK / ERROR carry no object change
        self._rebuild()

    # ---- status written back ---------------------------------------------------------------------------
    def patch_status(self, key: ResourceKey, status: Mapping[str, Any]) -> None:
        """Merge-patch the `status` subresource of a watched CRD object (`_module_status.StatusWriter`
        calls this from its thread); raises StatusTargetGone when the cluster does not hold it."""
        from kubernetes.client.exceptions import ApiException

        from controlplane._module_status import StatusTargetGone

        kind = next((c.kind for c in self.collections if c.kind is not None and c.kind.kind == key.kind), None)
        with self._lock:
            held = kind is not None and f"{key.namespace}/{key.name}" in self._objects[kind.plural]
        if kind is None or not held:
            raise StatusTargetGone(f"{key} is not a Kubernetes object")
        try:
            self.custom.patch_namespaced_custom_object_status(
                kind.group, kind.versions[0], key.namespace, kind.plural, key.name, {"status": dict(status)},
                _content_type="application/merge-patch+json")
        except ApiException as err:
            if err.status == 404:
                raise StatusTargetGone(f"{key}: {err.reason}") from None
            raise

    # ---- objects -> resources ---------------------------------------------------------------------------
    def _rebuild(self) -> None:
        with self._lock:
            snapshot = {name: dict(items) for name, items in self._objects.items()}
        resources: list[Resource] = []
        findings: list[Diagnostic] = []
        for collection in self.collections:
            if collection.kind is None:
                continue
            for key, obj in sorted(snapshot[collection.name].items()):
                origin = Origin(f"kubernetes:{collection.kind.plural}/{key}")
                resource, found = validate_document(Document(_manifest(obj, collection.kind), origin))
                findings.extend(found)
                if resource is not None:
                    resource = _with_kube_metadata(resource, obj)
                    self._last_good[resource.key] = resource
                    resources.append(resource)
                else:
                    meta = obj.get("metadata") or {}
                    previous = self._last_good.get(ResourceKey(collection.kind.kind, str(meta.get("namespace", "default")),
                                                               str(meta.get("name", ""))))
                    if previous is not None:
                        resources.append(previous)
        resources.extend(services_as_entries(snapshot["services"], snapshot["endpoints"], snapshot["pods"]))
        for key, obj in sorted(snapshot["secrets"].items()):
            origin = Origin(f"kubernetes:secrets/{key}")
            try:
                secret = pull_secret(obj, origin)
            except SecretError as err:
                findings.append(Diagnostic(ERROR, SCHEMA_ERROR, str(err), origin))
                continue
            if secret is not None:
                resources.append(secret)
        self.store.replace_source(SOURCE, resources, findings)


def token_reviewer(api_client: Any, *, timeout: float = 5.0) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A function posting a TokenReview (`authentication.k8s.io/v1`) and returning the answer as a
    dict; errors (API status, transport, `timeout` seconds passed) propagate to the caller."""
    from kubernetes import client

    api = client.AuthenticationV1Api(api_client)

    def review(body: Mapping[str, Any]) -> dict[str, Any]:
        spec = body.get("spec") or {}
        request = client.V1TokenReview(
            api_version=body.get("apiVersion"), kind=body.get("kind"),
            spec=client.V1TokenReviewSpec(token=str(spec.get("token", "")), audiences=spec.get("audiences")))
        answer = api.create_token_review(request, _request_timeout=timeout)
        return dict(api_client.sanitize_for_serialization(answer))

    return review


def _interrupt(watcher: Any, response: Any) -> None:
    """Wake a thread blocked reading a watch: mark the Watch stopped, then shut the connection's socket
    down (a plain close does not wake a blocked read on Linux) and close the response. Each step is
    best effort; whatever the thread reads afterwards ends its stream."""
    watcher.stop()
    connection = getattr(response, "connection", None) or getattr(response, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected
    else:
        try:
            response.close()
        except Exception:  # noqa: BLE001 - closing from another thread is only a nudge
            pass


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _manifest(obj: Mapping[str, Any], kind: Kind) -> dict[str, Any]:
    """A CRD object as a manifest: server-managed metadata dropped so strict validation applies."""
    meta = obj.get("metadata") or {}
    metadata = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
    return {"apiVersion": obj.get("apiVersion") or kind.api_versions[0], "kind": kind.kind, "metadata": metadata,
            "spec": obj.get("spec") or {}}


def _with_kube_metadata(resource: Resource, obj: Mapping[str, Any]) -> Resource:
    from dataclasses import replace

    created = str((obj.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        stamp = time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) if created else 0.0
    except ValueError:
        stamp = 0.0
    return replace(resource, creation_timestamp=stamp)


def services_as_entries(services: Mapping[str, Mapping[str, Any]], endpoints: Mapping[str, Mapping[str, Any]],
                        pods: Mapping[str, Mapping[str, Any]]) -> list[Resource]:
    """Kubernetes Services (with their Endpoints and Pods' labels) as STATIC ServiceEntries."""
    out = []
    for key, service in sorted(services.items()):
        meta, spec = service.get("metadata") or {}, service.get("spec") or {}
        namespace, name = str(meta.get("namespace", "default")), str(meta.get("name", ""))
        ports = []
        for port in spec.get("ports") or []:
            port_name = str(port.get("name") or f"port-{port.get('port')}")
            protocol = str(port.get("appProtocol") or _protocol_from_name(port_name) or port.get("protocol") or "TCP")
            target = port.get("targetPort")
            entry: dict[str, Any] = {"number": int(port["port"]), "name": port_name, "protocol": protocol.upper()}
            if isinstance(target, int):
                entry["targetPort"] = target
            ports.append(entry)
        workloads = []
        for subset in (endpoints.get(key) or {}).get("subsets") or []:
            port_map = {str(p.get("name") or f"port-{p.get('port')}"): int(p["port"]) for p in subset.get("ports") or []}
            for address in subset.get("addresses") or []:
                ref = address.get("targetRef") or {}
                pod = pods.get(f"{ref.get('namespace', namespace)}/{ref.get('name', '')}") or {}
                labels = dict((pod.get("metadata") or {}).get("labels") or {})
                workloads.append({"address": address["ip"], "ports": port_map, "labels": labels})
        spec_out = {"hosts": [f"{name}.{namespace}.{SERVICE_DOMAIN}"], "ports": ports, "resolution": "STATIC",
                    "location": "MESH_INTERNAL", "endpoints": workloads}
        out.append(Resource(kind="ServiceEntry", api_version="networking.istio.io/v1", name=f"k8s-{name}",
                            namespace=namespace, spec=spec_out, origin=Origin(f"kubernetes:services/{key}")))
    return out


def _protocol_from_name(name: str) -> str:
    prefix = name.split("-")[0].lower()
    return {"http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "tcp": "TCP"}.get(prefix, "")


__all__ = ["SOURCE", "KubernetesSource", "services_as_entries", "token_reviewer"]
