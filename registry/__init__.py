"""OCI registry, client and module signing for wasmesh.

Publishers push signed ``.wasm`` modules here (or to any OCI registry); the sidecar's
module agent and the control plane pull and verify them through this package. It stands
alone: it imports nothing from ``wasmhost``, ``controlplane`` or ``sdk``.

- server: ``Storage`` (content-addressed, on disk) + ``RegistryApp`` (the sans-io OCI
  Distribution API v2) + ``RegistryServer`` (asyncio HTTP edge), ``collect_garbage``;
  auth by ``PasswordFile`` (htpasswd), ``AccessPolicy`` and ``TokenIssuer``;
- client: ``RegistryClient`` (any registry), ``CredentialStore`` (docker config.json),
  ``push_module`` / ``pull_module`` in the Istio image formats (``build_artifact``);
- signing: cosign-format ``sign_image`` / ``verify_image`` with P-256 keys, Sigstore
  bundles (``attach_bundle``, ``verify_bundle``), ``TrustPolicy`` and ``verify_module``,
  the call that stands between a registry and a running module.
"""

from ._api import FileBody, RegistryApp, Request, Response
from ._auth import AccessPolicy, AccessRule, Authenticator, Scope, TokenIssuer
from ._client import RegistryClient
from ._credentials import Credentials, CredentialsError, CredentialStore, default_config_path
from ._digest import Digest
from ._errors import RegistryError
from ._gc import GcReport, collect_garbage
from ._keys import (
    KeyFileError,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    load_public_key_file,
)
from ._manifest import Descriptor, Manifest, parse_manifest
from ._modules import PulledModule, client_for, describe, pull_module, push_artifact, push_module, resolve
from ._passwords import PasswordFile, PasswordFileError, add_user, hash_password
from ._reference import Reference
from ._server import RegistryServer, serve, tls_context
from ._signing import Signer, SignResult, VerificationError, find_signatures, sign_image, verify_image
from ._sigstore import SigstoreIdentity, attach_bundle, find_bundles, verify_bundle
from ._storage import Storage
from ._trust import TrustDecision, TrustPolicy, TrustPolicyError, TrustRule
from ._verify import VerifiedModule, verify_module
from ._wasm import VARIANTS, Artifact, ModuleFormatError, build_artifact, extract_module, validate_module

__all__ = [
    "VARIANTS", "AccessPolicy", "AccessRule", "Artifact", "Authenticator", "CredentialStore", "Credentials",
    "CredentialsError", "Descriptor", "Digest", "FileBody", "GcReport", "KeyFileError", "Manifest",
    "ModuleFormatError", "PasswordFile", "PasswordFileError", "PulledModule", "Reference", "RegistryApp",
    "RegistryClient", "RegistryError", "RegistryServer", "Request", "Response", "Scope", "SignResult", "Signer",
    "SigstoreIdentity", "Storage", "TokenIssuer", "TrustDecision", "TrustPolicy", "TrustPolicyError", "TrustRule",
    "VerificationError", "VerifiedModule", "add_user", "attach_bundle", "build_artifact", "client_for",
    "collect_garbage", "default_config_path", "describe", "extract_module", "find_bundles", "find_signatures",
    "generate_keypair", "hash_password", "key_id", "load_private_key", "load_public_key", "load_public_key_file",
    "parse_manifest", "pull_module", "push_artifact", "push_module", "resolve", "serve", "sign_image",
    "tls_context", "validate_module", "verify_bundle", "verify_image", "verify_module",
]
