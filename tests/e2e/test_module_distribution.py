"""The control plane distributes verified modules: a signed `oci://` module runs in real Envoy
(and in a wasmesh sidecar) although neither proxy can pull from a registry or check a signature.

A real registry (`registry.testing`) holds the `headers` plugin built from C, signed with a key
the mesh's trust policy names. The control plane pulls it once, verifies it, and serves it from
its module endpoint; Envoy starts from `wasmesh bootstrap` and fetches `code.remote` natively.
Then an unsigned module, one signed by an untrusted key and one with a wrong `sha256` are each
refused with the reason in the WasmPlugin's status while Envoy keeps running the last good one.

The wasmesh sidecar cannot yet be driven over xDS (its bootstrap is static), so it runs the very
Wasm filter the control plane served to Envoy over ECDS, placed in a static bootstrap: its module
agent fetches the same URL from the control plane and checks the same sha256.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from controlplane._module_config import ModulesConfig
from controlplane._module_placement import MODULE_CLUSTER
from controlplane._module_tls import SERVER_NAME
from controlplane._security import SecuritySettings
from registry import (
    Reference,
    RegistryClient,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    push_module,
    sign_image,
)
from registry.testing import RunningRegistry, running_registry
from tests._tools import plugin_path
from tests.controlplane._running import RunningControlPlane, free_port, wait_for
from tests.e2e._envoy import EnvoyProcess
from tests.e2e._upstream import ScriptedUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.envoy]
CONVERGE = 15.0


def with_custom_section(module: bytes, name: str, payload: bytes) -> bytes:
    """The same module with one more custom section: other bytes, other digest, same behaviour."""
    def leb128(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    body = leb128(len(name)) + name.encode() + payload
    return module + b"\x00" + leb128(len(body)) + body


class Keys:
    def __init__(self) -> None:
        private_pem, public_pem = generate_keypair()
        self.private = load_private_key(private_pem)
        self.public_pem = public_pem
        self.id = key_id(load_public_key(public_pem))


class World:
    """Registry, trusted and untrusted keys, a control plane that distributes modules, upstreams, proxies."""

    def __init__(self, tmp: Path, registry: RunningRegistry, envoy_binary: str, delivery: str,
                 secure: bool = False) -> None:
        self.tmp = tmp
        self.registry = registry
        self.envoy_binary = envoy_binary
        self.trusted, self.untrusted = Keys(), Keys()
        (tmp / "trusted.pub").write_bytes(self.trusted.public_pem)
        (tmp / "trust.yaml").write_text(f"rules:\n- images: ['{registry.host}/plugins/*']\n  keys: [trusted.pub]\n")
        self.folder = tmp / "config"
        self.folder.mkdir()
        self.blob_pulls: list[str] = []
        original = registry.app.handle

        def counting(request: Any) -> Any:
            if request.method == "GET" and "/blobs/" in request.path:
                self.blob_pulls.append(request.path)
            return original(request)

        registry.app.handle = counting  # type: ignore[method-assign,assignment]
        self.plane = RunningControlPlane(self.folder)
        self.plane.settings.modules = ModulesConfig(delivery=delivery).with_trust_policy(tmp / "trust.yaml")
        self.plane.settings.module_cache_dir = tmp / "module-cache"
        if secure:  # a mesh CA: the module endpoint speaks HTTPS with a certificate from it
            self.plane.settings.security = SecuritySettings(tmp / "ca", secure_port=0)
        self.plane.start()
        plane = self.plane.plane
        if secure and plane is not None and plane.security is not None:
            self.plane.call(plane.modules.serve_tls(plane.security))
        self.upstream = ScriptedUpstream(200, (("x-version", "v1"),), "v1").start()
        self.envoys: list[EnvoyProcess] = []
        self.write("reviews.yaml", f"""\
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {{name: reviews}}
            spec:
              hosts: [reviews.default.svc.cluster.local]
              ports: [{{number: 9080, name: http, protocol: HTTP}}]
              resolution: STATIC
              endpoints: [{{address: 127.0.0.1, ports: {{http: {self.upstream.port}}}}}]
            """)

    def push(self, module: bytes, tag: str, signer: Keys | None) -> str:
        """Push `module` to plugins/headers:`tag`, signed by `signer`; returns the oci:// URL."""
        ref = Reference.parse(f"{self.registry.host}/plugins/headers:{tag}")
        with RegistryClient(self.registry.host) as client:
            push_module(client, ref, module)
            if signer is not None:
                sign_image(client, ref, signer.private)
        return f"oci://{ref.registry}/{ref.repository}:{tag}"

    def write(self, name: str, text: str) -> None:
        path = self.folder / name
        path.with_suffix(".tmp").write_text(textwrap.dedent(text))
        path.with_suffix(".tmp").replace(path)

    def plugin(self, url: str, *, sha256: str = "", fail: str = "FAIL_CLOSE") -> None:
        pin = f"\n  sha256: '{sha256}'" if sha256 else ""
        self.write("plugin.yaml", f"""\
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: headers}}
spec:
  selector: {{matchLabels: {{app: productpage}}}}
  url: {url}{pin}
  failStrategy: {fail}
  match: [{{mode: CLIENT, ports: [{{number: 9080}}]}}]
""")

    def envoy(self) -> int:
        port = free_port()
        command = [sys.executable, "-m", "controlplane.cli._controlplane", "bootstrap", "--name", "productpage",
                   "--labels", "app=productpage", "--xds", self.plane.xds_address, "--admin-port", "0",
                   "--port", "9080", "--outbound", f"9080={port}"]
        text = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
        proxy = EnvoyProcess(text, workdir=self.tmp / f"envoy{len(self.envoys)}", binary=self.envoy_binary,
                             component_log_level="wasm:debug,config:debug")
        self.envoys.append(proxy)
        proxy.start()
        return port

    def cli(self, *args: str) -> str:
        command = [sys.executable, "-m", "controlplane.cli._controlplane", *args, "--control-plane",
                   self.plane.api_address]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout

    def status(self) -> dict[str, Any]:
        items = self.plane.api("GET", "/api/v1/resources?kind=WasmPlugin")[1]["items"]
        return dict(items[0].get("status") or {}) if items else {}

    def condition(self, kind: str) -> dict[str, str]:
        return next((c for c in self.status().get("conditions", []) if c["type"] == kind), {})

    def refused(self, reason: str) -> dict[str, str] | None:
        """The Verified condition once it is False for `reason`."""
        verified = self.condition("Verified")
        return verified if verified.get("status") == "False" and reason in verified["message"] else None

    def envoy_module_sha256(self, proxy: EnvoyProcess) -> str:
        """The sha256 of the module in the ECDS config Envoy holds (from its config_dump), inline or remote."""
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

        dump = json.loads(proxy.admin_get("/config_dump"))
        walk([c for c in dump["configs"] if c.get("@type", "").endswith("EcdsConfigDump")])
        return found[0] if len(found) == 1 else ",".join(found)

    def envoy_running_signed_v1(self, what: str) -> tuple[bytes, str, int, EnvoyProcess]:
        """Push and sign v1 of the headers plugin, start Envoy and wait until v1 runs in it."""
        v1 = plugin_path("headers").read_bytes()
        self.plugin(self.push(v1, "v1", self.trusted))
        port = self.envoy()
        wait_for(lambda: plugin_runs(port), CONVERGE, what=what)
        [envoy] = self.envoys
        v1_sha = hashlib.sha256(v1).hexdigest()
        assert self.envoy_module_sha256(envoy) == v1_sha
        return v1, v1_sha, port, envoy

    def untrusted_ca_pem(self) -> str:
        """A CA certificate the mesh has nothing to do with."""
        from controlplane.ca._files import generate_root

        return generate_root("elsewhere.example").root.public_bytes(serialization.Encoding.PEM).decode()

    def close(self) -> None:
        for proxy in self.envoys:
            proxy.stop()
        self.plane.stop()
        self.upstream.stop()


