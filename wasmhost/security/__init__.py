"""wasmhost.security: the sidecar's zero-trust parts, as libraries with sans-io cores.

Where it sits: the identity agent (``IdentityAgent``) obtains and renews the workload's SPIFFE
certificate from the control plane's CA over ``IstioCertificateService`` and feeds
``TlsContexts`` (``ssl.SSLContext`` for listeners and clusters) and the SDS secrets
``default``/``ROOTCA`` (``SdsServer`` serves them to a co-located Envoy).
``effective_mode`` resolves PeerAuthentication; ``SecureListener`` applies it on asyncio
sockets; ``upstream_context``/``open_mtls_connection`` do DestinationRule TLS and auto-mTLS;
``verify_peer_chain``/``peer_identity`` check a peer's identity; ``check_inbound`` runs
CUSTOM, JWT and RBAC on a request. The authorization engine and JWT authentication live in
``wasmhost.security.authz`` and ``wasmhost.security.jwt``. Nothing here imports the control plane.
"""

from ._agent import IdentityAgent
from ._certservice import (
    CERTIFICATE_SERVICE_NAME,
    CREATE_CERTIFICATE_METHOD,
    CREATE_CERTIFICATE_PATH,
    IstioCertificateRequest,
    IstioCertificateResponse,
)
from ._csr_client import (
    DEFAULT_CA_SERVER_NAME,
    TRUST_BUNDLE_METADATA,
    CertificateSigner,
    GrpcCertificateClient,
    SignedChain,
    SigningError,
)
from ._inbound import (
    PeerAuthenticationMode,
    PeerInfo,
    SecureListener,
    looks_like_tls,
    open_mtls_connection,
    sniff_tls,
)
from ._inbound_http import InboundSecurity, InboundVerdict, check_inbound
from ._peer import PeerVerificationError, verify_peer_chain
from ._peer_authn import (
    PeerAuthentication,
    PeerAuthenticationError,
    effective_mode,
    parse_peer_authentication,
)
from ._renewal import RenewalPolicy
from ._sds import (
    DEFAULT_SECRET,
    ROOT_SECRET,
    SECRET_TYPE_URL,
    certificate_secret,
    sds_secrets,
    secret_as_dict,
    trust_bundle_secret,
)
from ._sds_server import SdsServer, SdsStream, SecretSnapshot, snapshot_of
from ._spiffe import SpiffeId, SpiffeIdError, spiffe_id_of, uri_sans
from ._svid import WorkloadSvid, build_csr, certificates_pem, generate_key, load_pem_certificates
from ._tls import (
    MESH_ALPN,
    TlsContexts,
    client_context_for,
    peer_certificate,
    peer_identity,
    private_pem_file,
    server_context_for,
)
from ._upstream_tls import DestinationTlsError, UpstreamTls, auto_mtls, parse_upstream_tls, upstream_context

__all__ = [
    "CERTIFICATE_SERVICE_NAME", "CREATE_CERTIFICATE_METHOD", "CREATE_CERTIFICATE_PATH", "DEFAULT_CA_SERVER_NAME",
    "DEFAULT_SECRET", "MESH_ALPN", "ROOT_SECRET", "SECRET_TYPE_URL", "TRUST_BUNDLE_METADATA",
    "CertificateSigner", "DestinationTlsError", "GrpcCertificateClient", "IdentityAgent", "IstioCertificateRequest",
    "InboundSecurity", "InboundVerdict", "IstioCertificateResponse", "PeerAuthentication", "PeerAuthenticationError", "PeerAuthenticationMode", "PeerInfo", "PeerVerificationError", "RenewalPolicy",
    "SdsServer", "SdsStream", "SecretSnapshot", "SecureListener", "SignedChain", "SigningError", "SpiffeId", "SpiffeIdError", "TlsContexts", "UpstreamTls", "WorkloadSvid",
    "auto_mtls", "build_csr", "check_inbound", "certificate_secret", "certificates_pem", "client_context_for", "effective_mode", "generate_key",
    "load_pem_certificates", "looks_like_tls", "open_mtls_connection", "parse_peer_authentication", "parse_upstream_tls", "peer_certificate", "peer_identity", "private_pem_file",
    "sds_secrets", "secret_as_dict", "server_context_for", "snapshot_of", "sniff_tls", "spiffe_id_of", "trust_bundle_secret",
    "upstream_context", "uri_sans", "verify_peer_chain",
]
