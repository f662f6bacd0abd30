"""Mesh-wide settings in Istio's MeshConfig shape (`--mesh-config FILE`, YAML).

Read here: `trustDomain` (the SPIFFE trust domain, default `cluster.local`), `rootNamespace`
and `extensionProviders` (by name; the CUSTOM authorization action looks its provider up
here). Unknown top-level fields are kept in `raw` for other features. Errors name the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TRUST_DOMAIN = "cluster.local"


class MeshConfigError(ValueError):
    """The mesh config cannot be used; the message names the field."""


@dataclass(frozen=True)
class MeshConfig:
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    root_namespace: str = "istio-system"
    extension_providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


def parse_mesh_config(data: Any) -> MeshConfig:
    if data is None:
        return MeshConfig()
    if not isinstance(data, Mapping):
        raise MeshConfigError("mesh config: must be a mapping")
    trust_domain = data.get("trustDomain", DEFAULT_TRUST_DOMAIN)
    if not isinstance(trust_domain, str) or not trust_domain:
        raise MeshConfigError("trustDomain: must be a non-empty string")
    root = data.get("rootNamespace", "istio-system")
    if not isinstance(root, str) or not root:
        raise MeshConfigError("rootNamespace: must be a non-empty string")
    providers: dict[str, Mapping[str, Any]] = {}
    items = data.get("extensionProviders") or []
    if not isinstance(items, list):
        raise MeshConfigError("extensionProviders: must be a list")
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
            raise MeshConfigError(f"extensionProviders[{index}].name: required")
        if item["name"] in providers:
            raise MeshConfigError(f"extensionProviders[{index}].name: {item['name']!r} is defined twice")
        providers[item["name"]] = item
    return MeshConfig(trust_domain, root, providers, dict(data))


def load_mesh_config(path: Path) -> MeshConfig:
    try:
        return parse_mesh_config(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise MeshConfigError(f"{path}: {err}") from None


__all__ = ["DEFAULT_TRUST_DOMAIN", "MeshConfig", "MeshConfigError", "load_mesh_config", "parse_mesh_config"]
