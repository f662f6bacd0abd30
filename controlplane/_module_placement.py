"""Which remote modules the mesh names, and what proxies are told about each (sans-io).

A *slot* is one module named by one resource: a WasmPlugin's `url`, or a Wasm filter with a
`code.remote` source inside an EnvoyFilter patch (HTTP_FILTER, NETWORK_FILTER or
EXTENSION_CONFIG values). `file://` modules are not slots: the proxy reads them itself.

At each push the resolver hands generation a `ModulePlacements`: per slot either `Served`
(a verified module in the control plane's cache) or `Withheld` (none verified yet). A served
module reaches proxies without the registry pull secret, which no proxy needs any more, in
one of two deliveries: `inline` — the verified bytes themselves in `code.local.inline_bytes`
(what Istio's agent achieves by rewriting to a local file; real Envoy hot-reloads it) — or
`remote` — a `code.remote` on the control plane's module endpoint, fetched through the
`wasmesh-modules` cluster with the sha256 of the verified bytes, which Envoy checks natively.
Over HTTPS (once the mesh has a CA) that cluster validates the endpoint's mesh certificate.
Either way an `oci://` module carries its signature material for wasmesh sidecars to re-verify
(a `host_env_keys` entry no host defines; see `wasmhost.sidecar._module_provenance`). A withheld module applies the plugin's fail strategy the way Istio's agent
does: FAIL_CLOSE puts a deny-all RBAC filter in its place, FAIL_OPEN an RBAC filter without
rules (the plugin is simply absent). A WasmPlugin still being resolved for the first time
is left out of ECDS: a proxy keeps its current listener until the module arrives.
Slots in namespaces that use `direct` distribution are absent and render as istiod does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf.message import Message

from controlplane._envoyfilter import VALUE_TYPES, Patch, check_patch
from controlplane._mesh import Mesh
from controlplane._module_tls import ModuleTls
from controlplane._protos import (
    RBAC_HTTP_TYPE,
    RBAC_NETWORK_TYPE,
    WASM_HTTP_TYPE,
    WASM_NETWORK_TYPE,
    ProtoError,
    from_dict,
    message_class,
    pack,
    to_dict,
    unpack,
)
from controlplane._resources import Resource, ResourceKey
from controlplane._wasm import (
    PULL_POLICY_ENV,
    PULL_SECRET_ENV,
    RESOURCE_VERSION_ENV,
    extension_config,
    extension_name,
)
from wasmhost.sidecar._module_provenance import CARRIER as PROVENANCE_CARRIER

MODULE_CLUSTER = "wasmesh-modules"
MODULE_PATH = "/modules/sha256/"
AGENT_ENV = frozenset({PULL_POLICY_ENV, PULL_SECRET_ENV, RESOURCE_VERSION_ENV})
_WASM_TYPES = {WASM_HTTP_TYPE: False, WASM_NETWORK_TYPE: True}
_PATCHED_KINDS = ("HTTP_FILTER", "NETWORK_FILTER", "EXTENSION_CONFIG")


@dataclass(frozen=True)
class ModuleSlot:
    """One module one resource names, with everything its resolution depends on."""

    key: str
    owner: ResourceKey
    name: str  # the filter / extension config name proxies see
    url: str
    sha256: str | None = None
    pull_policy: str = ""
    pull_secret: str | None = None
    resource_version: str = ""
    fail_open: bool = False
    # the PluginConfig as proxies would get it apart from the module (JSON text, `paired_config`):
    # a module and the configuration it was verified with reach proxies together
    config: str = field(default="", compare=False)

    @property
    def namespace(self) -> str:
        return self.owner.namespace

    @property
    def always(self) -> bool:
        """Whether the source must be asked again (Istio: `Always`, or unset with an OCI `:latest`)."""
        if self.pull_policy == "Always":
            return True
        if self.pull_policy not in ("", "UNSPECIFIED_POLICY"):
            return False
        url = self.url.split("://", 1)[-1]
        if self.url.startswith(("http://", "https://")) or "@" in url:
            return False
        last = url.rsplit("/", 1)[-1]
        return ":" not in last or last.rsplit(":", 1)[1] == "latest"

    def fingerprint(self) -> tuple[Any, ...]:
        """Changes exactly when the slot must be resolved again."""
        return (self.url, self.sha256, self.pull_policy, self.pull_secret,
                self.resource_version if self.always else "")


@dataclass(frozen=True)
class Served:
    sha256: str
    # the carrier of its signature material (`wasmhost.sidecar._module_provenance`); it vouches for
    # these very bytes, so two placements of the same bytes are the same placement
    provenance: str = field(default="", compare=False)
    # the PluginConfig (`ModuleSlot.config`) that goes with these bytes: a last good module keeps
    # the configuration it ran with, never the configuration of a module that was refused
    config: str = field(default="", compare=False)


@dataclass(frozen=True)
class Withheld:
    reason: str
    pending: bool = False  # never resolved yet (as opposed to refused)


Placement = Served | Withheld


# ---- slots ------------------------------------------------------------------------------------------
def module_slots(mesh: Mesh, secrets: Mapping[str, str]) -> list[ModuleSlot]:
    """Every remote module the mesh's WasmPlugins and EnvoyFilters name."""
    slots = [_plugin_slot(p, secrets) for p in mesh.of_kind("WasmPlugin")]
    out = [s for s in slots if s is not None]
    for envoy_filter in mesh.of_kind("EnvoyFilter"):
        out.extend(_filter_slots(envoy_filter))
    return out


