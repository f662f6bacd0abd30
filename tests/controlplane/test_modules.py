"""Module resolution in the control plane against a live registry: one pull per digest, re-resolution
of tags that always pull, last good versions, per-namespace trust and distribution, the cache after a
restart, the mesh config, and how placements reach the generated ECDS and EnvoyFilter patches."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane._generate import generate
from controlplane._module_cache import ModuleCache
from controlplane._module_config import DIRECT, MeshConfigError, ModulesConfig
from controlplane._module_placement import (
    MODULE_CLUSTER,
    ModulePlacements,
    ModuleSlot,
    Served,
    Withheld,
    module_slots,
)
from controlplane._modules import ModuleResolver
from controlplane._protos import CLUSTER, EXTENSION_CONFIG, LISTENER, to_dict, unpack
from controlplane._resources import ResourceKey
from registry import (
    Reference,
    RegistryClient,
    TrustPolicy,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    push_module,
    sign_image,
)
from registry.testing import RunningRegistry, running_registry
from tests.controlplane._fixtures import mesh_of, sidecar
from tests.registry._tools import build_wat


def module(version: str) -> bytes:
    return build_wat(f'(module (memory 1) (data (i32.const 0) "{version}") (func (export "proxy_abi_version_0_2_1")))')


@dataclass
class Signer:
    private: Any
    public: Any

    @classmethod
    def new(cls) -> Signer:
        private_pem, public_pem = generate_keypair()
        return cls(load_private_key(private_pem), load_public_key(public_pem))


TRUSTED, OTHER = Signer.new(), Signer.new()


class Registry:
    def __init__(self, running: RunningRegistry) -> None:
        self.running = running
        self.layer_gets: list[str] = []
        original = running.app.handle

        def counting(request: Any) -> Any:
            if request.method == "GET" and "/blobs/" in request.path:
                self.layer_gets.append(request.path)
            return original(request)

        running.app.handle = counting  # type: ignore[method-assign,assignment]

    def push(self, data: bytes, tag: str, signer: Signer | None = TRUSTED, repo: str = "plugins/m") -> str:
        ref = Reference.parse(f"{self.running.host}/{repo}:{tag}")
        with RegistryClient(self.running.host) as client:
            push_module(client, ref, data)
            if signer is not None:
                sign_image(client, ref, signer.private)
        return str(ref)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with running_registry(tmp_path / "registry") as running:
        yield Registry(running)


def slot(url: str, name: str = "p", namespace: str = "default", **fields: Any) -> ModuleSlot:
    return ModuleSlot(f"WasmPlugin {namespace}/{name}", ResourceKey("WasmPlugin", namespace, name),
                      f"{namespace}.{name}", url, **fields)


def resolver_for(tmp_path: Path, config: ModulesConfig | None = None) -> ModuleResolver:
    config = config or ModulesConfig(policy=TrustPolicy.with_keys([TRUSTED.public]))
    return ModuleResolver(config, ModuleCache(tmp_path / "cache"), backoff=0.01)


def run(resolver: ModuleResolver, *slots: ModuleSlot, refresh: bool = False) -> None:
    async def body() -> None:
        if refresh:
            resolver.refresh()
        else:
            resolver.track(slots)
        await resolver.settled()

    asyncio.run(body())


def conditions(resolver: ModuleResolver, owner: ResourceKey) -> dict[str, tuple[str, str]]:
    status = resolver.status_of(owner)
    assert status is not None
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_many_plugins_naming_one_module_cost_one_registry_pull(registry: Registry, tmp_path: Path) -> None:
    url = registry.push(module("v1"), "v1")
    resolver = resolver_for(tmp_path)
    slots = [slot(url, name=f"p{i}") for i in range(20)]
    run(resolver, *slots)
    placements = resolver.placements()
    assert {placements.slots[s.key] for s in slots} == {Served(module_sha("v1"))}
    assert resolver.fetcher.pulls == 1
    assert len([p for p in registry.layer_gets if p.endswith(module_sha("v1"))]) == 1
    assert conditions(resolver, slots[0].owner) == {"Resolved": ("True", "Resolved"), "Verified": ("True", "Signed"),
                                                    "Distributed": ("True", "ControlPlane")}
    status = resolver.status_of(slots[0].owner)
    assert status is not None and status["module"]["signers"] == [f"key {key_id(TRUSTED.public)}"]


def module_sha(version: str) -> str:
    return hashlib.sha256(module(version)).hexdigest()


def test_latest_is_re_resolved_and_only_a_new_digest_is_pulled_and_pushed(registry: Registry, tmp_path: Path) -> None:
    url = registry.push(module("v1"), "latest")
    resolver = resolver_for(tmp_path)
    pushes: list[int] = []
    resolver.on_change = lambda: pushes.append(1)
    target = slot(url.rsplit(":", 1)[0])  # no tag means :latest, which always pulls
    assert target.always
    run(resolver, target)
    assert resolver.placements().slots[target.key] == Served(module_sha("v1")) and len(pushes) == 1
    run(resolver, refresh=True)  # nothing new: the manifest is asked for, no module is pulled, nothing pushed
    assert resolver.fetcher.pulls == 1 and len(pushes) == 1
    registry.push(module("v2"), "latest")
    run(resolver, refresh=True)
    assert resolver.placements().slots[target.key] == Served(module_sha("v2"))
    assert resolver.fetcher.pulls == 2 and len(pushes) == 2


def test_a_refused_update_keeps_the_last_good_module(registry: Registry, tmp_path: Path) -> None:
    resolver = resolver_for(tmp_path)
    good = slot(registry.push(module("v1"), "v1"))
    run(resolver, good)
    for url, reason in [(registry.push(module("v2"), "unsigned", None), "SignatureRejected"),
                        (registry.push(module("v3"), "other", OTHER), "SignatureRejected"),
                        (registry.push(module("v1"), "v1-again"), "DigestMismatch")]:
        run(resolver, slot(url, sha256="0" * 64) if reason == "DigestMismatch" else slot(url))
        assert resolver.placements().slots[good.key] == Served(module_sha("v1"))
        assert conditions(resolver, good.owner) == {"Resolved": ("True", "Resolved"), "Verified": ("False", reason),
                                                    "Distributed": ("True", "LastGoodVersion")}
    run(resolver, slot(f"{registry.running.host}/plugins/absent:v1"))
    found = conditions(resolver, good.owner)
    assert found["Resolved"] == ("False", "ManifestUnavailable") and found["Distributed"][1] == "LastGoodVersion"


def test_without_a_good_module_the_fail_strategy_is_placed(registry: Registry, tmp_path: Path) -> None:
    resolver = resolver_for(tmp_path)
    closed = slot(registry.push(module("v1"), "unsigned", None), name="closed")
    opened = slot(closed.url, name="opened", fail_open=True)
    run(resolver, closed, opened)
    placements = resolver.placements()
    assert isinstance(placements.slots[closed.key], Withheld) and "is not signed" in str(placements.slots[closed.key])
    assert conditions(resolver, closed.owner)["Distributed"] == ("False", "FailClose")
    assert conditions(resolver, opened.owner)["Distributed"] == ("False", "FailOpen")


def test_the_cache_serves_if_not_present_pulls_after_a_restart_without_the_registry(tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry") as running:
        url = Registry(running).push(module("v1"), "v1")
        run(resolver_for(tmp_path), slot(url))
    restarted = resolver_for(tmp_path)  # same cache folder, registry gone
    run(restarted, slot(url))
    assert restarted.placements().slots[slot(url).key] == Served(module_sha("v1")) and restarted.fetcher.pulls == 0
    distrusting = resolver_for(tmp_path, ModulesConfig(policy=TrustPolicy.with_keys([OTHER.public])))
    run(distrusting, slot(url))  # the cached signer is no longer trusted: the registry must be asked
    assert isinstance(distrusting.placements().slots[slot(url).key], Withheld)


def test_trust_and_distribution_per_namespace(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "trusted.pub").write_bytes(public_pem(TRUSTED))
    (tmp_path / "other.pub").write_bytes(public_pem(OTHER))
    (tmp_path / "mesh.yaml").write_text("""\
