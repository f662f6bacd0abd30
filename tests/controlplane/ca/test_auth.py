"""Bootstrap tokens and the Kubernetes TokenReview authenticator seam."""

from __future__ import annotations

import pytest

from controlplane.ca import AuthenticationError, BootstrapTokens, CallerIdentity, TokenReviewAuthenticator


def test_token_round_trip_gives_the_workload_identity():
    tokens = BootstrapTokens(b"s" * 32)
    assert tokens.authenticate(tokens.issue("shop", "cart")) == CallerIdentity("shop", "cart")


def test_expired_token_is_refused():
    now = [1000.0]
    tokens = BootstrapTokens(b"s" * 32, clock=lambda: now[0])
    token = tokens.issue("shop", "cart", ttl_seconds=60)
    now[0] += 61
    with pytest.raises(AuthenticationError, match="expired"):
        tokens.authenticate(token)


def test_token_from_another_secret_or_tampered_is_refused():
    token = BootstrapTokens(b"a" * 32).issue("shop", "cart")
    with pytest.raises(AuthenticationError, match="signature"):
        BootstrapTokens(b"b" * 32).authenticate(token)
    version, payload, mac = token.split(".")
    forged = BootstrapTokens(b"c" * 32).issue("kube-system", "admin").split(".")[1]
    with pytest.raises(AuthenticationError, match="signature"):
        BootstrapTokens(b"a" * 32).authenticate(f"{version}.{forged}.{mac}")


@pytest.mark.parametrize("token", ["", "abc", "v2.a.b", "v1.a"])
def test_malformed_token_is_refused(token):
    with pytest.raises(AuthenticationError, match="not a wasmesh bootstrap token"):
        BootstrapTokens(b"s" * 32).authenticate(token)


def test_short_secret_is_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        BootstrapTokens(b"short")


class FakeTokenReviewer:
    """Fake API server (no kube-apiserver can run here): answers TokenReview from a table."""

    def __init__(self, answers):
        self.answers = answers
        self.requests = []

    def __call__(self, body):
        self.requests.append(body)
        return self.answers[body["spec"]["token"]]


def test_token_review_maps_a_service_account_user_to_its_identity():
    reviewer = FakeTokenReviewer({
        "good": {"status": {"authenticated": True, "audiences": ["istio-ca"],
                            "user": {"username": "system:serviceaccount:shop:cart"}}},
    })
    auth = TokenReviewAuthenticator(reviewer)
    assert auth.authenticate("good") == CallerIdentity("shop", "cart")
    assert reviewer.requests[0]["kind"] == "TokenReview"
    assert reviewer.requests[0]["spec"] == {"token": "good", "audiences": ["istio-ca"]}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"status": {"authenticated": False, "error": "bad token"}}, "bad token"),
        ({"status": {"authenticated": True, "user": {"username": "alice"}}}, "not a service account"),
        ({"status": {"authenticated": True, "audiences": ["other"],
                     "user": {"username": "system:serviceaccount:a:b"}}}, "audiences"),
    ],
)
def test_token_review_refusals(answer, message):
    auth = TokenReviewAuthenticator(FakeTokenReviewer({"t": answer}))
    with pytest.raises(AuthenticationError, match=message):
        auth.authenticate("t")


def test_token_review_transport_failure_is_an_authentication_error():
    def broken(body):
        raise ConnectionError("api server down")

    with pytest.raises(AuthenticationError, match="api server down"):
        TokenReviewAuthenticator(broken).authenticate("t")