def plugin_slot_key(plugin: Resource) -> str:
    return str(plugin.key)


def _plugin_slot(plugin: Resource, secrets: Mapping[str, str]) -> ModuleSlot | None:
    url = str(plugin.spec.get("url") or "")
    if not url or url.startswith("file://"):
        return None
    secret_name = plugin.spec.get("imagePullSecret")
    secret = secrets.get(f"{plugin.namespace}/{secret_name}") if secret_name else None
    rendered = extension_config(plugin)
    config = paired_config(rendered["typed_config"]["config"]) if rendered is not None else ""
    return ModuleSlot(plugin_slot_key(plugin), plugin.key, extension_name(plugin), url,
                      str(plugin.spec.get("sha256") or "") or None, str(plugin.spec.get("imagePullPolicy") or ""),
                      secret or None, plugin.resource_version, plugin.spec.get("failStrategy") == "FAIL_OPEN",
                      config)


def paired_config(plugin_config: Mapping[str, Any]) -> str:
    """A PluginConfig without its module and the pull settings only the agent reads, as JSON text."""
    config = json.loads(json.dumps(plugin_config))
    vm_config = config.get("vm_config") or {}
    vm_config.pop("code", None)
    values = (vm_config.get("environment_variables") or {}).get("key_values") or {}
    for name in AGENT_ENV:
        values.pop(name, None)
    return json.dumps(config, separators=(",", ":"), sort_keys=True)


def _filter_slots(envoy_filter: Resource) -> Iterable[ModuleSlot]:
    for patch in envoy_filter.spec.get("configPatches") or []:
        value = (patch.get("patch") or {}).get("value")
        if patch.get("applyTo") not in _PATCHED_KINDS or not value or check_patch(patch):
            continue
        try:
            message = from_dict(VALUE_TYPES[patch["applyTo"]], value)
        except ProtoError:
            continue  # validation reports it; the patch is never applied
        found = _remote_wasm(message)
        if found is None:
            continue
        config, _network = found
        remote = config.vm_config.code.remote
        name = str(getattr(message, "name", ""))
        yield ModuleSlot(f"{envoy_filter.key}/{name}", envoy_filter.key, name, remote.http_uri.uri,
                         remote.sha256 if remote.sha256 not in ("", "nil") else None,
                         fail_open=_fails_open(config), resource_version=envoy_filter.resource_version,
                         config=paired_config(to_dict(config)))


def _remote_wasm(value: Message) -> tuple[Any, bool] | None:
    """The PluginConfig of a Wasm filter value whose module is remote, and whether it is a network filter."""
    typed_config = getattr(value, "typed_config", None)
    if typed_config is None or typed_config.type_url not in _WASM_TYPES:
        return None
    try:
        wasm = unpack(typed_config)
    except ProtoError:
        return None
    config = wasm.config
    if config.WhichOneof("vm") != "vm_config" or config.vm_config.code.WhichOneof("specifier") != "remote":
        return None
    url = config.vm_config.code.remote.http_uri.uri
    if not url or url.startswith("file://"):
        return None
    return config, _WASM_TYPES[typed_config.type_url]


def _fails_open(config: Any) -> bool:
    return bool(config.fail_open) or config.failure_policy == 2  # FailurePolicy.FAIL_OPEN