trustDomain: cluster.local
modules:
  trustPolicy: trust.yaml
  refreshInterval: 5m
  namespaces:
    team: {trustPolicy: team.yaml}
    legacy: {distribution: direct}
""")
    (tmp_path / "trust.yaml").write_text("rules: [{images: ['*'], keys: [trusted.pub]}]\n")
    (tmp_path / "team.yaml").write_text("rules: [{images: ['*'], keys: [other.pub]}]\n")
    config = ModulesConfig.load(tmp_path / "mesh.yaml")
    assert config.refresh_interval == 300 and config.for_namespace("legacy").distribution == DIRECT
    url = registry.push(module("v1"), "v1")
    resolver = resolver_for(tmp_path, config)
    default, team, legacy = slot(url), slot(url, namespace="team"), slot(url, namespace="legacy")
    run(resolver, default, team, legacy)
    placements = resolver.placements()
    assert placements.slots[default.key] == Served(module_sha("v1"))
    assert isinstance(placements.slots[team.key], Withheld) and "team.yaml" in str(resolver.status_of(team.owner))
    assert legacy.key not in placements.slots  # rendered as istiod does: the sidecar's agent pulls
    assert conditions(resolver, legacy.owner)["Distributed"] == ("True", "Direct")
    assert resolver.fetcher.pulls == 1


def public_pem(signer: Signer) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(signer.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.mark.parametrize(("text", "field"), [
    ("modules: {distribution: everywhere}", "modules.distribution"),
    ("modules: {delivery: carrier-pigeon}", "modules.delivery"),
    ("modules: {refreshInterval: soon}", "modules.refreshInterval"),
    ("modules: {refreshInterval: 0s}", "modules.refreshInterval"),
    ("modules: {trustPolicy: absent.yaml}", "modules.trustPolicy"),
    ("modules: {namespaces: {a: {keys: []}}}", "modules.namespaces.a"),
    ("modules: {extra: 1}", "unknown field"),
])
def test_mesh_config_errors_name_the_field(text: str, field: str, tmp_path: Path) -> None:
    with pytest.raises(MeshConfigError, match=field.replace(".", r"\.")):
        ModulesConfig.parse(text, tmp_path, "mesh.yaml")


# ---- placements in generated configuration ---------------------------------------------------------------
SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""
PULL_SECRET = """
apiVersion: v1
kind: Secret
type: kubernetes.io/dockerconfigjson
metadata: {name: creds}
stringData: {.dockerconfigjson: '{"auths": {"r.example": {"auth": "dTpw"}}}'}
"""


def plugin(name: str, fail: str = "FAIL_CLOSE") -> str:
    return f"""
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: {name}}}
spec:
  url: oci://r.example/plugins/{name}:v1
  imagePullSecret: creds
  failStrategy: {fail}
