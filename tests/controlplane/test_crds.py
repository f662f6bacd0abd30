"""The generated CRDs: in step with the schema description, structural, Istio-shaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane._crdgen import CRD_DIR, file_name, render
from controlplane._schemas import KINDS, lookup_kind


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_checked_in_crd_matches_generator(kind: Any) -> None:
    path = CRD_DIR / file_name(kind)
    assert path.read_text(encoding="utf-8") == render(kind), f"regenerate with python -m controlplane._crdgen ({path})"


def _structural_problems(node: Any, path: str) -> list[str]:
    """Kubernetes' structural-schema rules that matter here: every node typed (or preserving
    unknown fields), properties and additionalProperties never together."""
    problems = []
    if not isinstance(node, dict):
        return [f"{path}: not a mapping"]
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    for name, child in (node.get("properties") or {}).items():
        problems += _structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _structural_problems(node["additionalProperties"], f"{path}[*]")
    if "items" in node:
        problems += _structural_problems(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("path", sorted(CRD_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_crds_are_structural_and_well_formed(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Generated") and "DO NOT EDIT" in text.splitlines()[0]
    crd = yaml.safe_load(text)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
    assert spec["scope"] == "Namespaced"
    assert sum(1 for v in spec["versions"] if v["storage"]) == 1
    for version in spec["versions"]:
        assert version["served"] is True
        assert _structural_problems(version["schema"]["openAPIV3Schema"], version["name"]) == []


SECURITY_KINDS = {"PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"}


def test_versions_served_as_istio_serves_them() -> None:
    crds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"]: yaml.safe_load(p.read_text())
            for p in CRD_DIR.glob("*.yaml")}
    assert set(crds) == {"VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry",
                         "Sidecar", "EnvoyFilter", "WasmPlugin", "Telemetry", *SECURITY_KINDS}
    versions = {kind: [v["name"] for v in crd["spec"]["versions"]] for kind, crd in crds.items()}
    assert versions["WasmPlugin"] == ["v1alpha1"]
    assert versions["EnvoyFilter"] == ["v1alpha3"]
    for kind in SECURITY_KINDS:
        assert versions[kind] == ["v1", "v1beta1"]
        assert [v["name"] for v in crds[kind]["spec"]["versions"] if v["storage"]] == ["v1beta1"]
    for kind in ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry", "Sidecar"):
        assert {"v1alpha3", "v1beta1"} <= set(versions[kind])
        storage = [v["name"] for v in crds[kind]["spec"]["versions"] if v["storage"]]
        assert storage == ["v1alpha3"]


def test_istio_field_names_are_camel_case() -> None:
    vs = yaml.safe_load((CRD_DIR / "virtualservices.networking.istio.io.yaml").read_text())
    http = vs["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["http"]
    fields = set(http["items"]["properties"])
    assert {"match", "route", "rewrite", "timeout", "retries", "fault", "mirror", "mirrorPercentage",
            "corsPolicy", "headers", "directResponse", "redirect", "delegate"} <= fields
    wasm = yaml.safe_load((CRD_DIR / "wasmplugins.extensions.istio.io.yaml").read_text())
    props = wasm["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {"selector", "targetRefs", "url", "sha256", "imagePullPolicy", "imagePullSecret", "pluginConfig",
            "pluginName", "phase", "priority", "failStrategy", "vmConfig", "match", "type"} <= set(props)
    assert props["pluginConfig"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["phase"]["enum"] == ["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]


def test_lookup_kind_accepts_kubectl_spellings() -> None:
    assert lookup_kind("vs") is not None and lookup_kind("vs").kind == "VirtualService"  # type: ignore[union-attr]
    assert lookup_kind("destinationrules").kind == "DestinationRule"  # type: ignore[union-attr]
    assert lookup_kind("WasmPlugin").kind == "WasmPlugin"  # type: ignore[union-attr]
    assert lookup_kind("pods") is None
