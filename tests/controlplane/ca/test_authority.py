"""The CA: root on first start, cacerts plug-in, CSR checks, SVID shape, root rotation."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from controlplane.ca import (
    CaFilesError,
    CertificateAuthority,
    CsrRejected,
    generate_root,
    load_signing_material,
    save_signing_material,
)
from tests.wasmhost.security._pki import TRUST_DOMAIN, intermediate_material, issue, make_ca, spiffe
from wasmhost.security import build_csr, generate_key, spiffe_id_of, verify_peer_chain


def test_first_start_generates_a_root_with_a_private_key_file_and_reuses_it(tmp_path):
    ca = make_ca(tmp_path / "ca")
    key_mode = stat.S_IMODE((tmp_path / "ca" / "ca-key.pem").stat().st_mode)
    assert key_mode == 0o600
    assert ca.root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again = make_ca(tmp_path / "ca")
    assert again.root == ca.root
    assert (tmp_path / "ca" / "trust-bundle.pem").read_bytes() == ca.root.public_bytes(serialization.Encoding.PEM)


def test_signed_svid_has_the_spiffe_uri_p256_key_default_24h_and_both_ekus(tmp_path):
    ca = make_ca(tmp_path)
    svid = issue(ca, spiffe("shop", "cart"))
    leaf = svid.leaf
    assert spiffe_id_of(leaf).uri == "spiffe://cluster.local/ns/shop/sa/cart"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"
    lifetime = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23, minutes=58) < lifetime <= dt.timedelta(hours=24)
    ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(ekus) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert verify_peer_chain(svid.chain, [ca.root]) == spiffe("shop", "cart")


def test_requested_validity_is_honoured_and_capped_by_max_ttl(tmp_path):
    ca = make_ca(tmp_path, default_ttl=dt.timedelta(hours=1), max_ttl=dt.timedelta(hours=2))
    short = issue(ca, spiffe(), seconds=30).leaf
    assert dt.timedelta(seconds=25) < short.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=30)
    capped = issue(ca, spiffe(), seconds=10 * 3600).leaf
    assert capped.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=2)
    default = issue(ca, spiffe()).leaf
    assert default.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=59)


def _csr_with(key, names):
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("make_csr", "caller", "message"),
    [
        (lambda: build_csr(generate_key(), spiffe("default", "other")), spiffe(), "authenticated as"),
        (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nnope\n-----END CERTIFICATE REQUEST-----\n", spiffe(), "csr: not a PEM"),
        (lambda: _csr_with(rsa.generate_private_key(65537, 2048), [x509.UniformResourceIdentifier(spiffe().uri)]),
         spiffe(), "EC P-256"),
        (lambda: _csr_with(ec.generate_private_key(ec.SECP384R1()), [x509.UniformResourceIdentifier(spiffe().uri)]),
         spiffe(), "EC P-256"),
        (lambda: _csr_with(generate_key(), []), spiffe(), "no subjectAltName"),
        (lambda: _csr_with(generate_key(), [x509.UniformResourceIdentifier(spiffe().uri), x509.DNSName("a.b")]),
         spiffe(), "exactly one"),
        (lambda: _csr_with(generate_key(), [x509.UniformResourceIdentifier("https://example.com")]),
         spiffe(), "spiffe://"),
        (lambda: build_csr(generate_key(), spiffe(td="other.domain")), spiffe(td="other.domain"), "trust domain"),
    ],
    ids=["identity-mismatch", "garbage", "rsa-key", "p384-key", "no-san", "extra-san", "not-spiffe", "foreign-domain"],
)
def test_csr_is_refused_with_a_reason(tmp_path, make_csr, caller, message):
    ca = make_ca(tmp_path)
    with pytest.raises(CsrRejected, match=message):
        ca.sign(make_csr(), caller)


def test_csr_with_a_broken_signature_is_refused(tmp_path):
    ca = make_ca(tmp_path)
    good = x509.load_pem_x509_csr(build_csr(generate_key(), spiffe()))
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # flip a bit inside the signature
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + __import__("base64").encodebytes(bytes(der)) + b"-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(CsrRejected, match="signature|not a PEM"):
        ca.sign(pem, spiffe())


def test_negative_validity_is_refused(tmp_path):
    with pytest.raises(CsrRejected, match="validity_duration"):
        make_ca(tmp_path).sign(build_csr(generate_key(), spiffe()), spiffe(), validity_seconds=-1)


def test_plugged_in_intermediate_signs_and_the_chain_reaches_the_operator_root(tmp_path):
    root = generate_root("operator-root")
    save_signing_material(tmp_path / "cacerts", intermediate_material(root))
    ca = make_ca(tmp_path / "cacerts")
    assert ca.root == root.cert
    svid = issue(ca, spiffe("a", "b"))
    assert len(svid.chain) == 2  # leaf + intermediate; the root travels in the bundle
    assert svid.trust_bundle == (root.cert,)
    assert verify_peer_chain(svid.chain, [root.cert]) == spiffe("a", "b")


def test_cacerts_errors_name_the_file(tmp_path):
    root = generate_root("r")
    folder = tmp_path / "cacerts"
    save_signing_material(folder, intermediate_material(root))
    other_key = ec.generate_private_key(ec.SECP256R1())
    (folder / "ca-key.pem").write_bytes(
        other_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(CaFilesError, match="ca-key.pem: does not match"):
        load_signing_material(folder)
    (folder / "ca-key.pem").unlink()
    with pytest.raises(CaFilesError, match="ca-key.pem: missing"):
        load_signing_material(folder)
    save_signing_material(folder, intermediate_material(root))
    (folder / "root-cert.pem").write_text("not a certificate")
    with pytest.raises(CaFilesError, match="root-cert.pem"):
        load_signing_material(folder)


def test_cacerts_signing_cert_must_be_a_ca(tmp_path):
    ca = make_ca(tmp_path / "a")
    svid = issue(ca, spiffe())
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "ca-key.pem").write_bytes(svid.key_pem())
    (folder / "ca-cert.pem").write_bytes(svid.chain_pem())
    (folder / "root-cert.pem").write_bytes(svid.bundle_pem())
    with pytest.raises(CaFilesError, match="ca-cert.pem: basicConstraints"):
        load_signing_material(folder)


def test_root_rotation_keeps_old_and_new_certificates_verifiable_at_every_step(tmp_path):
    ca = make_ca(tmp_path)
    old_root = ca.root
    before = issue(ca, spiffe("ns", "before"))

    new_root = ca.stage_root()
    assert ca.trust_bundle() == [old_root, new_root]
    staged = issue(ca, spiffe("ns", "staged"))
    assert staged.chain[0].issuer == old_root.subject  # still signing with the old root
    assert set(staged.trust_bundle) == {old_root, new_root}

    ca.activate_next_root()
    assert ca.root == new_root
    after = issue(ca, spiffe("ns", "after"))
    bundle = ca.trust_bundle()
    assert bundle == [new_root, old_root]
    for svid in (before, staged, after):  # every live certificate verifies against the bundle
        verify_peer_chain(svid.chain, bundle)
    reopened = CertificateAuthority(tmp_path, TRUST_DOMAIN)
    assert reopened.trust_bundle() == [new_root, old_root]

    ca.retire_previous_root()
    assert ca.trust_bundle() == [new_root]
    assert x509.load_pem_x509_certificates((tmp_path / "trust-bundle.pem").read_bytes()) == [new_root]
    verify_peer_chain(after.chain, ca.trust_bundle())
    with pytest.raises(Exception, match="not signed by any root"):
        verify_peer_chain(before.chain, ca.trust_bundle())


def test_activate_without_a_staged_root_is_an_error(tmp_path):
    with pytest.raises(CaFilesError, match="no staged root"):
        make_ca(tmp_path).activate_next_root()