"""


def ecds(snapshot: Any, name: str) -> dict[str, Any] | None:
    found = snapshot.resources(EXTENSION_CONFIG).get(name)
    return to_dict(found) if found is not None else None


def test_placements_render_inline_remote_fail_strategies_and_pending() -> None:
    mesh = mesh_of(SERVICE, PULL_SECRET, plugin("inline"), plugin("remote"), plugin("closed"),
                   plugin("opened", "FAIL_OPEN"), plugin("pending"))
    slots = {s.name: s for s in module_slots(mesh, {"default/creds": "{}"})}
    assert slots["default.inline"].pull_secret == "{}" and slots["default.inline"].url.endswith("inline:v1")
    data = module("v1")
    placements = ModulePlacements("127.0.0.1", 15014, {
        slots["default.inline"].key: Served(module_sha("v1")), slots["default.remote"].key: Served("ab" * 32),
        slots["default.closed"].key: Withheld("refused"), slots["default.opened"].key: Withheld("refused"),
        slots["default.pending"].key: Withheld("resolving", pending=True)}, inline={module_sha("v1"): data})
    snapshot = generate(mesh, sidecar(), modules=placements)
    inline = ecds(snapshot, "default.inline")
    assert inline is not None
    vm = inline["typed_config"]["config"]["vm_config"]
    assert base64.b64decode(vm["code"]["local"]["inline_bytes"]) == data and "environment_variables" not in vm
    remote = ecds(snapshot, "default.remote")
    assert remote is not None and remote["typed_config"]["config"]["vm_config"]["code"]["remote"] == {
        "http_uri": {"uri": f"http://127.0.0.1:15014/modules/sha256/{'ab' * 32}", "cluster": MODULE_CLUSTER,
                     "timeout": "30s"}, "sha256": "ab" * 32, "retry_policy": {"num_retries": 3}}
    cluster = to_dict(snapshot.resources(CLUSTER)[MODULE_CLUSTER])
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": 15014}
    closed, opened = ecds(snapshot, "default.closed"), ecds(snapshot, "default.opened")
    assert closed is not None and closed["typed_config"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", "rules": {}}
    assert opened is not None and opened["typed_config"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}
    assert ecds(snapshot, "default.pending") is None  # Envoy keeps its listener warming until it arrives


def test_only_inline_modules_need_no_module_cluster() -> None:
    mesh = mesh_of(SERVICE, PULL_SECRET, plugin("inline"))
    [only] = module_slots(mesh, {})
    placements = ModulePlacements("127.0.0.1", 15014, {only.key: Served(module_sha("v1"))},
                                  inline={module_sha("v1"): module("v1")})
    assert MODULE_CLUSTER not in generate(mesh, sidecar(), modules=placements).resources(CLUSTER)


ENVOY_FILTER = """
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: wasm}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager,
                                                                          subFilter: {name: envoy.filters.http.router}}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: acme.auth
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          config:
            vm_config:
              runtime: envoy.wasm.runtime.v8
              code: {remote: {http_uri: {uri: "oci://r.example/acme/auth:v1", cluster: x, timeout: 5s}}}
