"""cosign-format signatures, the trust policy and verify_module against a live registry."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from registry import (
    Digest,
    Reference,
    RegistryClient,
    RegistryError,
    TrustPolicy,
    TrustPolicyError,
    VerificationError,
    _keys,
    find_signatures,
    generate_keypair,
    load_private_key,
    load_public_key,
    push_module,
    sign_image,
    verify_image,
    verify_module,
)
from registry import _mediatypes as mt
from registry._signing import simple_signing_payload
from registry.testing import RunningRegistry


@pytest.fixture(scope="module")
def keypair() -> tuple[_keys.PrivateKey, _keys.PublicKey]:
    private_pem, public_pem = generate_keypair()
    return load_private_key(private_pem), load_public_key(public_pem)


@pytest.fixture(scope="module")
def stranger() -> tuple[_keys.PrivateKey, _keys.PublicKey]:
    private_pem, public_pem = generate_keypair()
    return load_private_key(private_pem), load_public_key(public_pem)


def _pushed(reg: RunningRegistry, module: bytes, tag: str = "v1", repo: str = "plugins/echo") -> tuple[Reference, Digest]:
    ref = Reference.parse(f"{reg.host}/{repo}:{tag}")
    with RegistryClient(reg.host) as client:
        return ref, push_module(client, ref, module)


def test_keys_round_trip_with_and_without_password() -> None:
    private_pem, public_pem = generate_keypair(b"pw")
    assert b"ENCRYPTED PRIVATE KEY" in private_pem and b"BEGIN PUBLIC KEY" in public_pem
    key = load_private_key(private_pem, b"pw")
    assert _keys.key_id(key.public_key()) == _keys.key_id(load_public_key(public_pem))
    with pytest.raises(_keys.KeyFileError, match="password is required"):
        load_private_key(private_pem, None)
    with pytest.raises(_keys.KeyFileError, match="wrong password"):
        load_private_key(private_pem, b"nope")
    with pytest.raises(_keys.KeyFileError, match="not a PEM public key"):
        load_public_key(b"garbage")


def test_signature_is_stored_the_way_cosign_stores_it(live_registry: RunningRegistry, wasm_module: bytes,
                                                      keypair: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    ref, digest = _pushed(live_registry, wasm_module)
    with RegistryClient(live_registry.host) as client:
        result = sign_image(client, ref, keypair[0])
        assert result.signature_tag == f"sha256-{digest.hex}.sig"
        data, media_type, _ = client.get_manifest(ref.repository, result.signature_tag)
        layer = json.loads(data)["layers"][0]
        assert layer["mediaType"] == mt.COSIGN_SIMPLESIGNING
        payload = client.get_blob(ref.repository, Digest.parse(layer["digest"]))
        doc = json.loads(payload)
        assert doc["critical"]["image"]["docker-manifest-digest"] == str(digest)
        assert doc["critical"]["identity"]["docker-reference"] == f"{live_registry.host}/plugins/echo"
        assert doc["critical"]["type"] == "cosign container image signature"
        signature = base64.b64decode(layer["annotations"][mt.COSIGN_SIGNATURE_ANNOTATION])
        assert _keys.verify(keypair[1], payload, base64.b64encode(signature).decode())
        referrers = client.referrers(ref.repository, digest, mt.COSIGN_ARTIFACT_TYPE)
        assert [r.digest for r in referrers] == [result.referrer_digest]
        # a second signature is appended to the same .sig manifest, as cosign does
        sign_image(client, ref, keypair[0], referrer=False)
        data, _, _ = client.get_manifest(ref.repository, result.signature_tag)
        assert len(json.loads(data)["layers"]) == 2


def test_verify_image_accepts_the_signer_and_names_it(live_registry: RunningRegistry, wasm_module: bytes,
                                                      keypair: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    ref, digest = _pushed(live_registry, wasm_module)
    with RegistryClient(live_registry.host) as client:
        sign_image(client, ref, keypair[0])
        verified_digest, signers = verify_image(client, ref, [keypair[1]])
    assert verified_digest == digest
    assert [s.identity for s in signers] == [_keys.key_id(keypair[1])]


def test_unsigned_image_is_refused(live_registry: RunningRegistry, wasm_module: bytes,
                                   keypair: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    ref, _ = _pushed(live_registry, wasm_module)
    with RegistryClient(live_registry.host) as client, pytest.raises(VerificationError, match="is not signed"):
        verify_image(client, ref, [keypair[1]])


def test_signature_by_an_untrusted_key_is_refused(live_registry: RunningRegistry, wasm_module: bytes,
                                                  keypair: tuple[_keys.PrivateKey, _keys.PublicKey],
                                                  stranger: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    ref, _ = _pushed(live_registry, wasm_module)
    with RegistryClient(live_registry.host) as client:
        sign_image(client, ref, stranger[0])
        with pytest.raises(VerificationError, match="not signed by any trusted key"):
            verify_image(client, ref, [keypair[1]])


def test_signature_for_another_digest_is_refused(live_registry: RunningRegistry, wasm_module: bytes,
                                                 other_module: bytes,
                                                 keypair: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    good_ref, _ = _pushed(live_registry, wasm_module, "good")
    bad_ref, bad_digest = _pushed(live_registry, other_module, "bad")
    with RegistryClient(live_registry.host) as client:
        result = sign_image(client, good_ref, keypair[0], referrer=False)
        # copy the valid signature of "good" under the .sig tag of "bad"
        data, media_type, _ = client.get_manifest(good_ref.repository, result.signature_tag)
        client.push_manifest(bad_ref.repository, f"sha256-{bad_digest.hex}.sig", data, media_type)
        with pytest.raises(VerificationError, match=f"signature is for sha256:.*, not for {bad_digest}"):
            verify_image(client, bad_ref, [keypair[1]])


def test_tampered_signature_payload_in_storage_is_refused(live_registry: RunningRegistry, wasm_module: bytes,
                                                          keypair: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    ref, digest = _pushed(live_registry, wasm_module)
    with RegistryClient(live_registry.host) as client:
        sign_image(client, ref, keypair[0])
        payload = simple_signing_payload(ref.name, digest)
        path = live_registry.storage.blob_path(Digest.of(payload))
        path.write_bytes(payload.replace(b"cosign container", b"cosign_container"))
        with pytest.raises(VerificationError, match="cannot read the signatures.*does not match its digest"):
            verify_image(client, ref, [keypair[1]])


def test_find_signatures_ignores_referrers_with_a_foreign_subject(live_registry: RunningRegistry,
                                                                   wasm_module: bytes, other_module: bytes,
                                                                   keypair: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    ref, digest = _pushed(live_registry, wasm_module)
    other_ref, _ = _pushed(live_registry, other_module, "other")
    with RegistryClient(live_registry.host) as client:
        sign_image(client, other_ref, keypair[0])
        assert find_signatures(client, ref.repository, digest) == []


def _write_policy(tmp_path: Path, text: str, public_key: _keys.PublicKey) -> Path:
    (tmp_path / "team.pub").write_bytes(_keys.public_pem(public_key))
    path = tmp_path / "trust.yaml"
    path.write_text(text)
    return path


def test_trust_policy_scopes_keys_to_image_patterns(tmp_path: Path,
                                                    keypair: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    policy = TrustPolicy.load(_write_policy(tmp_path, """
