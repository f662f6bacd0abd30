"""WasmPlugin → ECDS, the way istiod renders it.

Each selected plugin becomes an HTTP (or network) filter named `<namespace>.<name>` whose
configuration is fetched over ECDS (`config_discovery` from ADS, `initial_fetch_timeout: 0s`
so a listener never serves without its security filters), and one `TypedExtensionConfig`
of that name holding the Wasm filter: `pluginName` → `root_id`, `pluginConfig` → JSON in a
StringValue, `failStrategy` → `failure_policy`, `vmConfig.env` → environment variables, and
the module location: `file://` as `code.local.filename`, anything else as `code.remote` plus
the ISTIO_META_WASM_* variables the sidecar's module agent reads (pull policy, pull secret,
resource version) and strips before the module sees them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from controlplane._mesh import Mesh
from controlplane._protos import (
    RBAC_HTTP_TYPE,
    RBAC_NETWORK_TYPE,
    WASM_HTTP_TYPE,
    WASM_NETWORK_TYPE,
    typed,
)
from controlplane._proxies import Proxy, labels_match
from controlplane._resources import Resource

if TYPE_CHECKING:
    from controlplane._module_placement import ModulePlacements

PHASES = ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE")
CLIENT, SERVER = "CLIENT", "SERVER"
PULL_POLICY_ENV = "ISTIO_META_WASM_IMAGE_PULL_POLICY"
PULL_SECRET_ENV = "ISTIO_META_WASM_IMAGE_PULL_SECRET"
RESOURCE_VERSION_ENV = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"
_FAILURE_POLICY = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}
MIN_INT32 = -(2**31)


def extension_name(plugin: Resource) -> str:
    return f"{plugin.namespace}.{plugin.name}"


def is_network(plugin: Resource) -> bool:
    return plugin.spec.get("type") == "NETWORK"


def _targets(plugin: Resource, proxy: Proxy) -> bool:
    """targetRefs select gateways by the Gateway API labels; sidecars are not targeted (as Istio)."""
    refs = list(plugin.spec.get("targetRefs") or []) + ([plugin.spec["targetRef"]] if plugin.spec.get("targetRef") else [])
    for ref in refs:
        kind, name = ref.get("kind"), ref.get("name")
        if kind == "Gateway" and proxy.labels.get("gateway.networking.k8s.io/gateway-name") == name:
            return True
        if kind == "GatewayClass" and proxy.labels.get("gateway.networking.k8s.io/gateway-class-name") == name:
            return True
    return False


def _matches_traffic(plugin: Resource, mode: str, port: int) -> bool:
    matches = plugin.spec.get("match") or []
    if not matches:
        return True
    for match in matches:
        wanted = match.get("mode") or "CLIENT_AND_SERVER"
        if wanted not in ("UNDEFINED", "CLIENT_AND_SERVER", mode):
            continue
        ports = [p.get("number") for p in match.get("ports") or []]
        if not ports or port in ports:
            return True
    return False


def selected_plugins(mesh: Mesh, proxy: Proxy, mode: str, port: int, network: bool = False) -> list[Resource]:
    """Plugins for one listener of `proxy`, in istiod's order: by phase, then priority (high first).

    Within a phase the order is creation time, name, namespace (stable), then a stable sort by
    descending priority with a missing priority counting as the lowest int32.
    """
    chosen = []
    for plugin in mesh.of_kind("WasmPlugin"):  # already sorted by creation time, name, namespace
        if is_network(plugin) != network:
            continue
        if plugin.namespace not in (proxy.namespace, mesh.root_namespace):
            continue
        if plugin.spec.get("targetRefs") or plugin.spec.get("targetRef"):
            if not _targets(plugin, proxy):
                continue
        elif not labels_match((plugin.spec.get("selector") or {}).get("matchLabels"), proxy.labels):
            continue
        if _matches_traffic(plugin, mode, port):
            chosen.append(plugin)
    ordered: list[Resource] = []
    for phase in PHASES:
        in_phase = [p for p in chosen if (p.spec.get("phase") or "UNSPECIFIED_PHASE") == phase]
        in_phase.sort(key=lambda p: -int(p.spec.get("priority", MIN_INT32)))
        ordered.extend(in_phase)
    return ordered


def plugins_by_phase(plugins: list[Resource]) -> dict[str, list[Resource]]:
    out: dict[str, list[Resource]] = {phase: [] for phase in PHASES}
    for plugin in plugins:
        out[plugin.spec.get("phase") or "UNSPECIFIED_PHASE"].append(plugin)
    return out


def ecds_filter(plugin: Resource) -> dict[str, Any]:
    """The filter placeholder in the HCM (or filter chain) that fetches the plugin over ECDS."""
    types = [WASM_NETWORK_TYPE, RBAC_NETWORK_TYPE] if is_network(plugin) else [WASM_HTTP_TYPE, RBAC_HTTP_TYPE]
    return {"name": extension_name(plugin), "config_discovery": {
        "config_source": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
        "type_urls": types}}


def _code(plugin: Resource, secrets: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    url = str(plugin.spec.get("url", ""))
    parsed = urlparse(url if "://" in url else f"oci://{url}")
    if parsed.scheme == "file":
        return {"local": {"filename": unquote(parsed.path)}}, {}
    if "://" not in url:
        url = f"oci://{url}"
    remote = {"http_uri": {"uri": url, "timeout": "30s", "cluster": "_"},
              "sha256": str(plugin.spec.get("sha256") or "nil")}
    env = {RESOURCE_VERSION_ENV: plugin.resource_version}
    policy = plugin.spec.get("imagePullPolicy")
    if policy and policy != "UNSPECIFIED_POLICY":
        env[PULL_POLICY_ENV] = str(policy)
    secret = plugin.spec.get("imagePullSecret")
    if secret:
        env[PULL_SECRET_ENV] = secrets.get(f"{plugin.namespace}/{secret}", "")
    return {"remote": remote}, env


def extension_config(plugin: Resource, secrets: Mapping[str, str] | None = None,
                     modules: ModulePlacements | None = None) -> dict[str, Any] | None:
    """The TypedExtensionConfig served over ECDS for one WasmPlugin (Envoy JSON shape).

    With `modules`, a remote module is placed as the control plane distributes it (its own
    verified copy, or the fail strategy's stand-in); None means the plugin waits for its module.
    """
    spec = plugin.spec
    code, agent_env = _code(plugin, secrets or {})
    key_values: dict[str, str] = {}
    host_keys: list[str] = []
    for env in (spec.get("vmConfig") or {}).get("env") or []:
        if env.get("valueFrom") == "HOST":
            host_keys.append(str(env["name"]))
        else:
            key_values[str(env["name"])] = str(env.get("value", ""))
    key_values.update(agent_env)
    vm_config: dict[str, Any] = {"runtime": "envoy.wasm.runtime.v8", "code": code}
    if key_values or host_keys:
        vm_config["environment_variables"] = {
            **({"host_env_keys": host_keys} if host_keys else {}), **({"key_values": key_values} if key_values else {})}
    config: dict[str, Any] = {"name": extension_name(plugin), "vm_config": vm_config,
                              "failure_policy": _FAILURE_POLICY[str(spec.get("failStrategy") or "FAIL_CLOSE")]}
    if spec.get("pluginName"):
        config["root_id"] = spec["pluginName"]
    if spec.get("pluginConfig"):
        text = json.dumps(spec["pluginConfig"], separators=(",", ":"), sort_keys=True)
        config["configuration"] = typed("type.googleapis.com/google.protobuf.StringValue", {"value": text})
    wasm_type = WASM_NETWORK_TYPE if is_network(plugin) else WASM_HTTP_TYPE
    rendered = {"name": extension_name(plugin), "typed_config": typed(wasm_type, {"config": config})}
    if modules is None:
        return rendered
    return modules.extension(str(plugin.key), rendered, is_network(plugin), spec.get("failStrategy") == "FAIL_OPEN")


__all__ = ["CLIENT", "PHASES", "SERVER", "ecds_filter", "extension_config", "extension_name", "plugins_by_phase",
           "selected_plugins"]
