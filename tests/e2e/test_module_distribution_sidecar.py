"""A signed `oci://` module runs in a real Envoy sidecar and a wasmesh sidecar at the same time,
both connected to one control plane; refused modules leave both serving the previous version.
A wasmesh sidecar with a trust policy of its own re-verifies the signature material the control
plane sends along, and refuses (NACKs) a module its policy does not accept while Envoy runs it.

The world (registry, keys, control plane, upstream) is the one of `test_module_distribution`;
here a wasmesh sidecar started from the same `wasmesh bootstrap` joins Envoy, once for each
delivery (`inline`: the verified bytes in ECDS; `remote`: the control plane's module endpoint).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry import Reference, RegistryClient, sign_image
from registry.testing import running_registry
from tests._tools import plugin_path
from tests.controlplane._running import free_port, wait_for
from tests.e2e.test_module_distribution import CONVERGE, Keys, World, get, plugin_runs, with_custom_section
from tests.wasmhost.sidecar._process import SidecarProcess
from wasmhost.sidecar._module_provenance import CARRIER

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]


class BothWorld(World):
    """`World` plus wasmesh sidecars for the same workload."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sidecars: list[SidecarProcess] = []

    def sidecar(self) -> tuple[int, SidecarProcess]:
        port = free_port()
        text = self.cli_bootstrap(f"productpage-wasmesh{len(self.sidecars)}", port)
        proxy = SidecarProcess(text, workdir=self.tmp / f"sidecar{len(self.sidecars)}")
        self.sidecars.append(proxy)
        proxy.start()
        return port, proxy

    def cli_bootstrap(self, name: str, port: int) -> str:
        command = [sys.executable, "-m", "controlplane.cli._controlplane", "bootstrap", "--name", name,
                   "--labels", "app=productpage", "--xds", self.plane.xds_address, "--admin-port", "0",
                   "--port", "9080", "--outbound", f"9080={port}"]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout

    def close(self) -> None:
        for proxy in self.sidecars:
            proxy.stop()
        super().close()


def ecds_status(world: World) -> dict[str, str]:
    """Each proxy's ECDS state as the control plane saw its last ACK or NACK."""
    proxies = world.plane.api("GET", "/api/v1/proxies")[1]["proxies"]
    return {p["name"]: p["types"].get("ECDS", {}).get("status", "") for p in proxies}


