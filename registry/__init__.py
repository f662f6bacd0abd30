"""OCI registry, client and module signing for wasmesh.

Publishers push signed ``.wasm`` modules here (or to any OCI registry); the sidecar's
module agent and the control plane pull and verify them through this package. It stands
alone: it imports nothing from ``wasmhost``, ``controlplane`` or ``sdk``.

- server: ``Storage`` (content-addressed, on disk) + ``RegistryApp`` (the sans-io OCI
  Distribution API v2) + ``RegistryServer`` (asyncio HTTP edge), ``collect_garbage``;
- auth: ``PasswordFile`` (htpasswd), ``AccessPolicy``, ``TokenIssuer``, ``Authenticator``.
"""

from ._api import FileBody, RegistryApp, Request, Response
from ._auth import AccessPolicy, AccessRule, Authenticator, Scope, TokenIssuer
from ._digest import Digest
from ._errors import RegistryError
from ._gc import GcReport, collect_garbage
from ._manifest import Descriptor, Manifest, parse_manifest
from ._passwords import PasswordFile, PasswordFileError, add_user, hash_password
from ._reference import Reference
from ._server import RegistryServer, serve, tls_context
from ._storage import Storage

__all__ = [
    "AccessPolicy", "AccessRule", "Authenticator", "Descriptor", "Digest", "FileBody", "GcReport", "Manifest",
    "PasswordFile", "PasswordFileError", "Reference", "RegistryApp", "RegistryError", "RegistryServer",
    "Request", "Response", "Scope", "Storage", "TokenIssuer", "add_user", "collect_garbage", "hash_password",
    "parse_manifest", "serve", "tls_context",
]
