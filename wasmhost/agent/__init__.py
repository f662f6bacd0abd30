"""The sidecar's module agent: fetch, verify and cache Wasm modules named by plugin URLs.

Sits between plugin configuration (WasmPlugin / ECDS ``url``, ``sha256``,
``imagePullPolicy``, ``imagePullSecret``) and the VM: it resolves ``oci://``,
``http(s)://`` and ``file://`` sources, enforces the digest pin and the trust policy
(through ``registry.verify_module``) and hands back a module file on disk. Not yet wired
into the sidecar; the caller applies the plugin's fail strategy to a ``FetchError``.
"""

from ._agent import ModuleAgent, ModuleStatus
from ._fetch import FetchedModule, FetchError, fetch_file, fetch_http, fetch_oci, unwrap
from ._source import ModuleRequest, ModuleSource, PullPolicy
from ._store import CachedModule, ModuleStore

__all__ = [
    "CachedModule", "FetchError", "FetchedModule", "ModuleAgent", "ModuleRequest", "ModuleSource", "ModuleStatus",
    "ModuleStore", "PullPolicy", "fetch_file", "fetch_http", "fetch_oci", "unwrap",
]
