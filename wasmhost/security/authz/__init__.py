"""wasmhost.security.authz: Istio AuthorizationPolicy, evaluated by the sidecar.

Where it sits: the control plane selects the policies for a workload; the sidecar's RBAC
filter builds an ``AuthorizationEngine`` from them (``parse_policy`` on each manifest) and,
per request, fills an ``AuthzRequest`` (peer identity from mTLS, ``request.auth`` from
``wasmhost.security.jwt``) and calls ``authorize`` (or ``engine.check`` when no CUSTOM
policy exists). The core is sans-io; only the ext_authz providers do I/O.
"""

from ._engine import AuthorizationEngine, AuthzDecision, Evaluation
from ._extauthz import (
    Authorization,
    ExtAuthzProvider,
    ExtAuthzResult,
    GrpcExtAuthz,
    HttpExtAuthz,
    authorize,
    check_request_for,
)
from ._match import PathPattern, StringPattern
from ._policy import Action, AuthorizationPolicy, PolicyError, Rule, parse_policy
from ._request import AuthzRequest, RequestAuth

__all__ = [
    "Action", "Authorization", "AuthorizationEngine", "AuthorizationPolicy", "AuthzDecision", "AuthzRequest",
    "Evaluation", "ExtAuthzProvider", "ExtAuthzResult", "GrpcExtAuthz", "HttpExtAuthz", "PathPattern",
    "PolicyError", "RequestAuth", "Rule", "StringPattern", "authorize", "check_request_for", "parse_policy",
]
