"""The sidecar's module agent: fetch, verify and cache Wasm modules named by plugin URLs.

Sits between plugin configuration (WasmPlugin / ECDS ``url``, ``sha256``,
``imagePullPolicy``, ``imagePullSecret``) and the VM: it resolves ``oci://``,
``http(s)://`` and ``file://`` sources (``http(s)`` through the cluster ECDS names, with
its TLS settings, when the request carries a ``ClusterTransport``), enforces the digest pin
and the trust policy (through ``registry.verify_module``) and hands back a module file on
disk. The sidecar's Wasm filter asks it for ``code.remote`` modules and applies the
plugin's fail strategy to a ``FetchError``.
"""

from ._agent import ModuleAgent, ModuleStatus
from ._fetch import FetchedModule, FetchError, fetch_file, fetch_http, fetch_oci, unwrap
from ._source import ModuleRequest, ModuleSource, PullPolicy
from ._store import CachedModule, ModuleStore
from ._transport import ClusterTransport

__all__ = [
    "CachedModule", "ClusterTransport", "FetchError", "FetchedModule", "ModuleAgent", "ModuleRequest", "ModuleSource", "ModuleStatus",
    "ModuleStore", "PullPolicy", "fetch_file", "fetch_http", "fetch_oci", "unwrap",
]
