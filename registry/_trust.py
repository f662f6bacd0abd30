"""Trust policy: which keys and Sigstore identities may sign modules from which images.

A policy file (YAML)::

    requireSignature: true            # the default: unsigned oci:// modules are refused
    trustedRoot: sigstore-root.json   # Sigstore trusted root, for bundle checks
    rules:
      - images: ["registry.example:5000/plugins/*"]   # globs over HOST/REPOSITORY
        keys: [keys/team.pub]                          # PEM public keys (paths relative to the file)
        sigstore: [{subject: alice@example.com, issuer: https://issuer.example}]
        requireSignature: true                         # optional, per rule

Every rule whose pattern matches an image contributes its keys and identities; an image
no rule covers cannot be verified, so with ``requireSignature`` it is refused.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import _keys
from ._reference import Reference
from ._sigstore import SigstoreIdentity


class TrustPolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class TrustRule:
    images: tuple[str, ...]
    keys: tuple[_keys.PublicKey, ...] = ()
    identities: tuple[SigstoreIdentity, ...] = ()
    require_signature: bool | None = None

    def matches(self, ref: Reference) -> bool:
        return any(fnmatch.fnmatchcase(ref.name, pattern) for pattern in self.images)


@dataclass(frozen=True)
class TrustDecision:
    """What a policy asks of one image."""

    require_signature: bool
    keys: tuple[_keys.PublicKey, ...]
    identities: tuple[SigstoreIdentity, ...]
    covered: bool


@dataclass
class TrustPolicy:
    rules: list[TrustRule] = field(default_factory=list)
    require_signature: bool = True
    trusted_root: Path | None = None

    def decide(self, ref: Reference) -> TrustDecision:
        matching = [rule for rule in self.rules if rule.matches(ref)]
        require = any(self.require_signature if r.require_signature is None else r.require_signature
                      for r in matching) if matching else self.require_signature
        keys = tuple(k for r in matching for k in r.keys)
        identities = tuple(dict.fromkeys(i for r in matching for i in r.identities))
        return TrustDecision(require, keys, identities, bool(matching))

    @classmethod
    def with_keys(cls, keys: list[_keys.PublicKey], images: tuple[str, ...] = ("*",)) -> TrustPolicy:
        return cls([TrustRule(images, tuple(keys))])

    @classmethod
    def parse(cls, text: str, base_dir: Path | str = ".", source: str = "trust policy") -> TrustPolicy:
        base = Path(base_dir)
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise TrustPolicyError(f"{source}: not YAML: {err}") from None
        if not isinstance(doc, dict):
            raise TrustPolicyError(f"{source}: expected a mapping")
        unknown = set(doc) - {"requireSignature", "trustedRoot", "rules"}
        if unknown:
            raise TrustPolicyError(f"{source}: unknown field(s) {sorted(unknown)}")
        require = _bool(doc.get("requireSignature", True), f"{source}: requireSignature")
        root = doc.get("trustedRoot")
        if root is not None and not isinstance(root, str):
            raise TrustPolicyError(f"{source}: trustedRoot: expected a file path")
        raw_rules = doc.get("rules", [])
        if not isinstance(raw_rules, list):
            raise TrustPolicyError(f"{source}: rules: expected a list")
        rules = [_rule(raw, base, f"{source}: rules[{i}]") for i, raw in enumerate(raw_rules)]
        return cls(rules, require, base / root if root else None)

    @classmethod
    def load(cls, path: Path | str) -> TrustPolicy:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise TrustPolicyError(f"{path}: {err.strerror}") from None
        return cls.parse(text, path.parent, str(path))


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise TrustPolicyError(f"{where}: expected true or false")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TrustPolicyError(f"{where}: expected a list of strings")
    return value


def _rule(raw: Any, base: Path, where: str) -> TrustRule:
    if not isinstance(raw, dict):
        raise TrustPolicyError(f"{where}: expected a mapping")
    unknown = set(raw) - {"images", "keys", "sigstore", "requireSignature"}
    if unknown:
        raise TrustPolicyError(f"{where}: unknown field(s) {sorted(unknown)}")
    images = _strings(raw.get("images"), f"{where}.images")
    if not images:
        raise TrustPolicyError(f"{where}.images: at least one pattern is needed")
    keys = []
    for i, entry in enumerate(_strings(raw.get("keys", []), f"{where}.keys")):
        try:
            if entry.lstrip().startswith("-----BEGIN"):
                keys.append(_keys.load_public_key(entry.encode(), f"{where}.keys[{i}]"))
            else:
                keys.append(_keys.load_public_key_file(base / entry))
        except _keys.KeyFileError as err:
            raise TrustPolicyError(f"{where}.keys[{i}]: {err}") from None
    identities = []
    raw_ids = raw.get("sigstore", [])
    if not isinstance(raw_ids, list):
        raise TrustPolicyError(f"{where}.sigstore: expected a list")
    for i, entry in enumerate(raw_ids):
        if not isinstance(entry, dict) or not isinstance(entry.get("subject"), str) \
                or not isinstance(entry.get("issuer"), str):
            raise TrustPolicyError(f"{where}.sigstore[{i}]: expected {{subject: ..., issuer: ...}}")
        identities.append(SigstoreIdentity(entry["subject"], entry["issuer"]))
    require = raw.get("requireSignature")
    return TrustRule(tuple(images), tuple(keys), tuple(identities),
                     None if require is None else _bool(require, f"{where}.requireSignature"))
