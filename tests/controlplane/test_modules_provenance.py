"""Provenance: the control plane sends each verified `oci://` module with its signature material,
and a wasmesh sidecar with a trust policy of its own re-verifies it before the module runs.

The control plane side runs against a live registry (`registry.testing`); the sidecar side is the
real ECDS translation (`plugin_spec_from_proto`) fed what the control plane rendered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import extension_pb2

from controlplane._module_cache import ModuleCache
from controlplane._module_config import REMOTE, ModulesConfig
from controlplane._module_placement import ModuleSlot, Served
from controlplane._modules import ModuleResolver
from controlplane._protos import WASM_HTTP_TYPE, from_dict, unpack
from controlplane._resources import ResourceKey
from registry import (
    Digest,
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
from tests.registry._tools import build_wat
from wasmhost.sidecar import ConfigError
from wasmhost.sidecar import _module_trust as module_trust
from wasmhost.sidecar import _wasm_module as wasm_modules
from wasmhost.sidecar._module_provenance import CARRIER, ProvenanceError, decode, reverify


def module(version: str) -> bytes:
    return build_wat(f'(module (memory 1) (data (i32.const 0) "{version}") (func (export "proxy_abi_version_0_2_1")))')


class Keys:
    def __init__(self) -> None:
        private_pem, self.public_pem = generate_keypair()
        self.private = load_private_key(private_pem)
        self.public = load_public_key(self.public_pem)
        self.id = key_id(self.public)


TRUSTED, OTHER = Keys(), Keys()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    with running_registry(tmp_path / "registry") as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_sidecar_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WASMESH_TRUST_POLICY", raising=False)
    monkeypatch.setattr(module_trust, "_LOADED", None)
    monkeypatch.setattr(wasm_modules, "_AGENT", None)
    monkeypatch.setenv("WASMESH_CACHE_DIR", str(tmp_path / "sidecar-cache"))
    monkeypatch.setattr(wasm_modules, "MODULE_STATUS", {})


def push(registry: RunningRegistry, data: bytes, tag: str, signer: Keys | None = TRUSTED,
         variant: str = "oci") -> str:
    ref = Reference.parse(f"{registry.host}/plugins/m:{tag}")
    with RegistryClient(registry.host) as client:
        push_module(client, ref, data, variant=variant)
        if signer is not None:
            sign_image(client, ref, signer.private)
    return f"oci://{ref.registry}/{ref.repository}:{tag}"


def served(tmp_path: Path, url: str, delivery: str = "inline") -> tuple[ModuleResolver, ModuleSlot, Served]:
    config = ModulesConfig(policy=TrustPolicy.with_keys([TRUSTED.public]), delivery=delivery)
    resolver = ModuleResolver(config, ModuleCache(tmp_path / "cache"), backoff=0.01)
    slot = ModuleSlot("WasmPlugin default/p", ResourceKey("WasmPlugin", "default", "p"), "default.p", url)

    async def body() -> None:
        resolver.track([slot])
        await resolver.settled()

    asyncio.run(body())
    placement = resolver.placements().slots[slot.key]
    assert isinstance(placement, Served), placement
    return resolver, slot, placement


def ecds_config(resolver: ModuleResolver, slot: ModuleSlot, host_env_keys: list[str] | None = None) -> Any:
    """The PluginConfig proxies get for `slot` (through the real rendering and protobuf decoding)."""
    vm_config: dict[str, Any] = {"runtime": "envoy.wasm.runtime.v8", "code": {"remote": {"http_uri": {"uri": slot.url}}}}
    if host_env_keys:
        vm_config["environment_variables"] = {"host_env_keys": host_env_keys}
    rendered = {"name": slot.name, "typed_config": {"@type": WASM_HTTP_TYPE, "config": {
        "name": slot.name, "vm_config": vm_config}}}
    extension = resolver.placements().extension(slot.key, rendered, False, False)
    assert extension is not None
    message = from_dict(extension_pb2.TypedExtensionConfig, extension)
    return unpack(message.typed_config).config


def inline_bytes(config: Any, data: bytes) -> Any:
    config.vm_config.code.local.inline_bytes = data
    return config


def sidecar_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: Keys, images: str = "*",
                   extra: str = "") -> None:
    folder = tmp_path / f"sidecar-{keys.id[7:19]}"
    folder.mkdir(exist_ok=True)
    (folder / "sidecar.pub").write_bytes(keys.public_pem)
    (folder / "trust.yaml").write_text(f"rules:\n- images: ['{images}']\n  keys: [sidecar.pub]\n{extra}")
    monkeypatch.setenv("WASMESH_TRUST_POLICY", str(folder / "trust.yaml"))


# ---- the control plane sends it ------------------------------------------------------------------
@pytest.mark.parametrize("delivery", ["inline", REMOTE])
def test_a_served_module_carries_its_manifest_and_signatures(registry: RunningRegistry, tmp_path: Path,
                                                             delivery: str) -> None:
    v1 = module("v1")
    resolver, slot, placement = served(tmp_path, push(registry, v1, "v1"), delivery)
    config = ecds_config(resolver, slot, ["HOME", f"{CARRIER}forged-by-a-user"])
    entries = list(config.vm_config.environment_variables.host_env_keys)
    assert entries[0] == "HOME" and len(entries) == 2 and entries[1] == placement.provenance  # user's one dropped
    assert not config.vm_config.environment_variables.key_values  # nothing reaches a module's WASI environ
    provenance = decode(placement.provenance)
    status = resolver.status_of(slot.owner)
    assert status is not None
    assert str(Digest.of(provenance.manifest)) == status["module"]["digest"]
    assert provenance.reference == slot.url and len(provenance.signatures) == 1
    assert reverify(provenance, v1, TrustPolicy.with_keys([TRUSTED.public])) == (
        reverify(provenance, v1, TrustPolicy.with_keys([OTHER.public, TRUSTED.public])))


def test_the_provenance_survives_a_control_plane_restart(registry: RunningRegistry, tmp_path: Path) -> None:
    url = push(registry, module("v1"), "v1")
    first = served(tmp_path, url)[2]
    restarted, _, again = served(tmp_path, url)
    assert restarted.fetcher.pulls == 0 and again.provenance == first.provenance != ""


def test_a_tar_wrapped_module_is_re_verified_through_its_layer(registry: RunningRegistry, tmp_path: Path) -> None:
    v1 = module("v1")
    provenance = decode(served(tmp_path, push(registry, v1, "compat", variant="compat"))[2].provenance)
    assert provenance.layer
    [signer] = reverify(provenance, v1, TrustPolicy.with_keys([TRUSTED.public]))
    assert signer.identity == TRUSTED.id
    with pytest.raises(ProvenanceError, match="not the module received"):
        reverify(provenance, module("v2"), TrustPolicy.with_keys([TRUSTED.public]))


# ---- the sidecar re-verifies it -------------------------------------------------------------------
def test_the_sidecar_accepts_a_module_its_own_policy_trusts(registry: RunningRegistry, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = module("v1")
    resolver, slot, _ = served(tmp_path, push(registry, v1, "v1"))
    sidecar_policy(tmp_path, monkeypatch, TRUSTED, f"{registry.host}/plugins/*")
    spec, wasm = wasm_modules.plugin_spec_from_proto(ecds_config(resolver, slot))
    assert wasm == v1 and spec.env == ()  # the carrier is no host variable the module sees
    status = wasm_modules.MODULE_STATUS[slot.name]
    assert status["ok"] is True and status["reverified"] is True and status["signers"] == [f"key {TRUSTED.id}"]
    assert status["module_sha256"] == hashlib.sha256(v1).hexdigest()


def test_without_a_policy_of_its_own_the_sidecar_takes_the_control_planes_verdict(
        registry: RunningRegistry, tmp_path: Path) -> None:
    v1 = module("v1")
    resolver, slot, _ = served(tmp_path, push(registry, v1, "v1"))
    _, wasm = wasm_modules.plugin_spec_from_proto(ecds_config(resolver, slot))
    status = wasm_modules.MODULE_STATUS[slot.name]
    assert wasm == v1 and status["ok"] is True and status["reverified"] is False
    assert "no WASMESH_TRUST_POLICY" in str(status["message"])


def test_a_signer_the_sidecar_does_not_trust_is_refused(registry: RunningRegistry, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    resolver, slot, _ = served(tmp_path, push(registry, module("v1"), "v1"))
    sidecar_policy(tmp_path, monkeypatch, OTHER)
    with pytest.raises(ConfigError, match="not signed by any trusted key") as refused:
        wasm_modules.plugin_spec_from_proto(ecds_config(resolver, slot))
    assert "host_env_keys" in str(refused.value)
    status = wasm_modules.MODULE_STATUS[slot.name]
    assert status["ok"] is False and "not signed by any trusted key" in str(status["message"])
    note = status["last_refused"]
    assert isinstance(note, dict) and "not signed by any trusted key" in note["message"]

    sidecar_policy(tmp_path, monkeypatch, TRUSTED)  # once trusted, the same module is accepted: no refusal left
    wasm_modules.plugin_spec_from_proto(ecds_config(resolver, slot))
    assert wasm_modules.MODULE_STATUS[slot.name]["ok"] is True
    assert "last_refused" not in wasm_modules.MODULE_STATUS[slot.name]


def test_an_image_outside_the_sidecars_rules_is_refused(registry: RunningRegistry, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    resolver, slot, _ = served(tmp_path, push(registry, module("v1"), "v1"))
    sidecar_policy(tmp_path, monkeypatch, TRUSTED, "elsewhere.example/*")
    with pytest.raises(ConfigError, match="has no rule for"):
        wasm_modules.plugin_spec_from_proto(ecds_config(resolver, slot))


def test_bytes_other_than_the_signed_layer_are_refused(registry: RunningRegistry, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    resolver, slot, _ = served(tmp_path, push(registry, module("v1"), "v1"))
    sidecar_policy(tmp_path, monkeypatch, TRUSTED)
    other = module("v2")
    with pytest.raises(ConfigError, match=f"module received has sha256:{hashlib.sha256(other).hexdigest()}"):
        wasm_modules.plugin_spec_from_proto(inline_bytes(ecds_config(resolver, slot), other))


def test_a_payload_for_another_manifest_is_refused(registry: RunningRegistry, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = module("v1")
    provenance = decode(served(tmp_path, push(registry, v1, "v1"))[2].provenance)
    v2_provenance = decode(served(tmp_path / "b", push(registry, module("v2"), "v2"))[2].provenance)
    mixed = type(provenance)(provenance.reference, provenance.manifest, provenance.media_type,
                             v2_provenance.signatures)
    with pytest.raises(ProvenanceError, match="signature is for sha256:"):
        reverify(mixed, v1, TrustPolicy.with_keys([TRUSTED.public]))


def test_a_malformed_carrier_is_refused_with_the_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from envoy.extensions.wasm.v3 import wasm_pb2

    config = wasm_pb2.PluginConfig(name="p")
    config.vm_config.runtime = "envoy.wasm.runtime.v8"
    config.vm_config.code.local.inline_bytes = module("v1")
    config.vm_config.environment_variables.host_env_keys.append(CARRIER + base64.urlsafe_b64encode(b"[1]").decode())
    with pytest.raises(ConfigError, match="vm_config.environment_variables.host_env_keys.*expected a JSON object"):
        wasm_modules.plugin_spec_from_proto(config)
    assert wasm_modules.PROVENANCE_CARRIER == CARRIER


# ---- stripped provenance ----------------------------------------------------------------------------
def stripped(config: Any) -> Any:
    """The PluginConfig with its provenance carrier removed, as a tampering hop would send it."""
    keys = [k for k in config.vm_config.environment_variables.host_env_keys if not k.startswith(CARRIER)]
    del config.vm_config.environment_variables.host_env_keys[:]
    config.vm_config.environment_variables.host_env_keys.extend(keys)
    return config


def test_a_sidecar_with_a_policy_refuses_a_module_whose_provenance_was_stripped(
        registry: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = module("v1"), module("v2")
    resolver, slot, _ = served(tmp_path, push(registry, v1, "v1"))
    resolver_v2, slot_v2, _ = served(tmp_path / "v2", push(registry, v2, "v2"))
    good = ecds_config(resolver, slot)
    assert wasm_modules.plugin_spec_from_proto(stripped(ecds_config(resolver_v2, slot_v2)))[1] == v2  # no policy
    sidecar_policy(tmp_path, monkeypatch, TRUSTED)
    assert wasm_modules.plugin_spec_from_proto(good)[1] == v1
    with pytest.raises(ConfigError, match=r"vm_config\.code.*'default\.p' .*carries no provenance.*unsignedModules"):
        wasm_modules.plugin_spec_from_proto(stripped(ecds_config(resolver_v2, slot_v2)))
    status = wasm_modules.MODULE_STATUS[slot.name]
    assert status["ok"] is False and "carries no provenance" in str(status["message"])
    # the sidecar NACKs the update and rebuilds the previous version, which keeps the refusal on record
    assert wasm_modules.plugin_spec_from_proto(good)[1] == v1
    status = wasm_modules.MODULE_STATUS[slot.name]
    assert status["ok"] is True and status["module_sha256"] == hashlib.sha256(v1).hexdigest()
    note = status["last_refused"]
    assert isinstance(note, dict) and note["module_sha256"] == hashlib.sha256(v2).hexdigest()
    assert "carries no provenance" in note["message"]


def test_a_stripped_module_fetched_from_the_module_endpoint_is_refused_too(
        registry: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, httpserver: Any) -> None:
    v1 = module("v1")
    resolver, slot, placement = served(tmp_path, push(registry, v1, "v1"), REMOTE)
    httpserver.expect_request(f"/modules/sha256/{placement.sha256}").respond_with_data(v1)
    config = stripped(ecds_config(resolver, slot))
    config.vm_config.code.remote.http_uri.uri = httpserver.url_for(f"/modules/sha256/{placement.sha256}")
    sidecar_policy(tmp_path, monkeypatch, TRUSTED)
    with pytest.raises(ConfigError, match="carries no provenance"):
        wasm_modules.plugin_spec_from_proto(config)


def test_unsigned_modules_run_only_when_the_policy_names_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from envoy.extensions.wasm.v3 import wasm_pb2

    config = wasm_pb2.PluginConfig(name="tools.echo")
    config.vm_config.runtime = "envoy.wasm.runtime.v8"
    config.vm_config.code.local.inline_bytes = module("v1")
    sidecar_policy(tmp_path, monkeypatch, TRUSTED, extra="unsignedModules: ['tools.*']\n")
    assert wasm_modules.plugin_spec_from_proto(config)[1] == module("v1")
    assert "allowed by unsignedModules" in str(wasm_modules.MODULE_STATUS["tools.echo"]["message"])
    config.name = "default.echo"
    with pytest.raises(ConfigError, match="carries no provenance"):
        wasm_modules.plugin_spec_from_proto(config)
    sidecar_policy(tmp_path, monkeypatch, TRUSTED, extra="unsignedModules: tools.*\n")
    with pytest.raises(ConfigError, match="WASMESH_TRUST_POLICY.*unsignedModules: expected a list"):
        wasm_modules.plugin_spec_from_proto(config)
