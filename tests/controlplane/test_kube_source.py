"""The Kubernetes source against FakeKubeApiServer (an in-process stand-in: no kube-apiserver
can be installed here). The adapter uses the real `kubernetes` client, so the API server is
the only difference from a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane._generate import generate
from controlplane._mesh import Mesh
from controlplane._module_config import ModulesConfig
from controlplane._module_status import StatusTargetGone, StatusWriter, attach_status_writer
from controlplane._protos import ENDPOINT, ROUTE, to_dict
from controlplane._resources import ResourceKey
from controlplane._store import ConfigStore
from registry import (
    Reference,
    RegistryClient,
    TrustPolicy,
    generate_keypair,
    load_private_key,
    load_public_key,
    push_module,
    sign_image,
)
from registry.testing import running_registry
from tests._tools import require_tool
from tests.controlplane._fake_kube import FakeKubeApiServer
from tests.controlplane._fixtures import sidecar
from tests.controlplane._running import RunningControlPlane, wait_for
from tests.registry._tools import build_wat

try:
    import kubernetes

    from controlplane._kube import KubernetesSource
except ImportError:  # reported by the fixture: skipped, or failed under CI=true
    kubernetes = None

VS_PATH = "/apis/networking.istio.io/v1/virtualservices"


def virtual_service(timeout: str) -> dict[str, object]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}],
                                                     "timeout": timeout}]}}


@pytest.fixture
def cluster() -> Iterator[tuple[FakeKubeApiServer, ConfigStore, KubernetesSource]]:
    require_tool("kubernetes", lookup=lambda: kubernetes.__file__ if kubernetes else None,
                 hint="pip install kubernetes (the Python client)")
    fake = FakeKubeApiServer().start()
    configuration = kubernetes.client.Configuration()
    configuration.host = fake.url
    configuration.connection_pool_maxsize = 32
    store = ConfigStore()
    source = KubernetesSource(store, kubernetes.client.ApiClient(configuration), watch_timeout=2, relist_backoff=0.1)
    try:
        yield fake, store, source
    finally:
        fake.stop()  # ends the open watches first, so the source's threads stop at once
        source.stop()


def timeout_of(store: ConfigStore) -> str | None:
    resource = store.get(ResourceKey("VirtualService", "default", "reviews"))
    return None if resource is None else str(resource.spec["http"][0]["timeout"])


def test_lists_then_follows_crd_changes(cluster: tuple[FakeKubeApiServer, ConfigStore, KubernetesSource]) -> None:
    fake, store, source = cluster
    fake.put(VS_PATH, virtual_service("1s"))
    source.start()
    assert source.synced.wait(10)
    assert timeout_of(store) == "1s"
    fake.put(VS_PATH, virtual_service("2s"))
    wait_for(lambda: timeout_of(store) == "2s", what="MODIFIED seen")
    fake.put(VS_PATH, virtual_service("whenever"))  # invalid: reported, last good kept
    wait_for(lambda: any("timeout" in d.path for d in store.findings()), what="invalid object reported")
    assert timeout_of(store) == "2s"
    [finding] = store.findings()
    assert finding.origin.file == "kubernetes:virtualservices/default/reviews"
    fake.delete(VS_PATH, "default", "reviews")
    wait_for(lambda: timeout_of(store) is None, what="DELETED seen")
    assert f"{VS_PATH} watch" in fake.requests and "/api/v1/services" in fake.requests


def test_services_endpoints_and_pods_become_registry_entries(
        cluster: tuple[FakeKubeApiServer, ConfigStore, KubernetesSource]) -> None:
    fake, store, source = cluster
    fake.put("/api/v1/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews"},
                                  "spec": {"ports": [{"name": "http", "port": 9080, "targetPort": 9080,
                                                      "protocol": "TCP"}], "selector": {"app": "reviews"}}})
    fake.put("/api/v1/pods", {"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": "reviews-v2-abc", "labels": {"app": "reviews", "version": "v2"}},
                              "spec": {"containers": [{"name": "app", "image": "x"}]}})
    source.start()
    assert source.synced.wait(10)
    fake.put("/api/v1/endpoints", {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews"},
                                   "subsets": [{"addresses": [{"ip": "10.1.2.3", "targetRef": {
                                       "kind": "Pod", "name": "reviews-v2-abc", "namespace": "default"}}],
                                                "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]}]})
    fake.put("/apis/networking.istio.io/v1/destinationrules", {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews"},
        "spec": {"host": "reviews", "subsets": [{"name": "v2", "labels": {"version": "v2"}}]}})

    def endpoints() -> list[str]:
        snapshot = generate(Mesh(store.resources()), sidecar())
        cla = snapshot.resources(ENDPOINT).get("outbound|9080|v2|reviews.default.svc.cluster.local")
        if cla is None:
            return []
        return [e["endpoint"]["address"]["socket_address"]["address"]
                for group in to_dict(cla).get("endpoints", []) for e in group["lb_endpoints"]]

    assert wait_for(endpoints, what="endpoint with pod labels") == ["10.1.2.3"]
    snapshot = generate(Mesh(store.resources()), sidecar())
    assert "9080" in snapshot.resources(ROUTE)


def test_relists_after_410_gone(cluster: tuple[FakeKubeApiServer, ConfigStore, KubernetesSource]) -> None:
    fake, store, source = cluster
    fake.put(VS_PATH, virtual_service("1s"))
    source.start()
    assert source.synced.wait(10)
    lists_before = fake.requests.count(VS_PATH)
    fake.put("/api/v1/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})  # history moves on
    fake.compact()  # open watches end; resuming from the old version answers 410 Gone
    fake.put(VS_PATH, virtual_service("2s"))
    wait_for(lambda: timeout_of(store) == "2s", what="converged after relisting")
    assert fake.gone >= 1 and fake.requests.count(VS_PATH) > lists_before


def test_pull_secrets_are_read_from_the_cluster(cluster: tuple[FakeKubeApiServer, ConfigStore, KubernetesSource]) -> None:
    import base64

    from controlplane._secrets import pull_secrets

    fake, store, source = cluster
    source.start()
    assert source.synced.wait(10)
    config = '{"auths": {"registry.local": {"auth": "dTpw"}}}'
    fake.put("/api/v1/secrets", {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                                 "metadata": {"name": "pull-creds", "namespace": "shop"},
                                 "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()}})
    assert wait_for(lambda: pull_secrets(store.resources()), what="secret seen") == {"shop/pull-creds": config}


# ---- WasmPlugin status written back ----------------------------------------------------------------------
WASM_PATH = "/apis/extensions.istio.io/v1alpha1/wasmplugins"


def wasm_plugin(url: str) -> dict[str, object]:
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": "headers", "namespace": "default"}, "spec": {"url": url}}


def conditions_of(fake: FakeKubeApiServer) -> dict[str, tuple[str, str]]:
    status = fake.status_of(WASM_PATH, "default", "headers") or {}
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def test_wasm_plugin_status_is_written_to_its_status_subresource_and_retried(
        cluster: tuple[FakeKubeApiServer, ConfigStore, KubernetesSource], tmp_path: Path) -> None:
    fake, _, _ = cluster
    private_pem, public_pem = generate_keypair()
    with running_registry(tmp_path / "registry") as registry, RunningControlPlane(None) as running:
        running.settings.module_cache_dir = tmp_path / "cache"
        assert running.plane is not None
        running.plane.modules.config = ModulesConfig(policy=TrustPolicy.with_keys([load_public_key(public_pem)]))
        source = KubernetesSource(running.plane.store, cluster[2].api_client, watch_timeout=2, relist_backoff=0.1)

        def push(tag: str, data: bytes, signed: bool) -> str:
            ref = Reference.parse(f"{registry.host}/plugins/headers:{tag}")
            with RegistryClient(registry.host) as client:
                push_module(client, ref, data)
                if signed:
                    sign_image(client, ref, load_private_key(private_pem))
            return str(ref)

        good = push("v1", build_wat('(module (func (export "proxy_abi_version_0_2_1")))'), True)
        fake.put(WASM_PATH, wasm_plugin(good))
        writer = running.run(lambda: attach_status_writer(running.plane.modules, source.patch_status, backoff=0.05))
        try:
            source.start()
            wait_for(lambda: conditions_of(fake).get("Distributed") == ("True", "ControlPlane"), what="status written", timeout=30)
            status = fake.status_of(WASM_PATH, "default", "headers")
            assert status is not None and status["module"]["digest"].startswith("sha256:")
            assert status["module"]["signers"] and conditions_of(fake)["Verified"] == ("True", "Signed")
            [(_, patch)] = [w for w in fake.status_writes if w[1]["status"] == status][:1]
            assert set(patch) == {"status"}  # spec and metadata are never written
            assert fake.status_of(VS_PATH, "default", "reviews") is None

            fake.fail_status_writes(409, 500)  # a conflict, then a server error: retried with backoff
            unsigned = push("v2", build_wat('(module (memory 1) (func (export "proxy_abi_version_0_2_1")))'), False)
            fake.put(WASM_PATH, wasm_plugin(unsigned))
            wait_for(lambda: conditions_of(fake).get("Verified") == ("False", "SignatureRejected"),
                     what="the refusal written after the retries", timeout=30)
            assert conditions_of(fake)["Distributed"] == ("True", "LastGoodVersion") and writer.failures >= 2
            wait_for(writer.idle, what="nothing left to write")
            writes = len(fake.status_writes)
            running.run(running.plane.push_all)  # a push with unchanged conditions writes nothing
            running.run(running.plane.modules.refresh)  # nor does re-resolving to the same verdict
            running.call(running.plane.modules.settled())
            wait_for(writer.idle, what="nothing left to write")
            assert len(fake.status_writes) == writes
        finally:
            writer.stop()
            source.stop()


def test_a_kind_without_a_status_subresource_is_never_retried(
        cluster: tuple[FakeKubeApiServer, ConfigStore, KubernetesSource]) -> None:
    """The API server answers 404 for a status write to a CRD without the subresource: dropped."""
    bare = FakeKubeApiServer(with_status=()).start()
    configuration = kubernetes.client.Configuration()
    configuration.host = bare.url
    configuration.connection_pool_maxsize = 32
    source = KubernetesSource(ConfigStore(), kubernetes.client.ApiClient(configuration), watch_timeout=2,
                              relist_backoff=0.1)
    writer = StatusWriter(source.patch_status, backoff=0.05).start()
    try:
        bare.put(WASM_PATH, wasm_plugin("oci://r.example/p:v1"))
        source.start()
        assert source.synced.wait(10)
        with pytest.raises(StatusTargetGone, match="Not Found"):
            source.patch_status(ResourceKey("WasmPlugin", "default", "headers"), {"conditions": []})
        with pytest.raises(StatusTargetGone, match="not a Kubernetes object"):
            source.patch_status(ResourceKey("WasmPlugin", "default", "elsewhere"), {"conditions": []})
        writer.submit(ResourceKey("WasmPlugin", "default", "headers"), {"conditions": []})
        wait_for(writer.idle, what="the write dropped")
        assert bare.status_writes == [] and writer.failures == 0 and writer.written == {}
        assert bare.requests.count(f"{WASM_PATH.replace('wasmplugins', 'namespaces/default/wasmplugins')}"
                                   "/headers/status patch") == 2
    finally:
        writer.stop()
        bare.stop()
        source.stop()