@pytest.fixture(params=["inline"])
def world(tmp_path: Path, envoy_binary: str, request: pytest.FixtureRequest) -> Iterator[World]:
    """A world with `inline` or `remote` delivery; `remote-https` adds a mesh CA."""
    with running_registry(tmp_path / "registry") as registry:
        delivery, _, secure = str(request.param).partition("-")
        running = World(tmp_path, registry, envoy_binary, delivery, secure=secure == "https")
        try:
            yield running
        finally:
            running.close()


def get(port: int) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/probe", headers={"host": "reviews:9080"})
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def plugin_runs(port: int) -> bool:
    status, headers = get(port)
    return status == 200 and headers.get("x-echo-path") == "/probe"


def test_signed_module_reaches_envoy_and_refused_ones_never_do(world: World) -> None:
    v1, v1_sha, port, envoy = world.envoy_running_signed_v1("the signed module runs in Envoy")
    status = world.status()
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("Resolved", "True"), ("Verified", "True"), ("Distributed", "True")]
    assert world.condition("Verified")["reason"] == "Signed" and world.trusted.id in world.condition("Verified")["message"]
    assert status["module"]["sha256"] == v1_sha and status["module"]["signers"] == [f"key {world.trusted.id}"]
    assert status["module"]["digest"].startswith("sha256:")
    layer_pulls = [p for p in world.blob_pulls if p.endswith(v1_sha)]
    assert len(layer_pulls) == 1, world.blob_pulls  # one pull by the control plane, none by the proxy
    [ecds] = world.plane.api("GET", "/api/v1/proxies/productpage/config/ecds")[1]["ecds"]
    vm_config = ecds["typed_config"]["config"]["vm_config"]
    assert base64.b64decode(vm_config["code"]["local"]["inline_bytes"]) == v1
    assert "ISTIO_META_WASM_IMAGE_PULL_SECRET" not in str(vm_config)  # no proxy needs registry credentials

    refusals = [
        (world.push(with_custom_section(v1, "variant", b"unsigned"), "unsigned", None), "", "is not signed"),
        (world.push(with_custom_section(v1, "variant", b"untrusted"), "untrusted", world.untrusted), "",
         "not signed by any trusted key"),
        (world.push(v1, "pinned", world.trusted), "0" * 64, "does not match the expected sha256"),
    ]
    for url, sha256, reason in refusals:
        world.plugin(url, sha256=sha256)
        verified = wait_for(functools.partial(world.refused, reason), CONVERGE, what=f"{url} refused")
        assert verified is not None
        assert verified["reason"] in ("SignatureRejected", "DigestMismatch")
        distributed = world.condition("Distributed")
        assert distributed["reason"] == "LastGoodVersion" and v1_sha in distributed["message"]
        assert plugin_runs(port) and world.envoy_module_sha256(envoy) == v1_sha

    table = world.cli("get", "wasmplugin")
    assert "LastGoodVersion" in table and "Verified DigestMismatch" in table and f"sha256:{v1_sha[:12]}" in table

    v2 = with_custom_section(v1, "variant", b"v2")
    v2_sha = hashlib.sha256(v2).hexdigest()
    world.plugin(world.push(v2, "v2", world.trusted))
    wait_for(lambda: world.envoy_module_sha256(envoy) == v2_sha, CONVERGE, what="Envoy hot-reloads v2")
    assert plugin_runs(port) and world.status()["module"]["sha256"] == v2_sha
    proxies = world.plane.api("GET", "/api/v1/proxies")[1]["proxies"]
    [module] = proxies[0]["modules"]
    assert module["sha256"] == v2_sha and module["state"] == "ControlPlane"
    wait_for(lambda: world.plane.api("GET", "/api/v1/proxies")[1]["proxies"][0]["types"]["ECDS"]["status"] == "SYNCED",
             CONVERGE, what="Envoy ACKs the new module")
    [manifest] = yaml.safe_load_all(world.cli("get", "wasmplugin", "headers", "-o", "yaml"))
    assert manifest["status"]["module"]["sha256"] == v2_sha
    assert {c["type"]: c["status"] for c in manifest["status"]["conditions"]} == {
        "Resolved": "True", "Verified": "True", "Distributed": "True"}
    assert f"default.headers: sha256:{v2_sha[:12]} ControlPlane" in world.cli("proxy-status")


