"""Peer chain verification: trusted chain, another CA, expired, wrong identity, odd certificates."""

from __future__ import annotations

import datetime as dt

import pytest

from controlplane.ca import generate_root, save_signing_material
from tests.wasmhost.security._pki import intermediate_material, issue, issue_at, make_ca, spiffe
from wasmhost.security import PeerVerificationError, verify_peer_chain


@pytest.fixture
def ca(tmp_path):
    return make_ca(tmp_path / "ca")


def test_trusted_chain_gives_the_peer_identity(ca):
    svid = issue(ca, spiffe("shop", "cart"))
    assert verify_peer_chain(svid.chain, [ca.root]) == spiffe("shop", "cart")
    assert verify_peer_chain(svid.chain, [ca.root], expected={spiffe("shop", "cart")}) == spiffe("shop", "cart")


def test_certificate_from_another_ca_is_refused(ca, tmp_path):
    other = make_ca(tmp_path / "other")
    svid = issue(other, spiffe())
    with pytest.raises(PeerVerificationError, match="not signed by any root"):
        verify_peer_chain(svid.chain, [ca.root])


def test_another_ca_with_the_same_subject_name_is_refused(ca, tmp_path):
    twin = make_ca(tmp_path / "twin")  # same trust domain, so same issuer name, other key
    assert twin.root.subject == ca.root.subject
    with pytest.raises(PeerVerificationError, match="not signed by any root"):
        verify_peer_chain(issue(twin, spiffe()).chain, [ca.root])


def test_expired_certificate_is_refused(ca, tmp_path):
    old = issue_at(tmp_path, spiffe(), dt.datetime.now(dt.UTC) - dt.timedelta(hours=2), 60, ca)
    with pytest.raises(PeerVerificationError, match="expired"):
        verify_peer_chain(old.chain, [ca.root])


def test_not_yet_valid_certificate_is_refused(ca):
    svid = issue(ca, spiffe())
    with pytest.raises(PeerVerificationError, match="not valid before"):
        verify_peer_chain(svid.chain, [ca.root], now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))


def test_wrong_spiffe_id_is_refused(ca):
    svid = issue(ca, spiffe("shop", "cart"))
    with pytest.raises(PeerVerificationError, match="is not the expected"):
        verify_peer_chain(svid.chain, [ca.root], expected={spiffe("shop", "payments")})


def test_chain_through_an_intermediate_and_a_missing_intermediate(tmp_path):
    root = generate_root("op")
    save_signing_material(tmp_path / "c", intermediate_material(root))
    svid = issue(make_ca(tmp_path / "c"), spiffe())
    assert verify_peer_chain(svid.chain, [root.cert]) == spiffe()
    with pytest.raises(PeerVerificationError, match="not signed by any root"):
        verify_peer_chain(svid.chain[:1], [root.cert])


def test_a_ca_certificate_cannot_be_a_peer_leaf(ca, tmp_path):
    root = generate_root("x")
    with pytest.raises(PeerVerificationError, match="0 spiffe"):
        verify_peer_chain([root.cert], [root.cert])
    with pytest.raises(PeerVerificationError, match="no certificate"):
        verify_peer_chain([], [ca.root])
