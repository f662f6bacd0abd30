"""SPIFFE ID parsing: the Istio form only, errors naming the bad part."""

from __future__ import annotations

import pytest

from wasmhost.security import SpiffeId, SpiffeIdError


def test_round_trip_and_principal_form():
    sid = SpiffeId.parse("spiffe://cluster.local/ns/shop/sa/cart")
    assert (sid.trust_domain, sid.namespace, sid.service_account) == ("cluster.local", "shop", "cart")
    assert sid.uri == "spiffe://cluster.local/ns/shop/sa/cart"
    assert sid.principal == "cluster.local/ns/shop/sa/cart"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("https://cluster.local/ns/a/sa/b", "does not start with spiffe://"),
        ("spiffe://cluster.local/ns/a", "not of the form"),
        ("spiffe://cluster.local/namespace/a/sa/b", "not of the form"),
        ("spiffe://cluster.local/ns/a/sa/b/extra", "not of the form"),
        ("spiffe://Cluster_Local/ns/a/sa/b", "trust domain"),
        ("spiffe://cluster.local/ns//sa/b", "namespace"),
        ("spiffe://cluster.local/ns/a/sa/b c", "service account"),
    ],
)
def test_malformed_ids_are_refused(text, message):
    with pytest.raises(SpiffeIdError, match=message):
        SpiffeId.parse(text)
