"""Who is asking for a certificate: bootstrap credentials and the authenticator seam.

The CSR service calls ``CallerAuthenticator.authenticate(token)`` with the bearer token from
the request metadata and signs only for the identity it returns. Two implementations:

- ``BootstrapTokens``: per-workload tokens the control plane issues for the local demo
  (``v1.<payload>.<hmac>``: base64url JSON with ns, sa, aud, exp; HMAC-SHA256 over the
  payload with a secret only the control plane holds).
- ``TokenReviewAuthenticator``: a Kubernetes service-account token, checked by posting a
  ``TokenReview`` through a caller-supplied function (the Kubernetes client lives elsewhere).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

TOKEN_AUDIENCE = "wasmesh-ca"
_VERSION = "v1"


class AuthenticationError(Exception):
    """The caller's credential was refused; the message is safe to send back."""


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


class TokenReviewAuthenticator:
    """Checks a Kubernetes service-account token with the API server's TokenReview.

    ``review`` posts the given TokenReview object and returns the API server's answer as a
    dict (e.g. a thin wrapper over ``AuthenticationV1Api.create_token_review``); it may raise
    any exception, which is reported as an authentication failure.
    """

    def __init__(
        self, review: Callable[[Mapping[str, Any]], Mapping[str, Any]], *, audiences: Sequence[str] = ("istio-ca",)
    ) -> None:
        self._review = review
        self.audiences = list(audiences)

    def request_body(self, token: str) -> dict[str, Any]:
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": self.audiences},
        }

    def authenticate(self, token: str) -> CallerIdentity:
        try:
            answer = self._review(self.request_body(token))
        except Exception as exc:  # noqa: BLE001 - any transport failure is a refusal, reported plainly
            raise AuthenticationError(f"token review failed: {exc}") from exc
        status = answer.get("status") or {}
        if not status.get("authenticated"):
            raise AuthenticationError(f"token review: not authenticated ({status.get('error', 'no reason given')})")
        if self.audiences and not set(status.get("audiences") or self.audiences) & set(self.audiences):
            raise AuthenticationError("token review: the token is not for any of the CA's audiences")
        username = str((status.get("user") or {}).get("username", ""))
        if not username.startswith(_SA_PREFIX) or username.count(":") != 3:
            raise AuthenticationError(f"token review: {username!r} is not a service account")
        namespace, account = username[len(_SA_PREFIX):].split(":")
        return CallerIdentity(namespace, account)
