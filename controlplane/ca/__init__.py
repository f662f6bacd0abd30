"""The control plane's certificate authority (Istio's Citadel role).

Where it sits: ``CertificateAuthority`` holds the signing material (a generated root or a
plugged-in ``cacerts`` folder) and signs short-lived SPIFFE X.509-SVIDs; ``CsrServer`` serves
``IstioCertificateService/CreateCertificate`` over gRPC+TLS on the secure xDS port to the
sidecars' identity agents (``wasmhost.security.IdentityAgent``), authenticating callers through
a ``CallerAuthenticator`` (``BootstrapTokens`` locally, ``TokenReviewAuthenticator`` on
Kubernetes, behind ``OwnTokensFirst``). ``ServingCertificate`` is the secure port's own
certificate, reissued at half its lifetime and whenever the trust bundle changes. The CA also writes ``trust-bundle.pem``, the roots every workload must trust.
"""

from ._auth import (
    TOKEN_AUDIENCE,
    AuthenticationError,
    AuthenticatorUnavailable,
    BootstrapTokens,
    CallerAuthenticator,
    CallerIdentity,
    OwnTokensFirst,
    TokenReviewAuthenticator,
)
from ._authority import (
    DEFAULT_TTL,
    MAX_TTL,
    TRUST_BUNDLE_FILE,
    CertificateAuthority,
    CsrRejected,
    IssuedCertificate,
)
from ._files import CaFilesError, SigningMaterial, generate_root, load_signing_material, save_signing_material
from ._service import SECURE_XDS_PORT, CertificateService, CsrServer, ServingCertificate

__all__ = [
    "DEFAULT_TTL", "MAX_TTL", "SECURE_XDS_PORT", "TOKEN_AUDIENCE", "TRUST_BUNDLE_FILE",
    "AuthenticationError", "AuthenticatorUnavailable", "BootstrapTokens", "CaFilesError", "CallerAuthenticator", "CallerIdentity",
    "CertificateAuthority", "CertificateService", "CsrRejected", "CsrServer", "IssuedCertificate",
    "OwnTokensFirst", "ServingCertificate", "SigningMaterial", "TokenReviewAuthenticator", "generate_root", "load_signing_material",
    "save_signing_material",
]