rules:
  - images: ["reg.example:5000/plugins/*"]
    keys: [team.pub]
  - images: ["reg.example:5000/experimental/*"]
    requireSignature: false
""", keypair[1]))
    signed = policy.decide(Reference.parse("reg.example:5000/plugins/a:v1"))
    assert signed.require_signature and signed.covered and len(signed.keys) == 1
    loose = policy.decide(Reference.parse("reg.example:5000/experimental/b:v1"))
    assert not loose.require_signature
    elsewhere = policy.decide(Reference.parse("other.example/plugins/a:v1"))
    assert elsewhere.require_signature and not elsewhere.covered and elsewhere.keys == ()


@pytest.mark.parametrize(("text", "message"), [
    ("rules: [{images: [x], keys: [missing.pub]}]", r"rules\[0\].keys\[0\]: .*missing.pub"),
    ("rules: [{images: []}]", r"rules\[0\].images: at least one"),
    ("rules: [{images: [x], colour: red}]", r"rules\[0\]: unknown field"),
    ("requireSignature: maybe", "requireSignature: expected true or false"),
    ("rules: [{images: [x], sigstore: [{subject: a}]}]", r"sigstore\[0\]: expected"),
])
def test_trust_policy_errors_name_the_field(tmp_path: Path, keypair: tuple[_keys.PrivateKey, _keys.PublicKey],
                                            text: str, message: str) -> None:
    with pytest.raises(TrustPolicyError, match=message):
        TrustPolicy.load(_write_policy(tmp_path, text, keypair[1]))


def test_verify_module_returns_bytes_and_signer(live_registry: RunningRegistry, wasm_module: bytes,
                                                keypair: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    ref, digest = _pushed(live_registry, wasm_module)
    with RegistryClient(live_registry.host) as client:
        sign_image(client, ref, keypair[0])
    policy = TrustPolicy.with_keys([keypair[1]], (f"{live_registry.host}/plugins/*",))
    verified = verify_module(str(ref), policy, expected_digest=str(digest))
    assert verified.module == wasm_module
    assert verified.manifest_digest == digest and verified.module_digest == Digest.of(wasm_module)
    assert verified.signers[0].identity == _keys.key_id(keypair[1])


def test_verify_module_negative_cases(live_registry: RunningRegistry, wasm_module: bytes,
                                      keypair: tuple[_keys.PrivateKey, _keys.PublicKey],
                                      stranger: tuple[_keys.PrivateKey, _keys.PublicKey]) -> None:
    ref, digest = _pushed(live_registry, wasm_module)
    trusted = TrustPolicy.with_keys([keypair[1]], (f"{live_registry.host}/plugins/*",))
    with pytest.raises(VerificationError, match="is not signed"):
        verify_module(ref, trusted)
    with pytest.raises(VerificationError, match="no trust policy rule covers"):
        verify_module(ref, TrustPolicy.with_keys([keypair[1]], ("elsewhere/*",)))
    with RegistryClient(live_registry.host) as client:
        sign_image(client, ref, stranger[0])
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        verify_module(ref, trusted)
    with pytest.raises(RegistryError, match="does not match the expected") as err:
        verify_module(ref, trusted, expected_digest=str(Digest.of(b"something else")))
    assert err.value.code == "DIGEST_INVALID"
    unsigned_ok = TrustPolicy(require_signature=False)
    assert verify_module(ref, unsigned_ok).module == wasm_module
