"""The Wasm filter's configuration: Envoy's ``PluginConfig`` turned into a ``PluginSpec`` and
module bytes (local file, inline bytes, or ``remote`` fetched through the module agent and
the cluster ``http_uri`` names), with the provenance a verified module carries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import json_format, struct_pb2, wrappers_pb2

from .. import (
    FailurePolicy,
    PluginSpec,
)
from ._errors import ConfigError
from ._filter_api import (
    FilterCallbacks,
    HeadersStatus,
    HttpFilter,
)
from ._headers import HeaderMap

_LOG = logging.getLogger("wasmesh.wasm")
_T = TypeVar("_T")
_RUNTIMES = {"", "envoy.wasm.runtime.v8", "envoy.wasm.runtime.wasmtime", "envoy.wasm.runtime.wamr",
             "envoy.wasm.runtime.wavm"}
_POLICIES = {
    wasm_pb2.FailurePolicy.FAIL_RELOAD: FailurePolicy.FAIL_RELOAD,
    wasm_pb2.FailurePolicy.FAIL_CLOSED: FailurePolicy.FAIL_CLOSED,
    wasm_pb2.FailurePolicy.FAIL_OPEN: FailurePolicy.FAIL_OPEN,
}


def _configuration_bytes(value: Any, path: str) -> bytes:
    """Envoy hands StringValue/BytesValue configuration to the plugin as raw bytes."""
    if not value.type_url:
        return b""
    if value.Is(wrappers_pb2.StringValue.DESCRIPTOR):
        text = wrappers_pb2.StringValue()
        value.Unpack(text)
        return text.value.encode()
    if value.Is(wrappers_pb2.BytesValue.DESCRIPTOR):
        raw = wrappers_pb2.BytesValue()
        value.Unpack(raw)
        return bytes(raw.value)
    if value.Is(struct_pb2.Struct.DESCRIPTOR):
        data = struct_pb2.Struct()
        value.Unpack(data)
        return json_format.MessageToJson(data, indent=None).encode()
    raise ConfigError(path, f"unsupported configuration type {value.type_url!r} (use StringValue or BytesValue)")


def _module_bytes(vm: Any, path: str) -> bytes:
    code = vm.code
    which = code.WhichOneof("specifier")
    if which == "local":
        local = code.local
        kind = local.WhichOneof("specifier")
        if kind == "filename":
            try:
                return Path(local.filename).read_bytes()
            except OSError as err:
                raise ConfigError(f"{path}.code.local.filename", f"cannot read module: {err.strerror}") from None
        if kind == "inline_bytes":
            return bytes(local.inline_bytes)
        if kind == "inline_string":
            return local.inline_string.encode()
        raise ConfigError(f"{path}.code.local", f"unsupported module source {kind!r}")
    raise ConfigError(f"{path}.code", "no module given (code.local or code.remote)")


# istiod passes the pull settings to the agent in these VM env vars; they never reach the module
_AGENT_ENV = {
    "ISTIO_META_WASM_IMAGE_PULL_SECRET",
    "ISTIO_META_WASM_IMAGE_PULL_POLICY",
    "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION",
}


class ModuleFetchFailed(ConfigError):
    """The module agent could not provide the module; the plugin's fail strategy applies."""


#: plugin name → the module agent's last word on its module (shown by /config_dump)
MODULE_STATUS: dict[str, dict[str, object]] = {}
_AGENT: Any = None


def module_agent() -> Any:
    """This process's module agent (trust policy from ``WASMESH_TRUST_POLICY``, if set)."""
    global _AGENT
    if _AGENT is None:
        from registry import TrustPolicy

        from ..agent import ModuleAgent, ModuleStore
        from ._module_trust import load_trust

        policy_path = os.environ.get("WASMESH_TRUST_POLICY")
        policy = load_trust(policy_path).policy if policy_path else TrustPolicy()
        root = Path(os.environ.get("WASMESH_CACHE_DIR") or Path.home() / ".cache" / "wasmesh") / "modules"
        _AGENT = ModuleAgent(ModuleStore(root), policy)
    return _AGENT


