"""The wasmesh sidecar's own module trust: which modules it runs once it has a trust policy.

Without ``WASMESH_TRUST_POLICY`` the sidecar takes the control plane's verdict. With one, it
runs only modules it can vouch for itself, because a module whose provenance was stripped in
transit looks exactly like a module that never had any:

- a module that carries provenance is re-verified (``_module_provenance.reverify``);
- an ``oci://`` module the sidecar's own module agent pulled (``direct`` distribution) was
  verified by that agent against the same policy;
- any other module — inline bytes, the control plane's module endpoint, ``http(s)://`` and
  local files — is refused unless the policy names its extension under ``unsignedModules``
  (globs over the PluginConfig name, ``<namespace>.<WasmPlugin name>`` for WasmPlugins).

``unsignedModules`` is the one field the sidecar's policy file adds to the registry's trust
policy format (``registry.TrustPolicy``); the rest of the file is that format unchanged.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from registry import TrustPolicy, TrustPolicyError

from ._errors import ConfigError
from ._module_provenance import ProvenanceError, decode, reverify

POLICY_ENV = "WASMESH_TRUST_POLICY"
UNSIGNED_FIELD = "unsignedModules"
Statuses = MutableMapping[str, dict[str, object]]


@dataclass(frozen=True)
class SidecarTrust:
    """The sidecar's trust policy plus the extensions it may run without signatures."""

    policy: TrustPolicy
    unsigned: tuple[str, ...] = ()
    source: str = POLICY_ENV

    def allows_unsigned(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.unsigned)


def parse_trust(text: str, base_dir: Path | str = ".", source: str = "trust policy") -> SidecarTrust:
    """A sidecar policy file: the registry's trust policy format plus ``unsignedModules``."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise TrustPolicyError(f"{source}: not YAML: {err}") from None
    if not isinstance(doc, dict):
        raise TrustPolicyError(f"{source}: expected a mapping")
    unsigned = doc.pop(UNSIGNED_FIELD, [])
    if not isinstance(unsigned, list) or not all(isinstance(p, str) and p for p in unsigned):
        raise TrustPolicyError(f"{source}: {UNSIGNED_FIELD}: expected a list of extension names or globs")
    policy = TrustPolicy.parse(yaml.safe_dump(doc), base_dir, source)
    return SidecarTrust(policy, tuple(unsigned), source)


def load_trust(path: Path | str) -> SidecarTrust:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise TrustPolicyError(f"{path}: {err.strerror}") from None
    return parse_trust(text, path.parent, str(path))


_LOADED: tuple[Any, ...] | None = None  # (file identity, SidecarTrust | None)


def sidecar_trust() -> SidecarTrust | None:
    """The policy named by ``WASMESH_TRUST_POLICY`` (None without one); read again when the file
    changes, so an edited policy applies to the next module."""
    global _LOADED
    path = os.environ.get(POLICY_ENV) or ""
    try:
        stat = os.stat(path) if path else None
    except OSError as err:
        raise ConfigError(POLICY_ENV, f"cannot read the trust policy {path}: {err.strerror}") from None
    key = (path, stat.st_mtime_ns, stat.st_size) if stat is not None else (path,)
    if _LOADED is None or _LOADED[0] != key:
        try:
            _LOADED = (key, load_trust(path) if path else None)
        except TrustPolicyError as err:
            raise ConfigError(POLICY_ENV, str(err)) from None
    trust: SidecarTrust | None = _LOADED[1]
    return trust


class _Verdict:
    """One module's entry in the sidecar's module status, kept with its last refusal."""

    def __init__(self, statuses: Statuses, plugin_name: str, wasm: bytes) -> None:
        self.statuses, self.plugin_name = statuses, plugin_name
        self.sha256 = hashlib.sha256(wasm).hexdigest()
        previous = statuses.get(plugin_name) or {}
        same = previous.get("module_sha256") == self.sha256
        self.status: dict[str, object] = dict(previous) if same else {"module_sha256": self.sha256}
        self.status.pop("last_refused", None)
        refusal = previous.get("last_refused")
        if isinstance(refusal, dict) and refusal.get("module_sha256") != self.sha256:  # an older refusal
            self.status["last_refused"] = refusal

    def accept(self, **fields: object) -> None:
        self.status.update(ok=True, **fields)
        self.statuses[self.plugin_name] = self.status

    def refuse(self, path: str, reason: str, message: str) -> ConfigError:
        self.status.update(ok=False, reverified=False, message=f"refused: {reason}")
        self.status["last_refused"] = {"module_sha256": self.sha256, "message": reason,
                                       "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.statuses[self.plugin_name] = self.status
        return ConfigError(path, f"{message}: {reason}")


def check_provenance(statuses: Statuses, entries: list[str], wasm: bytes, path: str, plugin_name: str) -> None:
    """Re-verify a control-plane module against the sidecar's own trust policy; raise ConfigError
    (the update is NACKed, the previous version serves on) when the signature material does not
    vouch for these bytes. Without a policy the control plane's verdict is taken and said so."""
    verdict = _Verdict(statuses, plugin_name, wasm)
    try:
        provenance = decode(entries[0])
    except ProvenanceError as err:
        raise verdict.refuse(path, str(err), "module refused") from None
    verdict.status["url"] = verdict.status.get("url") or provenance.reference
    verdict.status["provenance"] = provenance.reference
    trust = sidecar_trust()
    if trust is None:
        verdict.accept(reverified=False,
                       message=f"verified by the control plane; not re-verified (no {POLICY_ENV})")
        return
    try:
        signers = reverify(provenance, wasm, trust.policy)
    except ProvenanceError as err:
        raise verdict.refuse(path, str(err), "module refused by the sidecar's trust policy") from None
    verdict.accept(reverified=True, signers=[str(s) for s in signers],
                   message="re-verified against the sidecar's trust policy")


def check_unsigned(statuses: Statuses, wasm: bytes, path: str, plugin_name: str, agent_verified: bool) -> None:
    """A module without provenance: refused when the sidecar has a policy, unless its own module
    agent verified it (``oci://``, direct distribution) or the policy lists it as unsigned."""
    trust = sidecar_trust()
    if trust is None or agent_verified:
        return
    verdict = _Verdict(statuses, plugin_name, wasm)
    if trust.allows_unsigned(plugin_name):
        verdict.accept(reverified=False, message=f"unsigned module allowed by {UNSIGNED_FIELD} in {trust.source}")
        return
    reason = (f"module {plugin_name!r} (sha256:{verdict.sha256}) carries no provenance; the sidecar's trust policy "
              f"runs only modules it verifies itself (list the name under {UNSIGNED_FIELD} in {trust.source} "
              "to run it unsigned)")
    raise verdict.refuse(path, reason, "module refused by the sidecar's trust policy")


__all__ = ["POLICY_ENV", "UNSIGNED_FIELD", "SidecarTrust", "check_provenance", "check_unsigned", "load_trust",
           "parse_trust", "sidecar_trust"]
