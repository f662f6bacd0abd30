"""Sigstore bundles, verified offline by the sigstore package against a test-made trusted root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from registry import (
    Digest,
    Reference,
    RegistryClient,
    SigstoreIdentity,
    TrustPolicy,
    TrustRule,
    VerificationError,
    attach_bundle,
    push_module,
    verify_bundle,
    verify_module,
)
from registry.testing import RunningRegistry

from ._tools import require_module

ISSUER = "https://issuer.wasmesh.test"
ALICE = SigstoreIdentity("alice@wasmesh.test", ISSUER)


@pytest.fixture(scope="module")
def instance():  # type: ignore[no-untyped-def]
    require_module("sigstore", "pip install sigstore")
    from ._sigstore_instance import SigstoreInstance

    return SigstoreInstance.create()


@pytest.fixture
def trusted_root(instance, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    return instance.write_trusted_root(tmp_path / "trusted_root.json")


def test_bundle_over_the_manifest_digest_verifies(instance, trusted_root: Path) -> None:  # type: ignore[no-untyped-def]
    digest = Digest.of(b"a manifest")
    bundle = instance.sign_digest(digest.hex, ALICE.subject, ISSUER)
    signer = verify_bundle(bundle, digest, trusted_root, [ALICE])
    assert (signer.kind, signer.identity, signer.issuer) == ("sigstore", ALICE.subject, ISSUER)


def test_bundle_for_another_digest_or_identity_is_refused(instance, trusted_root: Path) -> None:  # type: ignore[no-untyped-def]
    digest = Digest.of(b"a manifest")
    bundle = instance.sign_digest(digest.hex, ALICE.subject, ISSUER)
    with pytest.raises(VerificationError, match="message digest mismatch"):
        verify_bundle(bundle, Digest.of(b"another manifest"), trusted_root, [ALICE])
    with pytest.raises(VerificationError, match="0 of 1 policies succeeded"):
        verify_bundle(bundle, digest, trusted_root, [SigstoreIdentity("mallory@wasmesh.test", ISSUER)])
    with pytest.raises(VerificationError, match="0 of 1 policies succeeded"):
        verify_bundle(bundle, digest, trusted_root, [SigstoreIdentity(ALICE.subject, "https://other.issuer")])


def test_bundle_from_another_sigstore_instance_is_refused(instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ._sigstore_instance import SigstoreInstance

    foreign_root = SigstoreInstance.create().write_trusted_root(tmp_path / "foreign.json")
    digest = Digest.of(b"a manifest")
    bundle = instance.sign_digest(digest.hex, ALICE.subject, ISSUER)
    with pytest.raises(VerificationError, match="certificate chain"):
        verify_bundle(bundle, digest, foreign_root, [ALICE])


def test_tampered_bundle_is_refused(instance, trusted_root: Path) -> None:  # type: ignore[no-untyped-def]
    digest = Digest.of(b"a manifest")
    bundle = json.loads(instance.sign_digest(digest.hex, ALICE.subject, ISSUER))
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)
    with pytest.raises(VerificationError, match="invalid inclusion promise"):
        verify_bundle(json.dumps(bundle).encode(), digest, trusted_root, [ALICE])


def test_verify_module_with_a_sigstore_identity_policy(live_registry: RunningRegistry, wasm_module: bytes,
                                                       instance, trusted_root: Path) -> None:  # type: ignore[no-untyped-def]
    ref = Reference.parse(f"{live_registry.host}/plugins/sig:v1")
    policy = TrustPolicy([TrustRule((f"{live_registry.host}/plugins/*",), (), (ALICE,))], True, trusted_root)
    with RegistryClient(live_registry.host) as client:
        digest = push_module(client, ref, wasm_module)
        with pytest.raises(VerificationError, match="has no Sigstore bundle"):
            verify_module(ref, policy, client=client)
        attach_bundle(client, ref, instance.sign_digest(digest.hex, "mallory@wasmesh.test", ISSUER))
        with pytest.raises(VerificationError, match="0 of 1 policies succeeded"):
            verify_module(ref, policy, client=client)
        attach_bundle(client, ref, instance.sign_digest(digest.hex, ALICE.subject, ISSUER))
        verified = verify_module(ref, policy, client=client)
    assert verified.module == wasm_module
    assert [str(s) for s in verified.signers] == [f"sigstore {ALICE.subject} ({ISSUER})"]
