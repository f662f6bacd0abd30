"""Kubernetes service-account tokens as bootstrap credentials: TokenReview through the real
`kubernetes` client against the fake API server (no kube-apiserver can run here), its cache,
API failures as retryable refusals, and the real gRPC CSR call on the control plane's secure port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from controlplane._security import MeshSecurity, SecuritySettings, StreamRefused
from controlplane._server import ControlPlane, Settings
from controlplane.ca import (
    AuthenticationError,
    AuthenticatorUnavailable,
    BootstrapTokens,
    CallerIdentity,
    OwnTokensFirst,
    TokenReviewAuthenticator,
)
from tests._tools import require_tool
from tests.controlplane._fake_kube import FakeKubeApiServer
from wasmhost.security import (
    GrpcCertificateClient,
    SigningError,
    SpiffeId,
    build_csr,
    generate_key,
    spiffe_id_of,
)

try:
    import kubernetes

    from controlplane._kube import token_reviewer
except ImportError:  # reported by the fixture: skipped, or failed under CI=true
    kubernetes = None

SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3ZWIifQ.c2ln"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def apiserver() -> Iterator[tuple[FakeKubeApiServer, Any]]:
    """The fake API server and a real TokenReview poster pointed at it."""
    require_tool("kubernetes", lookup=lambda: kubernetes.__file__ if kubernetes else None,
                 hint="pip install kubernetes (the Python client)")
    fake = FakeKubeApiServer().start()
    configuration = kubernetes.client.Configuration()
    configuration.host = fake.url
    try:
        yield fake, token_reviewer(kubernetes.client.ApiClient(configuration))
    finally:
        fake.stop()


def test_a_service_account_token_is_its_namespace_and_account(apiserver: tuple[FakeKubeApiServer, Any]) -> None:
    fake, review = apiserver
    fake.issue_service_account_token(SA_TOKEN, "shop", "web")
    assert TokenReviewAuthenticator(review).authenticate(SA_TOKEN) == CallerIdentity("shop", "web")
    [sent] = fake.token_reviews
    assert sent["kind"] == "TokenReview" and sent["apiVersion"] == "authentication.k8s.io/v1"
    assert sent["spec"] == {"token": SA_TOKEN, "audiences": ["istio-ca"]}


def test_unknown_token_or_other_audience_is_refused_not_unavailable(
        apiserver: tuple[FakeKubeApiServer, Any]) -> None:
    fake, review = apiserver
    fake.issue_service_account_token("kubectl-token", "shop", "web", audiences=["https://kubernetes.default.svc"])
    auth = TokenReviewAuthenticator(review)
    for token, reason in (("never-issued", "token lookup failed"), ("kubectl-token", "audiences")):
        with pytest.raises(AuthenticationError, match=reason) as refused:
            auth.authenticate(token)
        assert not isinstance(refused.value, AuthenticatorUnavailable)


def test_api_server_errors_are_unavailable_and_never_cached(apiserver: tuple[FakeKubeApiServer, Any]) -> None:
    fake, review = apiserver
    fake.issue_service_account_token(SA_TOKEN, "shop", "web")
    fake.fail_token_reviews(500, 503)
    auth = TokenReviewAuthenticator(review)
    for _ in range(2):
        with pytest.raises(AuthenticatorUnavailable, match="token review unavailable"):
            auth.authenticate(SA_TOKEN)
    assert auth.authenticate(SA_TOKEN) == CallerIdentity("shop", "web")
    assert len(fake.token_reviews) == 3


def test_an_answer_without_a_status_object_is_unavailable() -> None:
    with pytest.raises(AuthenticatorUnavailable, match="no status object"):
        TokenReviewAuthenticator(lambda body: {"status": "yes"}).authenticate(SA_TOKEN)


def test_verdicts_are_cached_briefly_refusals_shorter(apiserver: tuple[FakeKubeApiServer, Any]) -> None:
    fake, review = apiserver
    fake.issue_service_account_token(SA_TOKEN, "shop", "web")
    clock = Clock()
    auth = TokenReviewAuthenticator(review, accept_ttl=60, refuse_ttl=5, clock=clock)
    for _ in range(3):
        assert auth.authenticate(SA_TOKEN) == CallerIdentity("shop", "web")
        with pytest.raises(AuthenticationError):
            auth.authenticate("forged")
    assert auth.reviews == 2 and len(fake.token_reviews) == 2
    clock.now += 6  # the refusal expired, the acceptance did not
    auth.authenticate(SA_TOKEN)
    with pytest.raises(AuthenticationError):
        auth.authenticate("forged")
    assert auth.reviews == 3
    clock.now += 60
    auth.authenticate(SA_TOKEN)
    assert auth.reviews == 4


def test_the_cache_is_bounded_oldest_out_first() -> None:
    asked: list[str] = []

    def review(body: Any) -> dict[str, Any]:
        token = body["spec"]["token"]
        asked.append(token)
        return {"status": {"authenticated": True, "user": {"username": f"system:serviceaccount:ns:{token}"}}}

    auth = TokenReviewAuthenticator(review, max_entries=2)
    for token in ("a", "b", "a", "c", "a", "b"):
        assert auth.authenticate(token) == CallerIdentity("ns", token)
    assert asked == ["a", "b", "c", "b"]  # "a" was used recently, so "b" made room for "c"
    with pytest.raises(ValueError, match="max_entries"):
        TokenReviewAuthenticator(review, max_entries=0)


def test_own_tokens_are_checked_locally_others_by_token_review() -> None:
    asked: list[str] = []

    def review(body: Any) -> dict[str, Any]:
        asked.append(body["spec"]["token"])
        return {"status": {"authenticated": True, "user": {"username": "system:serviceaccount:shop:web"}}}

    tokens = BootstrapTokens(b"k" * 32)
    auth = OwnTokensFirst(tokens, TokenReviewAuthenticator(review))
    assert auth.authenticate(tokens.issue("demo", "cart")) == CallerIdentity("demo", "cart")
    with pytest.raises(AuthenticationError, match="signature"):
        auth.authenticate(BootstrapTokens(b"x" * 32).issue("demo", "cart"))
    assert asked == []  # a bootstrap token never leaves the control plane
    assert auth.authenticate(SA_TOKEN) == CallerIdentity("shop", "web")
    assert asked == [SA_TOKEN]


def test_xds_stream_identity_from_a_service_account_token(tmp_path: Path,
                                                          apiserver: tuple[FakeKubeApiServer, Any]) -> None:
    fake, review = apiserver
    fake.issue_service_account_token(SA_TOKEN, "shop", "web")
    runtime = MeshSecurity(SecuritySettings(tmp_path / "ca", secure_port=0))
    bearer = (("authorization", f"Bearer {SA_TOKEN}"),)
    with pytest.raises(StreamRefused):  # without a Kubernetes source only our own tokens count
        runtime.identify(bearer, True, "shop", "web")
    runtime.accept_service_account_tokens(review)
    assert runtime.identify(bearer, True, "shop", "web") == SpiffeId("cluster.local", "shop", "web")
    with pytest.raises(StreamRefused) as other:
        runtime.identify(bearer, True, "shop", "admin")
    assert other.value.code == grpc.StatusCode.PERMISSION_DENIED
    fake.fail_token_reviews(500)
    with pytest.raises(StreamRefused) as down:
        runtime.identify((("authorization", "Bearer eyJ.not-cached.yet"),), True, "shop", "web")
    assert down.value.code == grpc.StatusCode.UNAVAILABLE


def test_csr_on_the_secure_port_with_a_service_account_token(tmp_path: Path,
                                                             apiserver: tuple[FakeKubeApiServer, Any]) -> None:
    fake, review = apiserver
    fake.issue_service_account_token(SA_TOKEN, "shop", "web")
    web, admin = SpiffeId("cluster.local", "shop", "web"), SpiffeId("cluster.local", "shop", "admin")

    async def sign(address: str, roots: bytes, token: str, identity: SpiffeId) -> Any:
        client = GrpcCertificateClient(address, ca_roots_pem=roots, token=lambda: token)
        try:
            return await client.sign(build_csr(generate_key(), identity), 3600)
        except SigningError as err:
            return err
        finally:
            await client.close()

    async def scenario() -> list[Any]:
        plane = ControlPlane(settings=Settings(xds_port=0, monitoring_port=0,
                                               security=SecuritySettings(tmp_path / "ca", secure_port=0)))
        await plane.start()
        try:
            assert plane.security is not None
            plane.security.accept_service_account_tokens(review)
            address, roots = f"127.0.0.1:{plane.secure_port}", plane.security.ca.trust_bundle_pem().encode()
            answers = [await sign(address, roots, SA_TOKEN, web), await sign(address, roots, SA_TOKEN, admin)]
            fake.fail_token_reviews(503)
            answers.append(await sign(address, roots, "eyJ.other.token", web))
            answers.append(await sign(address, roots, "never-issued", web))
            answers.append(await sign(address, roots, plane.security.tokens.issue("shop", "web"), web))
            return answers
        finally:
            await plane.stop()

    signed, wrong_identity, api_down, unknown, own_token = asyncio.run(scenario())
    assert spiffe_id_of(x509.load_pem_x509_certificate(signed.cert_chain[0].encode())) == web
    assert isinstance(wrong_identity, SigningError) and "PERMISSION_DENIED" in str(wrong_identity)
    assert not wrong_identity.retryable
    assert isinstance(api_down, SigningError) and "UNAVAILABLE" in str(api_down) and api_down.retryable
    assert isinstance(unknown, SigningError) and "UNAUTHENTICATED" in str(unknown) and not unknown.retryable
    assert spiffe_id_of(x509.load_pem_x509_certificate(own_token.cert_chain[0].encode())) == web
    assert len(fake.token_reviews) == 3  # the accepted token was reviewed once; our own token never