"""


def http_filter(snapshot: Any, name: str) -> dict[str, Any]:
    listener = snapshot.resources(LISTENER)["0.0.0.0_9080"]
    hcm = unpack(listener.filter_chains[-1].filters[-1].typed_config)
    return next(to_dict(f) for f in hcm.http_filters if f.name == name)


def test_envoy_filter_wasm_with_a_remote_module_is_placed_too() -> None:
    mesh = mesh_of(SERVICE, ENVOY_FILTER)
    [found] = module_slots(mesh, {})
    assert found.owner == ResourceKey("EnvoyFilter", "default", "wasm") and found.name == "acme.auth"
    assert found.url == "oci://r.example/acme/auth:v1"
    served = generate(mesh, sidecar(), modules=ModulePlacements("127.0.0.1", 9, {found.key: Served("cd" * 32)}))
    code = http_filter(served, "acme.auth")["typed_config"]["config"]["vm_config"]["code"]
    assert code["remote"]["sha256"] == "cd" * 32 and code["remote"]["http_uri"]["cluster"] == MODULE_CLUSTER
    withheld = generate(mesh, sidecar(), modules=ModulePlacements("127.0.0.1", 9, {found.key: Withheld("refused")}))
    assert http_filter(withheld, "acme.auth")["typed_config"]["rules"] == {}
    untouched = generate(mesh, sidecar())
    assert "oci://" in str(http_filter(untouched, "acme.auth"))


def configured_plugin(url: str, greeting: str) -> str:
    return f"""
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: greeter}}
spec:
  url: {url}
  pluginConfig: {{greeting: {greeting}}}
  vmConfig: {{env: [{{name: GREETING, value: {greeting}}}]}}
"""


def served_config(resolver: ModuleResolver, mesh_text: str) -> tuple[str, str, dict[str, str]]:
    """(module sha256, pluginConfig JSON, VM env) the proxies get for the plugin after resolution."""
    mesh = mesh_of(SERVICE, mesh_text)
    run(resolver, *module_slots(mesh, {}))
    extension = ecds(generate(mesh, sidecar(), modules=resolver.placements()), "default.greeter")
    assert extension is not None
    config = extension["typed_config"]["config"]
    code = base64.b64decode(config["vm_config"]["code"]["local"]["inline_bytes"])
    return (hashlib.sha256(code).hexdigest(), config["configuration"]["value"],
            config["vm_config"]["environment_variables"]["key_values"])


def test_a_refused_module_keeps_its_new_plugin_config_from_proxies(registry: Registry, tmp_path: Path) -> None:
    resolver = resolver_for(tmp_path)
    good, unsigned = registry.push(module("v1"), "v1"), registry.push(module("v2"), "v2", None)
    assert served_config(resolver, configured_plugin(good, "hello")) == (
        module_sha("v1"), '{"greeting":"hello"}', {"GREETING": "hello"})
    # module and configuration change together and the module is refused: old code keeps its old config
    assert served_config(resolver, configured_plugin(unsigned, "bonjour")) == (
        module_sha("v1"), '{"greeting":"hello"}', {"GREETING": "hello"})
    status = resolver.status_of(ResourceKey("WasmPlugin", "default", "greeter"))
    assert status is not None and "with the pluginConfig it ran with" in status["conditions"][-1]["message"]
    # back on the good module, a new configuration reaches proxies at once
    assert served_config(resolver, configured_plugin(good, "hallo")) == (
        module_sha("v1"), '{"greeting":"hallo"}', {"GREETING": "hallo"})


def test_an_envoy_filter_module_keeps_the_plugin_config_it_was_verified_with() -> None:
    configured = ENVOY_FILTER.replace("            vm_config:", "            configuration: {'@type': type.googleapis.com/"
                                      "google.protobuf.StringValue, value: new}\n            vm_config:")
    mesh = mesh_of(SERVICE, configured)
    [found] = module_slots(mesh, {})
    assert '"value":"new"' in found.config
    old = found.config.replace('"value":"new"', '"value":"old"')
    served = generate(mesh, sidecar(), modules=ModulePlacements("127.0.0.1", 9, {found.key: Served("cd" * 32, "", old)}))
    config = http_filter(served, "acme.auth")["typed_config"]["config"]
    assert config["configuration"]["value"] == "old" and config["vm_config"]["code"]["remote"]["sha256"] == "cd" * 32
    current = generate(mesh, sidecar(), modules=ModulePlacements("127.0.0.1", 9, {found.key: Served("cd" * 32)}))
    assert http_filter(current, "acme.auth")["typed_config"]["config"]["configuration"]["value"] == "new"
