"""The control plane: Istio resources in, Envoy xDS out; also home of the `wasmesh` CLI.

Flow (each step a private module with one job):

    sources (_folder, _kube) ─▶ _store ─▶ _mesh (+ _services registry, connected _proxies)
        ─▶ _generate: _listeners, _routes, _clusters, _wasm (WasmPlugin → ECDS), _grpcgen
        ─▶ _envoyfilter patches ─▶ Snapshot ─▶ _xds session (sans-io) ─▶ _ads (grpcio) ─▶ proxies

Security: `_security` runs the CA (`controlplane.ca`) and the secure port 15012 (CSR service and
xDS over TLS, bootstrap-token identities), `_sds` mints Envoy sidecars' certificates and serves
them as SDS secrets, `_mtls` (PeerAuthentication, DestinationRule TLS, auto-mTLS),
`_authz_translate` (AuthorizationPolicy → RBAC/ext_authz) and `_jwt_authn` (RequestAuthentication)
translate, `_security_filters` orders them among the Wasm plugins.

Wasm modules: `_modules` resolves every remote module the mesh names (`_module_placement`
finds them and places them into ECDS and EnvoyFilter patches), fetching and verifying each one
once (`_module_fetch`, trust and distribution per namespace from `_module_config`) into a
content-addressed cache (`_module_cache`) served to proxies by `_module_server`. `_schemas` describes the Istio kinds once; `crds/` is generated from it (`_crdgen`) and
`_validation` checks manifests against it plus istiod's semantic rules. `_server` runs the
process (debounced pushes, ADS on 15010, operator API and metrics on 15014 via `_api`);
`_bootstrap` writes what istio-agent would. Nothing here imports the sidecar's internals.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public names and the private module each lives in; imported on first use so that the CLI
# (`controlplane.cli`, which imports this package first) starts without loading gRPC and protos.
_EXPORTS = {
    "AdsClient": "_adsclient", "BootstrapOptions": "_bootstrap", "bootstrap": "_bootstrap",
    "grpc_bootstrap": "_bootstrap", "FolderSource": "_folder", "Generator": "_generate", "Snapshot": "_generate",
    "generate": "_generate", "Mesh": "_mesh", "NodeError": "_proxies", "Proxy": "_proxies",
    "proxy_from_node": "_proxies", "Resource": "_resources", "ResourceKey": "_resources", "KINDS": "_schemas",
    "Kind": "_schemas", "lookup_kind": "_schemas", "ControlPlane": "_server", "Settings": "_server",
    "ConfigStore": "_store", "Analysis": "_validation", "Diagnostic": "_validation", "analyze_paths": "_validation",
    "analyze_text": "_validation",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'controlplane' has no attribute {name!r}")
    return getattr(importlib.import_module(f"controlplane.{module}"), name)


__all__ = [
    "KINDS",
    "AdsClient",
    "Analysis",
    "BootstrapOptions",
    "ConfigStore",
    "ControlPlane",
    "Diagnostic",
    "FolderSource",
    "Generator",
    "Kind",
    "Mesh",
    "NodeError",
    "Proxy",
    "Resource",
    "ResourceKey",
    "Settings",
    "Snapshot",
    "analyze_paths",
    "analyze_text",
    "bootstrap",
    "generate",
    "grpc_bootstrap",
    "lookup_kind",
    "proxy_from_node",
]