def sidecar_module_sha256(sidecar: SidecarProcess) -> str:
    """The sha256 of the module in the ECDS config the wasmesh sidecar accepted (inline or remote)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            code = node["vm_config"].get("code", {}) if "vm_config" in node else {}
            if "remote" in code:
                found.append(str(code["remote"]["sha256"]))
            elif "inline_bytes" in code.get("local", {}):
                found.append(hashlib.sha256(base64.b64decode(code["local"]["inline_bytes"])).hexdigest())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    dump = json.loads(sidecar.admin_get("/config_dump"))
    for config in dump["configs"]:
        if config.get("@type", "").endswith("EcdsConfigDump"):
            walk([entry.get("ecds_filter") for entry in config.get("ecds_filters", [])])  # not the error_state
    return ",".join(sorted(set(found)))


@pytest.fixture(params=["inline", "remote"])
def world(tmp_path: Path, envoy_binary: str, request: pytest.FixtureRequest,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[BothWorld]:
    monkeypatch.setenv("WASMESH_CACHE_DIR", str(tmp_path / "sidecar-cache"))
    with running_registry(tmp_path / "registry") as registry:
        running = BothWorld(tmp_path, registry, envoy_binary, request.param)
        try:
            yield running
        finally:
            running.close()


def test_both_sidecars_run_the_signed_module_and_keep_it_when_others_are_refused(world: BothWorld) -> None:
    v1 = plugin_path("headers").read_bytes()
    v1_sha = hashlib.sha256(v1).hexdigest()
    world.plugin(world.push(v1, "v1", world.trusted))
    envoy_port = world.envoy()
    sidecar_port, sidecar = world.sidecar()
    [envoy] = world.envoys
    for port, who in ((envoy_port, "Envoy"), (sidecar_port, "the wasmesh sidecar")):
        wait_for(functools.partial(plugin_runs, port), CONVERGE, what=f"the signed module runs in {who}")
    assert world.envoy_module_sha256(envoy) == v1_sha
    assert sidecar_module_sha256(sidecar) == v1_sha
    wait_for(lambda: set(ecds_status(world).values()) == {"SYNCED"}, CONVERGE, what="both proxies ACK the module")
    assert len(ecds_status(world)) == 2
    assert len([p for p in world.blob_pulls if p.endswith(v1_sha)]) == 1  # one pull for both proxies

    refusals = [
        (world.push(with_custom_section(v1, "variant", b"unsigned"), "unsigned", None), "", "is not signed"),
        (world.push(with_custom_section(v1, "variant", b"untrusted"), "untrusted", world.untrusted), "",
         "not signed by any trusted key"),
        (world.push(v1, "pinned", world.trusted), "0" * 64, "does not match the expected sha256"),
    ]
    for url, sha256, reason in refusals:
        world.plugin(url, sha256=sha256)
        wait_for(functools.partial(world.refused, reason), CONVERGE, what=f"{url} refused")
        assert world.condition("Distributed")["reason"] == "LastGoodVersion"
        for port in (envoy_port, sidecar_port):
            assert plugin_runs(port)
        assert world.envoy_module_sha256(envoy) == v1_sha and sidecar_module_sha256(sidecar) == v1_sha

    v2 = with_custom_section(v1, "variant", b"v2")
    v2_sha = hashlib.sha256(v2).hexdigest()
    world.plugin(world.push(v2, "v2", world.trusted))
    wait_for(lambda: world.envoy_module_sha256(envoy) == v2_sha and sidecar_module_sha256(sidecar) == v2_sha,
             CONVERGE, what="both proxies hot-reload v2")
    wait_for(lambda: set(ecds_status(world).values()) == {"SYNCED"}, CONVERGE, what="both proxies ACK v2")
    assert plugin_runs(sidecar_port)
    if world.plane.settings.modules.delivery == "inline":
        assert plugin_runs(envoy_port)
    # remote: Envoy 1.40 fetches `code.remote` only while a listener warms, so an update leaves it
    # without a module (see `controlplane._module_config`); the wasmesh sidecar fetches on every update


def module_status(sidecar: SidecarProcess) -> dict[str, Any]:
    return dict(json.loads(sidecar.admin_get("/config_dump")).get("module_status", {}).get("default.headers", {}))


def ecds_nack(world: World, name: str) -> str:
    proxies = world.plane.api("GET", "/api/v1/proxies")[1]["proxies"]
    ecds = next(p["types"]["ECDS"] for p in proxies if p["name"] == name)
    return str(ecds.get("nack", "")) if ecds.get("status") == "NACKED" else ""


def sidecar_trusts(world: World, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the wasmesh sidecars a trust policy of their own: `keys` for the registry's plugins."""
    (tmp_path / "sidecar.pub").write_bytes(keys.public_pem)
    (tmp_path / "sidecar-trust.yaml").write_text(
        f"rules:\n- images: ['{world.registry.host}/plugins/*']\n  keys: [sidecar.pub]\n")
    monkeypatch.setenv("WASMESH_TRUST_POLICY", str(tmp_path / "sidecar-trust.yaml"))