def _run_to_completion(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run the agent's coroutine from plan building, which may itself run on an event loop thread
    (a worker process builds its first plan there): then it runs on a helper thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wasm-fetch") as helper:
        return helper.submit(asyncio.run, coroutine).result()


def _fetch_remote(remote: Any, agent_env: dict[str, str], path: str, plugin_name: str,
                  cluster_plan: Callable[[str], Any] | None = None) -> bytes:
    """Resolve ``code.remote`` (oci://, https://, http://, file://) through the module agent;
    http(s) through the cluster ``http_uri`` names, with its TLS settings (`_module_remote`)."""
    from ..agent import FetchError, ModuleRequest, PullPolicy
    from ._module_remote import cluster_transport

    url = remote.http_uri.uri
    sha256 = remote.sha256 if remote.sha256 not in ("", "nil") else None
    try:
        request = ModuleRequest(
            url=url,
            sha256=sha256,
            pull_policy=PullPolicy.parse(agent_env.get("ISTIO_META_WASM_IMAGE_PULL_POLICY")),
            pull_secret=agent_env.get("ISTIO_META_WASM_IMAGE_PULL_SECRET") or None,
            resource_version=agent_env.get("ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION", ""),
            transport=cluster_transport(remote.http_uri.cluster, cluster_plan) if url.startswith("http") else None,
        )
    except ValueError as err:
        MODULE_STATUS[plugin_name] = {"url": url, "ok": False, "message": str(err)}
        raise ModuleFetchFailed(path, str(err)) from None
    try:
        cached = _run_to_completion(module_agent().get(request))
    except FetchError as err:
        MODULE_STATUS[plugin_name] = {"url": url, "ok": False, "message": str(err)}
        raise ModuleFetchFailed(path, f"cannot fetch {url}: {err}") from None
    refusal = (MODULE_STATUS.get(plugin_name) or {}).get("last_refused")
    MODULE_STATUS[plugin_name] = {
        "url": url, "ok": True, "message": "stale cache (source down)" if cached.stale else "ok",
        "checksum": cached.checksum, "module_sha256": cached.module_sha256, "signers": list(cached.signers),
        **({"last_refused": refusal} if refusal else {}),  # the provenance check below decides whether it stays
    }
    return Path(cached.path).read_bytes()


# the carrier of `_module_provenance.CARRIER`, spelled here so that the registry package (and its
# cryptography) loads only once a module actually carries provenance
PROVENANCE_CARRIER = "WASMESH_MODULE_PROVENANCE:"


class _FetchFailedFilter(HttpFilter):
    """What Istio's agent puts in place of a plugin whose module it could not fetch:
    an RBAC deny-all (FAIL_CLOSE) — or nothing at all (FAIL_OPEN, see build_wasm_filter)."""

    encodes = False

    def __init__(self, callbacks: FilterCallbacks) -> None:
        self.callbacks = callbacks

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        self.callbacks.send_local_reply(403, b"RBAC: access denied", (), "rbac_access_denied_matched_policy[none]")
        return HeadersStatus.StopAllIterationAndWatermark


class _PassFilter(HttpFilter):
    decodes = False
    encodes = False


def plugin_spec_from_proto(config: Any, path: str = "config",
                           cluster_plan: Callable[[str], Any] | None = None) -> tuple[PluginSpec, bytes]:
    """Translate an ``envoy.extensions.wasm.v3.PluginConfig`` into a spec and the module bytes
    (``cluster_plan`` finds the cluster a remote module is fetched through)."""
    vm = config.vm_config
    if config.WhichOneof("vm") != "vm_config":
        raise ConfigError(path, "vm_config is required (vm references are not supported)")
    if vm.runtime not in _RUNTIMES:
        raise ConfigError(f"{path}.vm_config.runtime", f"unsupported runtime {vm.runtime!r}; wasmesh runs modules on wasmtime")
    if config.capability_restriction_config.ByteSize():
        raise ConfigError(f"{path}.capability_restriction_config", "capability restrictions are not supported yet")
    agent_env = {k: v for k, v in vm.environment_variables.key_values.items() if k in _AGENT_ENV}
    if vm.code.WhichOneof("specifier") == "remote":
        wasm = _fetch_remote(vm.code.remote, agent_env, f"{path}.vm_config.code.remote", config.name, cluster_plan)
    else:
        wasm = _module_bytes(vm, f"{path}.vm_config")
    provenance = [k for k in vm.environment_variables.host_env_keys if k.startswith(PROVENANCE_CARRIER)]
    host_env_keys = [k for k in vm.environment_variables.host_env_keys if not k.startswith(PROVENANCE_CARRIER)]
    if provenance:
        from ._module_trust import check_provenance

        check_provenance(MODULE_STATUS, provenance, wasm, f"{path}.vm_config.environment_variables.host_env_keys",
                         config.name)
    elif os.environ.get("WASMESH_TRUST_POLICY"):  # stripped provenance looks like none: see _module_trust
        from ._module_trust import check_unsigned

        agent_verified = vm.code.WhichOneof("specifier") == "remote" and vm.code.remote.http_uri.uri.startswith("oci://")
        check_unsigned(MODULE_STATUS, wasm, f"{path}.vm_config.code", config.name, agent_verified)
    env: list[tuple[str, str]] = sorted(
        (k, v) for k, v in vm.environment_variables.key_values.items() if k not in _AGENT_ENV
    )
    for key in host_env_keys:
        value = os.environ.get(key)
        if value is not None:
            env.append((key, value))
    if config.failure_policy in _POLICIES:
        policy = _POLICIES[config.failure_policy]
    else:
        policy = FailurePolicy.FAIL_OPEN if config.fail_open else FailurePolicy.FAIL_CLOSED
    spec = PluginSpec(
        name=config.name,
        root_id=config.root_id,
        vm_id=vm.vm_id,
        configuration=_configuration_bytes(config.configuration, f"{path}.configuration"),
        vm_configuration=_configuration_bytes(vm.configuration, f"{path}.vm_config.configuration"),
        failure_policy=policy,
        fail_open=config.fail_open,
        env=tuple(env),
        allow_on_headers_stop_iteration=config.allow_on_headers_stop_iteration.value
        if config.HasField("allow_on_headers_stop_iteration") else False,
    )
    return spec, wasm
