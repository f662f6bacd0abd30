"""wasmhost.security.jwt: RequestAuthentication (JWT) for the sidecar's authn filter.

Where it sits: before authorization in the filter chain. ``parse_request_authentication``
reads the manifests that apply to a workload; ``JwtAuthenticator.authenticate`` verifies
the request's tokens (with PyJWT; keys from inline JWKS or ``jwksUri`` through ``JwksCache``)
and returns a ``JwtOutcome``: 401 for an invalid token, otherwise the ``RequestAuth`` that
becomes ``request.auth.*`` in ``wasmhost.security.authz``, plus header changes.
"""

from ._authn import JwtAuthenticator, JwtOutcome, extract_tokens
from ._jwks import JwksCache, JwksError, fetch_jwks, parse_jwks
from ._rules import HeaderLocation, JwtRule, JwtRuleError, parse_jwt_rule, parse_request_authentication

__all__ = [
    "HeaderLocation", "JwksCache", "JwksError", "JwtAuthenticator", "JwtOutcome", "JwtRule", "JwtRuleError",
    "extract_tokens", "fetch_jwks", "parse_jwks", "parse_jwt_rule", "parse_request_authentication",
]
