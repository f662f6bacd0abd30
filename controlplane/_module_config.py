"""Mesh config for Wasm modules: how they reach proxies and whose signatures are trusted, per namespace.

A mesh config file (YAML; keys other than `modules` belong to other parts of the mesh)::

    modules:
      distribution: controlplane   # or direct: the sidecars' agents pull from the registry (as Istio)
      delivery: inline             # controlplane distribution: module bytes in ECDS, or remote (fetched
                                   # from the control plane's module endpoint)
      trustPolicy: trust.yaml      # registry trust policy file, relative to this file
      refreshInterval: 60s         # how often tags that always pull are re-resolved
      fetchTimeout: 30s            # per registry / https request
      caFile: ca.pem               # extra CA bundle for https:// module URLs
      httpsPort: 15013             # the module endpoint's HTTPS port once the mesh has a CA
                                   # (default: the secure port + 1; see controlplane/_module_tls.py)
      namespaces:
        legacy: {distribution: direct}
        payments: {trustPolicy: payments-trust.yaml}

A namespace setting applies to the modules that namespace's WasmPlugins and EnvoyFilters name
(root-namespace resources follow the root namespace's setting). Without any file, modules are
distributed by the control plane and the default trust policy refuses unsigned `oci://` modules.

Delivery is `inline` by default because real Envoy fetches `code.remote` only while a listener
warms: an ECDS update that names a new remote module leaves Envoy 1.40 running the filter without
any module (it warns "Wasm remote code fetch is unstable"), so hot reload needs the bytes in-band.
`remote` suits wasmesh sidecars (their module agent fetches on every update) and keeps ECDS small.
Either way `oci://` modules carry their signature material, which a wasmesh sidecar with a trust
policy of its own (`WASMESH_TRUST_POLICY`) re-verifies; see docs/modules.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from registry import TrustPolicy, TrustPolicyError

CONTROLPLANE, DIRECT = "controlplane", "direct"
DISTRIBUTIONS = (CONTROLPLANE, DIRECT)
INLINE, REMOTE = "inline", "remote"
DELIVERIES = (INLINE, REMOTE)
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class MeshConfigError(ValueError):
    """A mesh config file that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class NamespaceModules:
    """What applies to the modules one namespace names."""

    distribution: str
    policy: TrustPolicy
    policy_source: str


@dataclass(frozen=True)
class _Override:
    distribution: str | None = None
    policy: TrustPolicy | None = None
    policy_source: str = ""


@dataclass
class ModulesConfig:
    distribution: str = CONTROLPLANE
    delivery: str = INLINE
    policy: TrustPolicy = field(default_factory=TrustPolicy)
    policy_source: str = "built-in default (signatures required, no key trusted)"
    refresh_interval: float = 60.0
    fetch_timeout: float = 30.0
    ca_file: Path | None = None
    https_port: int | None = None
    namespaces: Mapping[str, _Override] = field(default_factory=dict)

    def for_namespace(self, namespace: str) -> NamespaceModules:
        override = self.namespaces.get(namespace) or _Override()
        policy, source = (override.policy, override.policy_source) if override.policy is not None else (
            self.policy, self.policy_source)
        return NamespaceModules(override.distribution or self.distribution, policy, source)

    def with_trust_policy(self, path: Path) -> ModulesConfig:
        """This config with the mesh-wide policy read from `path` (the `--trust-policy` flag)."""
        try:
            policy = TrustPolicy.load(path)
        except TrustPolicyError as err:
            raise MeshConfigError(str(err)) from None
        return replace(self, policy=policy, policy_source=str(path))

    @classmethod
    def load(cls, path: Path) -> ModulesConfig:
        try:
            text = path.read_text()
        except OSError as err:
            raise MeshConfigError(f"{path}: {err.strerror}") from None
        return cls.parse(text, path.parent, str(path))

    @classmethod
    def parse(cls, text: str, base_dir: Path = Path("."), source: str = "mesh config") -> ModulesConfig:
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise MeshConfigError(f"{source}: not YAML: {err}") from None
        if not isinstance(doc, dict):
            raise MeshConfigError(f"{source}: expected a mapping")
        raw = doc.get("modules") or {}
        where = f"{source}: modules"
        _mapping(raw, where, {"distribution", "delivery", "trustPolicy", "refreshInterval", "fetchTimeout", "caFile",
                              "httpsPort", "namespaces"})
        config = cls()
        config.distribution = _distribution(raw.get("distribution", CONTROLPLANE), f"{where}.distribution")
        config.delivery = raw.get("delivery", INLINE)
        if config.delivery not in DELIVERIES:
            raise MeshConfigError(f"{where}.delivery: {config.delivery!r} is not one of {', '.join(DELIVERIES)}")
        if raw.get("trustPolicy") is not None:
            config.policy, config.policy_source = _policy(raw["trustPolicy"], base_dir, f"{where}.trustPolicy")
        config.refresh_interval = _seconds(raw.get("refreshInterval", "60s"), f"{where}.refreshInterval")
        config.fetch_timeout = _seconds(raw.get("fetchTimeout", "30s"), f"{where}.fetchTimeout")
        if raw.get("caFile") is not None:
            if not isinstance(raw["caFile"], str):
                raise MeshConfigError(f"{where}.caFile: expected a file path")
            config.ca_file = base_dir / raw["caFile"]
        if raw.get("httpsPort") is not None:
            port = raw["httpsPort"]
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                raise MeshConfigError(f"{where}.httpsPort: expected a port number (0 for any free port)")
            config.https_port = port
        namespaces = raw.get("namespaces") or {}
        _mapping(namespaces, f"{where}.namespaces", None)
        overrides = {}
        for name, item in namespaces.items():
            here = f"{where}.namespaces.{name}"
            _mapping(item, here, {"distribution", "trustPolicy"})
            policy, policy_source = (_policy(item["trustPolicy"], base_dir, f"{here}.trustPolicy")
                                     if item.get("trustPolicy") is not None else (None, ""))
            distribution = _distribution(item["distribution"], f"{here}.distribution") if "distribution" in item else None
            overrides[str(name)] = _Override(distribution, policy, policy_source)
        config.namespaces = overrides
        return config


def _mapping(value: Any, where: str, allowed: set[str] | None) -> None:
    if not isinstance(value, dict):
        raise MeshConfigError(f"{where}: expected a mapping")
    if allowed is not None and set(value) - allowed:
        raise MeshConfigError(f"{where}: unknown field(s) {sorted(set(value) - allowed)}")


def _distribution(value: Any, where: str) -> str:
    if value not in DISTRIBUTIONS:
        raise MeshConfigError(f"{where}: {value!r} is not one of {', '.join(DISTRIBUTIONS)}")
    return str(value)


def _policy(value: Any, base_dir: Path, where: str) -> tuple[TrustPolicy, str]:
    if not isinstance(value, str) or not value:
        raise MeshConfigError(f"{where}: expected a file path")
    path = base_dir / value
    try:
        return TrustPolicy.load(path), str(path)
    except TrustPolicyError as err:
        raise MeshConfigError(f"{where}: {err}") from None


def _seconds(value: Any, where: str) -> float:
    """A duration: seconds as a number, or text such as 500ms, 30s, 5m, 1h."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if match is None:
            raise MeshConfigError(f"{where}: {value!r} is not a duration such as 30s or 5m")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise MeshConfigError(f"{where}: must be positive")
    return seconds


__all__ = ["CONTROLPLANE", "DELIVERIES", "DIRECT", "DISTRIBUTIONS", "INLINE", "REMOTE", "MeshConfigError", "ModulesConfig", "NamespaceModules"]