def test_a_sidecar_with_its_own_policy_re_verifies_and_refuses_what_it_does_not_trust(
        world: BothWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar trusts only its own key (one the control plane does not trust): v1 signed by
    both keys runs everywhere; v2 signed by the mesh key alone runs in Envoy, while the wasmesh
    sidecar NACKs it with the reason and keeps serving v1."""
    sidecar_trusts(world, world.untrusted, tmp_path, monkeypatch)
    v1 = plugin_path("headers").read_bytes()
    v1_sha = hashlib.sha256(v1).hexdigest()
    url = world.push(v1, "v1", world.trusted)
    with RegistryClient(world.registry.host) as client:
        sign_image(client, Reference.parse(url), world.untrusted.private)
    world.plugin(url)
    envoy_port = world.envoy()
    sidecar_port, sidecar = world.sidecar()
    for port, who in ((envoy_port, "Envoy"), (sidecar_port, "the wasmesh sidecar")):
        wait_for(functools.partial(plugin_runs, port), CONVERGE, what=f"v1 runs in {who}")
    status = module_status(sidecar)
    assert status["ok"] is True and status["reverified"] is True and status["module_sha256"] == v1_sha
    assert status["signers"] == [f"key {world.untrusted.id}"]
    [ecds] = world.plane.api("GET", "/api/v1/proxies/productpage/config/ecds")[1]["ecds"]
    [carrier] = ecds["typed_config"]["config"]["vm_config"]["environment_variables"]["host_env_keys"]
    assert carrier.startswith(CARRIER)

    v2 = with_custom_section(v1, "variant", b"v2")
    v2_sha = hashlib.sha256(v2).hexdigest()
    world.plugin(world.push(v2, "v2", world.trusted))
    wait_for(lambda: world.envoy_module_sha256(world.envoys[0]) == v2_sha, CONVERGE, what="Envoy runs v2")
    nack = wait_for(lambda: ecds_nack(world, "productpage-wasmesh0"), CONVERGE, what="the sidecar NACKs v2")
    assert "module refused by the sidecar's trust policy" in nack and "not signed by any trusted key" in nack
    assert world.condition("Verified")["status"] == "True"  # the control plane's own verdict stands
    assert plugin_runs(sidecar_port) and sidecar_module_sha256(sidecar) == v1_sha
    if world.plane.settings.modules.delivery == "inline":  # remote: see the end of the test above
        assert plugin_runs(envoy_port)
    status = module_status(sidecar)  # v1 serves on; the refusal of v2 is kept with its reason
    assert status["module_sha256"] == v1_sha and status["last_refused"]["module_sha256"] == v2_sha
    assert "not signed by any trusted key" in status["last_refused"]["message"]


def wasi_runs(port: int) -> bool:
    return "x-wasi-env-count" in get(port)[1]


def test_the_provenance_reaches_no_modules_environment_in_either_proxy(world: BothWorld) -> None:
    """The carrier is a `host_env_keys` entry no host defines: Envoy passes nothing into the VM."""
    world.plugin(world.push(plugin_path("wasi").read_bytes(), "wasi", world.trusted))
    envoy_port = world.envoy()
    sidecar_port, _ = world.sidecar()
    [ecds] = world.plane.api("GET", "/api/v1/proxies/productpage/config/ecds")[1]["ecds"]
    [carrier] = ecds["typed_config"]["config"]["vm_config"]["environment_variables"]["host_env_keys"]
    assert carrier.startswith(CARRIER)  # sent to both proxies ...
    for port in (envoy_port, sidecar_port):  # ... and seen by neither module
        wait_for(functools.partial(wasi_runs, port), CONVERGE, what="the wasi plugin runs")
        headers = get(port)[1]
        assert (headers["x-wasi-env"], headers["x-wasi-env-count"]) == ("<unset>", "0")


@pytest.mark.parametrize("world", ["inline"], indirect=True)
def test_a_sidecar_with_its_own_policy_refuses_a_module_without_provenance(
        world: BothWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, httpserver: Any) -> None:
    """An `http://` module reaches proxies verified by its sha256 alone, with no signature material:
    to the sidecar it looks exactly like an `oci://` module whose provenance was stripped on the way.
    With a policy of its own the sidecar refuses it (NACK, reason named) and serves v1 on; Envoy runs it."""
    sidecar_trusts(world, world.trusted, tmp_path, monkeypatch)
    v1 = plugin_path("headers").read_bytes()
    v1_sha = hashlib.sha256(v1).hexdigest()
    world.plugin(world.push(v1, "v1", world.trusted))
    envoy_port = world.envoy()
    sidecar_port, sidecar = world.sidecar()
    for port, who in ((envoy_port, "Envoy"), (sidecar_port, "the wasmesh sidecar")):
        wait_for(functools.partial(plugin_runs, port), CONVERGE, what=f"v1 runs in {who}")
    assert module_status(sidecar)["reverified"] is True

    v2 = with_custom_section(v1, "variant", b"unsigned-over-http")
    v2_sha = hashlib.sha256(v2).hexdigest()
    httpserver.expect_request("/headers-v2.wasm").respond_with_data(v2, content_type="application/wasm")
    world.plugin(httpserver.url_for("/headers-v2.wasm"), sha256=v2_sha)
    wait_for(lambda: world.envoy_module_sha256(world.envoys[0]) == v2_sha, CONVERGE, what="Envoy runs v2")
    nack = wait_for(lambda: ecds_nack(world, "productpage-wasmesh0"), CONVERGE, what="the sidecar NACKs v2")
    assert "carries no provenance" in nack and "unsignedModules" in nack and "'default.headers'" in nack
    assert plugin_runs(sidecar_port) and sidecar_module_sha256(sidecar) == v1_sha
    assert plugin_runs(envoy_port)
    status = module_status(sidecar)
    assert status["module_sha256"] == v1_sha and status["last_refused"]["module_sha256"] == v2_sha
    assert "carries no provenance" in status["last_refused"]["message"]