@pytest.mark.parametrize(("fail", "expected"), [("FAIL_CLOSE", 403), ("FAIL_OPEN", 200)])
def test_without_a_good_module_the_fail_strategy_applies(world: World, fail: str, expected: int) -> None:
    world.plugin(world.push(plugin_path("headers").read_bytes(), "unsigned", None), fail=fail)
    port = world.envoy()
    wait_for(lambda: get(port)[0] == expected, CONVERGE, what=f"{fail} in Envoy")
    assert "x-echo-path" not in get(port)[1]
    assert world.condition("Distributed")["reason"] == ("FailClose" if fail == "FAIL_CLOSE" else "FailOpen")
    assert "is not signed" in world.condition("Verified")["message"]


@pytest.mark.parametrize("world", ["remote"], indirect=True)
def test_remote_delivery_envoy_and_wasmesh_sidecar_fetch_from_the_control_plane(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy fetches `code.remote` natively (first load: see `_module_config` on updates); the
    sidecar's module agent fetches the same URL and checks the same sha256."""
    from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
    from tests.wasmhost.sidecar._process import SidecarProcess, http_request

    v1 = plugin_path("headers").read_bytes()
    world.plugin(world.push(v1, "v1", world.trusted))
    port = world.envoy()
    wait_for(lambda: plugin_runs(port), CONVERGE, what="the module runs in Envoy")
    [ecds] = world.plane.api("GET", "/api/v1/proxies/productpage/config/ecds")[1]["ecds"]
    remote = ecds["typed_config"]["config"]["vm_config"]["code"]["remote"]
    v1_sha = hashlib.sha256(v1).hexdigest()
    assert remote["http_uri"]["cluster"] == MODULE_CLUSTER and remote["http_uri"]["uri"].endswith(f"/sha256/{v1_sha}")
    assert remote["sha256"] == v1_sha and world.envoy_module_sha256(world.envoys[0]) == v1_sha
    clusters = world.plane.api("GET", "/api/v1/proxies/productpage/config/clusters")[1]["clusters"]
    assert MODULE_CLUSTER in [c["name"] for c in clusters]
    served_filter = {"name": ecds["name"], "typed_config": ecds["typed_config"]}
    monkeypatch.setenv("WASMESH_CACHE_DIR", str(tmp_path / "sidecar-cache"))
    config = bootstrap(clusters=[cluster("backend", world.upstream.port)], http_filters=[served_filter, ROUTER_FILTER])
    with SidecarProcess(config, workdir=tmp_path / "sidecar") as sidecar:
        listener = next(iter(sidecar.listener_ports().values()))
        status, headers, _ = http_request(listener, "GET", "/probe", [("Host", "reviews")])
        assert status == 200 and dict(headers)["x-echo-path"] == "/probe"
    assert len([p for p in world.blob_pulls if p.endswith(v1_sha)]) == 1


@pytest.mark.parametrize("world", ["remote-https"], indirect=True)
def test_with_a_mesh_ca_envoy_fetches_the_module_over_https_through_the_module_cluster(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy fetches `code.remote` from `https://` natively, through the module cluster's TLS socket:
    it validates the endpoint's mesh-CA certificate (inline trust bundle, SNI and DNS SAN). The
    wasmesh sidecar's module agent fetches through the same cluster and validates the same way."""
    _, v1_sha, _, envoy = world.envoy_running_signed_v1("the module fetched over HTTPS runs in Envoy")
    [ecds] = world.plane.api("GET", "/api/v1/proxies/productpage/config/ecds")[1]["ecds"]
    uri = ecds["typed_config"]["config"]["vm_config"]["code"]["remote"]["http_uri"]["uri"]
    assert uri.startswith("https://127.0.0.1:") and uri.endswith(v1_sha)
    assert world.plane.plane is not None and f":{world.plane.plane.modules.port}/" in uri
    clusters = world.plane.api("GET", "/api/v1/proxies/productpage/config/clusters")[1]["clusters"]
    [module_cluster] = [c for c in clusters if c["name"] == MODULE_CLUSTER]
    tls = module_cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == SERVER_NAME and "BEGIN CERTIFICATE" in str(tls)
    stats = envoy.admin_get("/stats?filter=^cluster.wasmesh-modules.ssl")
    handshakes = {line.split(": ")[0]: int(line.split(": ")[1]) for line in stats.splitlines() if ": " in line}
    assert handshakes.get(f"cluster.{MODULE_CLUSTER}.ssl.handshake", 0) >= 1, stats
    assert handshakes.get(f"cluster.{MODULE_CLUSTER}.ssl.fail_verify_san", 0) == 0

    # the wasmesh sidecar, given the same filter and the same module cluster, fetches through
    # that cluster's TLS socket as well; without the cluster's trust it cannot
    from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
    from tests.wasmhost.sidecar._process import SidecarProcess, http_request

    served_filter = {"name": ecds["name"], "typed_config": ecds["typed_config"]}
    for trusted in (True, False):
        module = json.loads(json.dumps(module_cluster))
        if not trusted:
            module["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]["trusted_ca"] = {
                "inline_string": world.untrusted_ca_pem()}
        config = bootstrap(clusters=[cluster("backend", world.upstream.port), module],
                           http_filters=[served_filter, ROUTER_FILTER])
        monkeypatch.setenv("WASMESH_CACHE_DIR", str(world.tmp / f"sidecar-cache-{trusted}"))  # nothing cached yet
        with SidecarProcess(config, workdir=world.tmp / f"sidecar-{trusted}") as sidecar:
            listener = next(iter(sidecar.listener_ports().values()))
            status, headers, _ = http_request(listener, "GET", "/probe", [("Host", "reviews")])
            if trusted:
                assert status == 200 and dict(headers)["x-echo-path"] == "/probe"
                status_doc = json.loads(sidecar.admin_get("/config_dump"))["module_status"]["default.headers"]
                assert status_doc["ok"] is True and status_doc["module_sha256"] == v1_sha
            else:  # the fetch fails the TLS check: FAIL_CLOSE stands in for the plugin
                assert status == 403 and "x-echo-path" not in dict(headers)
                status_doc = json.loads(sidecar.admin_get("/config_dump"))["module_status"]["default.headers"]
                assert status_doc["ok"] is False and "TLS handshake failed" in status_doc["message"]
