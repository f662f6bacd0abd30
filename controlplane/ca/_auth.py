"""Who is asking for a certificate: bootstrap credentials and the authenticator seam.

The CSR service calls ``CallerAuthenticator.authenticate(token)`` with the bearer token from
the request metadata and signs only for the identity it returns. Two implementations:

- ``BootstrapTokens``: per-workload tokens the control plane issues for the local demo
  (``v1.<payload>.<hmac>``: base64url JSON with ns, sa, aud, exp; HMAC-SHA256 over the
  payload with a secret only the control plane holds).
- ``TokenReviewAuthenticator``: a Kubernetes service-account token, checked by posting a
  ``TokenReview`` through a caller-supplied function (``controlplane._kube.token_reviewer``
  wraps the Kubernetes client). Answers are cached briefly, refusals shorter than
  acceptances; an API failure is ``AuthenticatorUnavailable`` (retryable) and never cached.
- ``OwnTokensFirst``: our bootstrap tokens are checked locally, any other bearer token goes to
  the cluster authenticator (what the control plane uses when it watches Kubernetes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

TOKEN_AUDIENCE = "wasmesh-ca"
_VERSION = "v1"


class AuthenticationError(Exception):
    """The caller's credential was refused; the message is safe to send back."""


class AuthenticatorUnavailable(AuthenticationError):
    """The credential could not be checked now (e.g. the API server failed); retrying may help."""


@dataclass(frozen=True)
class CallerIdentity:
    """The workload a credential proves: namespace and service account."""

    namespace: str
    service_account: str


class CallerAuthenticator(Protocol):
    """Turns a bearer token into the caller's identity or raises AuthenticationError."""

    def authenticate(self, token: str) -> CallerIdentity: ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BootstrapTokens:
    """Issues and checks HMAC-signed per-workload tokens (the local demo's bootstrap credential)."""

    def __init__(self, secret: bytes | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        if len(self.secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._clock = clock

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())

    def issue(self, namespace: str, service_account: str, *, ttl_seconds: int = 3600) -> str:
        body = {"ns": namespace, "sa": service_account, "aud": TOKEN_AUDIENCE, "exp": int(self._clock()) + ttl_seconds}
        payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"{_VERSION}.{payload}.{self._mac(payload)}"

    @staticmethod
    def looks_like(token: str) -> bool:
        """Whether `token` has our token's shape (a Kubernetes JWT starts with ``eyJ``, never ``v1.``)."""
        return token.startswith(f"{_VERSION}.") and token.count(".") == 2

    def authenticate(self, token: str) -> CallerIdentity:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise AuthenticationError("token: not a wasmesh bootstrap token (want v1.<payload>.<mac>)")
        _, payload, mac = parts
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise AuthenticationError("token: signature does not verify")
        try:
            body = json.loads(_unb64(payload))
            namespace, account, audience, expiry = body["ns"], body["sa"], body["aud"], body["exp"]
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthenticationError("token: payload is not the expected JSON object") from exc
        if audience != TOKEN_AUDIENCE:
            raise AuthenticationError(f"token: audience {audience!r} is not {TOKEN_AUDIENCE!r}")
        if not isinstance(expiry, int) or expiry <= self._clock():
            raise AuthenticationError("token: expired")
        if not isinstance(namespace, str) or not isinstance(account, str):
            raise AuthenticationError("token: ns and sa must be strings")
        return CallerIdentity(namespace, account)


_SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class _Verdict:
    identity: CallerIdentity | None
    refusal: str
    until: float


class TokenReviewAuthenticator:
    """Checks a Kubernetes service-account token with the API server's TokenReview.

    ``review`` posts the given TokenReview object and returns the API server's answer as a
    dict; any exception it raises means the answer is unknown (``AuthenticatorUnavailable``).
    Verdicts are cached by token digest for ``accept_ttl`` / ``refuse_ttl`` seconds, at most
    ``max_entries`` of them, so a restarting fleet does not flood the API server.
    """

    def __init__(
        self,
        review: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        *,
        audiences: Sequence[str] = ("istio-ca",),
        accept_ttl: float = 60.0,
        refuse_ttl: float = 5.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._review = review
        self.audiences = list(audiences)
        self.accept_ttl, self.refuse_ttl, self.max_entries = accept_ttl, refuse_ttl, max_entries
        self._clock = clock
        self._cache: OrderedDict[bytes, _Verdict] = OrderedDict()
        self._lock = threading.Lock()
        self.reviews = 0

    def request_body(self, token: str) -> dict[str, Any]:
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": self.audiences},
        }

    def authenticate(self, token: str) -> CallerIdentity:
        key = hashlib.sha256(token.encode()).digest()
        verdict = self._cached(key)
        if verdict is None:
            verdict = self._ask(token)
            with self._lock:
                self._cache[key] = verdict
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        if verdict.identity is None:
            raise AuthenticationError(verdict.refusal)
        return verdict.identity

    def _cached(self, key: bytes) -> _Verdict | None:
        with self._lock:
            verdict = self._cache.get(key)
            if verdict is None:
                return None
            if verdict.until <= self._clock():
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return verdict

    def _ask(self, token: str) -> _Verdict:
        self.reviews += 1
        try:
            answer = self._review(self.request_body(token))
        except Exception as exc:  # noqa: BLE001 - any API failure leaves the token unchecked: retryable
            raise AuthenticatorUnavailable(f"token review unavailable: {exc}") from exc
        if not isinstance(answer, Mapping) or not isinstance(answer.get("status") or {}, Mapping):
            raise AuthenticatorUnavailable("token review: the API server's answer has no status object")
        try:
            identity = self._identity(answer.get("status") or {})
        except AuthenticationError as refused:
            return _Verdict(None, str(refused), self._clock() + self.refuse_ttl)
        return _Verdict(identity, "", self._clock() + self.accept_ttl)

    def _identity(self, status: Mapping[str, Any]) -> CallerIdentity:
        if not status.get("authenticated"):
            raise AuthenticationError(f"token review: not authenticated ({status.get('error', 'no reason given')})")
        if self.audiences and not set(status.get("audiences") or self.audiences) & set(self.audiences):
            raise AuthenticationError("token review: the token is not for any of the CA's audiences")
        username = str((status.get("user") or {}).get("username", ""))
        if not username.startswith(_SA_PREFIX) or username.count(":") != 3:
            raise AuthenticationError(f"token review: {username!r} is not a service account")
        namespace, account = username[len(_SA_PREFIX):].split(":")
        if not namespace or not account:
            raise AuthenticationError(f"token review: {username!r} names no namespace or account")
        return CallerIdentity(namespace, account)


class OwnTokensFirst:
    """Bootstrap tokens checked locally; any other bearer token by ``cluster`` (TokenReview)."""

    def __init__(self, own: BootstrapTokens, cluster: CallerAuthenticator) -> None:
        self.own, self.cluster = own, cluster

    def authenticate(self, token: str) -> CallerIdentity:
        if BootstrapTokens.looks_like(token):
            return self.own.authenticate(token)
        return self.cluster.authenticate(token)
