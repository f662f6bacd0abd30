"""Interop with OCI clients and servers nobody here wrote: skopeo, oras-py, distribution 2.8.

Our registry runs as a real ``wasmesh registry`` process (token auth), Debian's
``docker-registry`` runs from a config file in a temp dir; both bind 127.0.0.1 and are
stopped by PID.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry import (
    Artifact,
    Credentials,
    Reference,
    RegistryClient,
    TrustPolicy,
    add_user,
    build_artifact,
    generate_keypair,
    load_private_key,
    load_public_key,
    pull_module,
    push_artifact,
    push_module,
    sign_image,
    verify_module,
)
from tests.registry._tools import DATA, build_wat, require_module, require_tool

pytestmark = pytest.mark.e2e
USER, PASSWORD = "publisher", "interop-secret"


@dataclass
class Endpoint:
    host: str
    process: subprocess.Popen[bytes]
    credentials: Credentials | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 401 is an answer
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def wasm_module() -> bytes:
    return build_wat((DATA / "echo_plugin.wat").read_text())


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    base = tmp_path_factory.mktemp("ours")
    add_user(base / "htpasswd", USER, PASSWORD)
    port = _free_port()
    cmd = [sys.executable, "-c", "import sys; from controlplane.cli import main; sys.exit(main())", "registry",
           "--data", str(base / "data"), "--port", str(port), "--htpasswd", str(base / "htpasswd"), "--auth", "token"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        _wait_http(f"http://127.0.0.1:{port}/v2/", process)
        yield Endpoint(f"127.0.0.1:{port}", process, Credentials(USER, PASSWORD))
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    binary = require_tool("docker-registry", "apt-get install docker-registry")
    base = tmp_path_factory.mktemp("distribution")
    port = _free_port()
    config = base / "config.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(base / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/v2/", process)
        yield Endpoint(f"127.0.0.1:{port}", process)
    finally:
        _stop(process)


def _write_oci_layout(path: Path, artifact: Artifact, tag: str) -> None:
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for desc, data in artifact.blobs + [(None, artifact.manifest)]:
        (blobs / (desc.digest.hex if desc else artifact.digest.hex)).write_bytes(data)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "manifests": [{"mediaType": artifact.media_type, "digest": str(artifact.digest),
                                                "size": len(artifact.manifest),
                                                "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (path / "index.json").write_text(json.dumps(index))


def _skopeo(*args: str) -> str:
    binary = require_tool("skopeo", "apt-get install skopeo")
    result = subprocess.run([binary, "--insecure-policy", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("variant", ["oci", "compat"])  # skopeo's oci: layouts hold OCI media types only
def test_skopeo_copies_into_and_out_of_our_registry(ours: Endpoint, wasm_module: bytes, tmp_path: Path,
                                                    variant: str) -> None:
    artifact = build_artifact(wasm_module, variant)
    _write_oci_layout(tmp_path / "in", artifact, "v1")
    target = f"docker://{ours.host}/skopeo/{variant}:v1"
    _skopeo("copy", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}", "--preserve-digests",
            f"oci:{tmp_path / 'in'}:v1", target)
    with RegistryClient(ours.host, ours.credentials) as client:
        pulled = pull_module(client, Reference.parse(f"{ours.host}/skopeo/{variant}:v1"))
    assert pulled.module == wasm_module and pulled.manifest_digest == artifact.digest
    _skopeo("copy", "--src-tls-verify=false", f"--src-creds={USER}:{PASSWORD}", target, f"oci:{tmp_path / 'out'}:v1")
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == str(artifact.digest)
    tags = json.loads(_skopeo("list-tags", "--tls-verify=false", f"--creds={USER}:{PASSWORD}",
                              f"docker://{ours.host}/skopeo/{variant}"))
    assert tags["Tags"] == ["v1"]


def test_skopeo_with_bad_credentials_is_refused(ours: Endpoint, tmp_path: Path) -> None:
    binary = require_tool("skopeo", "apt-get install skopeo")
    result = subprocess.run([binary, "list-tags", "--tls-verify=false", f"--creds={USER}:wrong",
                             f"docker://{ours.host}/skopeo/oci"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "invalid username or password" in result.stderr


def test_oras_pushes_and_pulls_with_our_registry(ours: Endpoint, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("oras", "pip install oras")
    import oras.client

    client = oras.client.OrasClient(hostname=ours.host, insecure=True)
    client.login(username=USER, password=PASSWORD, hostname=ours.host, config_path=str(tmp_path / "oras.json"))
    payload = tmp_path / "notes.txt"
    payload.write_text("artifact pushed by oras-py\n")
    monkeypatch.chdir(tmp_path)  # oras-py names layers by their path relative to the working directory
    response = client.push(target=f"{ours.host}/oras/notes:v1", files=["notes.txt"])
    assert response.status_code == 201
    files = client.pull(target=f"{ours.host}/oras/notes:v1", outdir=str(tmp_path / "pulled"))
    assert [Path(f).read_text() for f in files] == ["artifact pushed by oras-py\n"]
    with RegistryClient(ours.host, ours.credentials) as ours_client:
        assert ours_client.tags("oras/notes") == ["v1"]


@pytest.mark.parametrize("variant", ["oci", "compat", "docker"])
def test_our_client_pushes_to_and_pulls_from_distribution(distribution: Endpoint, wasm_module: bytes,
                                                          variant: str) -> None:
    ref = Reference.parse(f"{distribution.host}/ours/{variant}:v1")
    with RegistryClient(distribution.host, chunk_size=32) as client:  # tiny chunks: PATCH path too
        digest = push_module(client, ref, wasm_module, variant=variant)
        pulled = pull_module(client, ref)
    assert pulled.module == wasm_module and pulled.manifest_digest == digest and pulled.variant == variant


def test_our_pull_reads_what_skopeo_pushed_to_distribution(distribution: Endpoint, wasm_module: bytes,
                                                           tmp_path: Path) -> None:
    artifact = build_artifact(wasm_module, "compat")
    _write_oci_layout(tmp_path / "in", artifact, "v1")
    _skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'in'}:v1",
            f"docker://{distribution.host}/skopeo/compat:v1")
    with RegistryClient(distribution.host) as client:
        pulled = pull_module(client, Reference.parse(f"{distribution.host}/skopeo/compat:v1"))
    assert pulled.module == wasm_module and pulled.variant == "compat"


@pytest.mark.parametrize("variant", ["docker", "oci"])
def test_skopeo_copies_between_our_registry_and_distribution(ours: Endpoint, distribution: Endpoint,
                                                             wasm_module: bytes, variant: str) -> None:
    with RegistryClient(distribution.host) as client:
        digest = push_module(client, Reference.parse(f"{distribution.host}/relay/m:v1"), wasm_module, variant=variant)
    _skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}",
            f"docker://{distribution.host}/relay/m:v1", f"docker://{ours.host}/relay/m:v1")
    with RegistryClient(ours.host, ours.credentials) as client:
        pulled = pull_module(client, Reference.parse(f"{ours.host}/relay/m:v1"))
    assert pulled.manifest_digest == digest and pulled.module == wasm_module and pulled.variant == variant


def test_signatures_work_on_distribution_without_a_referrers_api(distribution: Endpoint, wasm_module: bytes) -> None:
    private_pem, public_pem = generate_keypair()
    ref = Reference.parse(f"{distribution.host}/signed/m:v1")
    with RegistryClient(distribution.host) as client:
        digest = push_module(client, ref, wasm_module)
        assert not client.referrers_api_supported(ref.repository, digest)
        sign_image(client, ref, load_private_key(private_pem))
        # the OCI 1.1 fallback: an index of referrers at tag sha256-<hex>
        assert [d.artifact_type for d in client.referrers(ref.repository, digest)] == [
            "application/vnd.dev.cosign.artifact.sig.v1+json"]
    policy = TrustPolicy.with_keys([load_public_key(public_pem)], (f"{distribution.host}/signed/*",))
    verified = verify_module(ref, policy)
    assert verified.module == wasm_module and verified.manifest_digest == digest


def test_our_signed_images_copy_intact_with_their_signature_tag(ours: Endpoint, distribution: Endpoint,
                                                                wasm_module: bytes) -> None:
    private_pem, public_pem = generate_keypair()
    src = Reference.parse(f"{ours.host}/copy/m:v1")
    with RegistryClient(ours.host, ours.credentials) as client:
        digest = push_artifact(client, src, build_artifact(wasm_module, "oci"))
        result = sign_image(client, src, load_private_key(private_pem), referrer=False)
    for tag in ("v1", result.signature_tag):
        _skopeo("copy", "--src-tls-verify=false", f"--src-creds={USER}:{PASSWORD}", "--dest-tls-verify=false",
                "--preserve-digests", f"docker://{ours.host}/copy/m:{tag}", f"docker://{distribution.host}/copy/m:{tag}")
    policy = TrustPolicy.with_keys([load_public_key(public_pem)], (f"{distribution.host}/*",))
    assert verify_module(f"oci://{distribution.host}/copy/m:v1", policy).manifest_digest == digest