# ---- rendering --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModulePlacements:
    """The module decision for every slot at one push; slots not listed render as istiod does."""

    host: str
    port: int
    slots: Mapping[str, Placement]
    fetch_timeout: str = "30s"
    inline: Mapping[str, bytes] = field(default_factory=dict)  # sha256 -> bytes, for inline delivery
    tls: ModuleTls | None = None  # the endpoint speaks HTTPS with a mesh CA certificate (`_module_tls`)

    @property
    def serves_any(self) -> bool:
        """Whether some proxy fetches from the module endpoint (and so needs its cluster)."""
        return any(isinstance(p, Served) and p.sha256 not in self.inline for p in self.slots.values())

    def url(self, sha256: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{MODULE_PATH}{sha256}"

    def cluster(self) -> dict[str, Any]:
        """The cluster through which proxies fetch modules from the control plane."""
        kind = "STATIC" if self.host.replace(".", "").isdigit() or ":" in self.host else "STRICT_DNS"
        cluster = {"name": MODULE_CLUSTER, "type": kind, "connect_timeout": "1s",
                   "load_assignment": {"cluster_name": MODULE_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                       "address": {"socket_address": {"address": self.host, "port_value": self.port}}}}]}]}}
        if self.tls is not None:
            cluster["transport_socket"] = self.tls.transport_socket()
        return cluster

    def extension(self, slot_key: str, rendered: dict[str, Any], network: bool, fail_open: bool,
                  ) -> dict[str, Any] | None:
        """A WasmPlugin's TypedExtensionConfig (Envoy JSON) as proxies should get it; None leaves it out."""
        placement = self.slots.get(slot_key)
        if placement is None:
            return rendered
        if isinstance(placement, Served):
            config = json.loads(json.dumps(rendered))
            self._serve(config["typed_config"]["config"], placement)
            return config
        if placement.pending:
            return None
        return {"name": rendered["name"], "typed_config": fallback_filter(rendered["name"], network, fail_open)}

    def patches(self, patches: list[Patch]) -> list[Patch]:
        """EnvoyFilter patches with their remote Wasm modules placed the same way."""
        return [self._patch(p) for p in patches]

    def _patch(self, patch: Patch) -> Patch:
        if patch.apply_to not in _PATCHED_KINDS or patch.value is None:
            return patch
        found = _remote_wasm(patch.value)
        if found is None:
            return patch
        config, network = found
        name = str(getattr(patch.value, "name", ""))
        placement = self.slots.get(f"{patch.source}/{name}")
        if placement is None:
            return patch
        value = type(patch.value)()
        value.CopyFrom(patch.value)
        wasm = unpack(patch.value.typed_config)
        if isinstance(placement, Served):
            as_dict = to_dict(wasm)
            self._serve(as_dict["config"], placement)
            replacement = from_dict(type(wasm), as_dict)
        else:
            rbac = fallback_filter(name, network, _fails_open(config))
            replacement = from_dict(message_class(rbac["@type"]), {k: v for k, v in rbac.items() if k != "@type"})
        value.typed_config.CopyFrom(pack(replacement))
        return replace(patch, value=value)

    def _serve(self, plugin_config: dict[str, Any], served: Served) -> None:
        sha256 = served.sha256
        if served.config:
            code = (plugin_config.get("vm_config") or {}).get("code")
            plugin_config.clear()
            plugin_config.update(json.loads(served.config))
            plugin_config.setdefault("vm_config", {})["code"] = code
        vm_config = plugin_config["vm_config"]
        module = self.inline.get(sha256)
        if module is not None:
            vm_config["code"] = {"local": {"inline_bytes": base64.b64encode(module).decode()}}
        else:
            vm_config["code"] = {"remote": {
                "http_uri": {"uri": self.url(sha256), "cluster": MODULE_CLUSTER, "timeout": self.fetch_timeout},
                "sha256": sha256, "retry_policy": {"num_retries": 3}}}
        env = vm_config.get("environment_variables") or {}
        values = {k: v for k, v in (env.get("key_values") or {}).items() if k not in AGENT_ENV}
        if values:
            env["key_values"] = values
        else:
            env.pop("key_values", None)
        host_keys = [k for k in env.get("host_env_keys") or [] if not k.startswith(PROVENANCE_CARRIER)]
        if served.provenance:
            host_keys.append(served.provenance)  # a name no host defines: Envoy passes nothing to the module
        if host_keys:
            env["host_env_keys"] = host_keys
        else:
            env.pop("host_env_keys", None)
        if env:
            vm_config["environment_variables"] = env
        else:
            vm_config.pop("environment_variables", None)


def fallback_filter(name: str, network: bool, fail_open: bool) -> dict[str, Any]:
    """What stands in for a plugin without a verified module: Istio's deny-all or a no-op RBAC filter."""
    if network:
        config: dict[str, Any] = {"@type": RBAC_NETWORK_TYPE, "stat_prefix": f"wasm_{name}".replace(".", "_")}
    else:
        config = {"@type": RBAC_HTTP_TYPE}
    if not fail_open:
        config["rules"] = {}  # ALLOW with no policy matches nothing: every request is denied
    return config


__all__ = ["AGENT_ENV", "MODULE_CLUSTER", "MODULE_PATH", "ModulePlacements", "ModuleSlot", "Placement", "Served",
           "Withheld", "fallback_filter", "module_slots", "paired_config", "plugin_slot_key"]
