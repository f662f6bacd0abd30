"""Our client against our server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry import (
    Authenticator,
    Credentials,
    Digest,
    PasswordFile,
    Reference,
    RegistryClient,
    RegistryError,
    hash_password,
    pull_module,
    push_module,
)
from registry.testing import RunningRegistry, running_registry


def test_push_and_pull_every_variant(live_registry: RunningRegistry, wasm_module: bytes) -> None:
    with RegistryClient(live_registry.host) as client:
        for variant in ("oci", "compat", "docker"):
            ref = Reference.parse(f"{live_registry.host}/plugins/echo:{variant}")
            digest = push_module(client, ref, wasm_module, variant=variant)
            pulled = pull_module(client, ref)
            assert pulled.module == wasm_module and pulled.variant == variant
            assert pulled.manifest_digest == digest
        assert client.tags("plugins/echo") == ["compat", "docker", "oci"]
        assert client.tags("plugins/echo", page_size=1) == ["compat", "docker", "oci"]
        assert client.catalog() == ["plugins/echo"]


def test_chunked_push_and_progress(live_registry: RunningRegistry) -> None:
    seen: list[tuple[str, int, int | None]] = []
    data = bytes(range(256)) * 1000
    with RegistryClient(live_registry.host, chunk_size=64 * 1024, progress=lambda *a: seen.append(a)) as client:
        desc = client.push_blob("repo", data, label="big")
        assert client.get_blob("repo", desc.digest, len(data)) == data
    pushes = [done for label, done, _ in seen if label == "big"]
    assert pushes[:3] == [65536, 131072, 196608] and len(data) in pushes


def test_pinned_digest_mismatch_is_refused(live_registry: RunningRegistry, wasm_module: bytes,
                                           other_module: bytes) -> None:
    with RegistryClient(live_registry.host) as client:
        ref = Reference.parse(f"{live_registry.host}/p:v1")
        push_module(client, ref, wasm_module)
        wrong = Digest.of(b"not the manifest")
        with pytest.raises(RegistryError, match="does not match the expected") as err:
            pull_module(client, ref, expected_digest=wrong)
        assert err.value.code == "DIGEST_INVALID"


def test_tampered_blob_in_storage_is_detected_by_the_client(live_registry: RunningRegistry,
                                                            wasm_module: bytes) -> None:
    with RegistryClient(live_registry.host) as client:
        ref = Reference.parse(f"{live_registry.host}/p:v1")
        push_module(client, ref, wasm_module)
        path = live_registry.storage.blob_path(Digest.of(wasm_module))
        tampered = bytearray(path.read_bytes())
        tampered[-1] ^= 0xFF
        path.write_bytes(bytes(tampered))
        with pytest.raises(RegistryError, match="does not match its digest") as err:
            pull_module(client, ref)
        assert err.value.code == "DIGEST_INVALID"


def test_truncated_upload_leaves_nothing_behind(live_registry: RunningRegistry) -> None:
    data = b"x" * 100_000
    digest = Digest.of(data)
    with socket.create_connection(("127.0.0.1", live_registry.server.port)) as sock:
        head = (f"POST /v2/repo/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {live_registry.host}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        sock.sendall(head + data[:40_000])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # the server closes without answering a half request
    with RegistryClient(live_registry.host) as client:
        assert not client.blob_exists("repo", digest)
        # a chunked upload cut short and finished with the full digest is refused
        with pytest.raises(RegistryError) as err:
            client._check(client._request("POST", f"/v2/repo/blobs/uploads/?digest={digest}", scope="",
                                          body=data[:50_000]), 201)
        assert err.value.code == "DIGEST_INVALID"
        assert not client.blob_exists("repo", digest)
    assert not any(live_registry.storage.all_blobs())


@pytest.fixture
def htpasswd() -> PasswordFile:
    return PasswordFile({"alice": hash_password("right", scheme="pbkdf2-sha256")})


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_auth_modes_with_good_and_bad_credentials(tmp_path: Path, wasm_module: bytes, htpasswd: PasswordFile,
                                                  mode: str) -> None:
    with running_registry(tmp_path / "data", Authenticator(mode, htpasswd)) as reg:
        ref = Reference.parse(f"{reg.host}/secure/p:v1")
        with RegistryClient(reg.host, Credentials("alice", "right")) as client:
            push_module(client, ref, wasm_module)
            assert pull_module(client, ref).module == wasm_module
        with RegistryClient(reg.host, Credentials("alice", "wrong")) as client, \
                pytest.raises(RegistryError, match="invalid username or password") as err:
            pull_module(client, ref)
        assert err.value.code == "UNAUTHORIZED"
        with RegistryClient(reg.host) as client, pytest.raises(RegistryError) as anonymous:
            pull_module(client, ref)
        assert anonymous.value.code in ("UNAUTHORIZED", "DENIED")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_server_with_a_trusted_ca_and_an_untrusted_one(tmp_path: Path, wasm_module: bytes) -> None:
    from registry import tls_context

    cert, key = _self_signed(tmp_path)
    with running_registry(tmp_path / "data", ssl_context=tls_context(cert, key)) as reg:
        assert reg.url.startswith("https://")
        ref = Reference.parse(f"{reg.host}/tls/p:v1")
        with RegistryClient(reg.host, ca_file=str(cert)) as client:
            push_module(client, ref, wasm_module)
            assert pull_module(client, ref).module == wasm_module
        with RegistryClient(reg.host, scheme="https") as client, pytest.raises(RegistryError, match="TLS error"):
            client.ping()


def test_plain_http_registry_is_detected_from_auto(live_registry: RunningRegistry) -> None:
    with RegistryClient(live_registry.host) as client:
        client.ping()
        assert client.scheme == "http"


def test_registry_down_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with RegistryClient(f"127.0.0.1:{port}", scheme="http", timeout=2) as client, \
            pytest.raises(RegistryError, match="cannot reach registry"):
        client.ping()


def test_server_error_bodies_become_registry_errors(live_registry: RunningRegistry) -> None:
    with RegistryClient(live_registry.host) as client:
        with pytest.raises(RegistryError) as err:
            client.get_manifest("nothing/here", "v1")
        assert err.value.code == "NAME_UNKNOWN" and err.value.status == 404
        reply = client._request("PUT", "/v2/x/manifests/v1", scope="", body=b"[]",
                                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert json.loads(reply.body)["errors"][0]["code"] == "MANIFEST_INVALID"
