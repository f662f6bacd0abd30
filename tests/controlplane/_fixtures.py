"""Build meshes and proxies from manifests for translation tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controlplane._generate import Snapshot, generate
from controlplane._mesh import Mesh
from controlplane._protos import to_dict
from controlplane._proxies import AppPort, Proxy
from controlplane._resources import Resource
from controlplane._validation import REFERENCE_NOT_FOUND, analyze_paths, analyze_text, check_references

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "examples" / "manifests"


def resources_from(*sources: str | Path) -> list[Resource]:
    """Resources from manifest paths (relative to examples/manifests) or YAML text, in order.

    Creation times follow the order given, so "oldest first" rules are deterministic.
    """
    out: list[Resource] = []
    for source in sources:
        if isinstance(source, Path) or (isinstance(source, str) and source.endswith((".yaml", ".yml"))
                                        and "\n" not in source):
            analysis = analyze_paths([MANIFESTS / source])
        else:
            analysis = analyze_text(str(source), "<test>")
        errors = [d.render() for d in analysis.diagnostics if d.is_error and d.code != REFERENCE_NOT_FOUND]
        assert not errors, errors
        out.extend(analysis.resources)
    unresolved = [d.render() for d in check_references(out)]
    assert not unresolved, unresolved
    return [r.with_version(created=1_000_000 + i) for i, r in enumerate(out)]


def mesh_of(*sources: str | Path, proxies: list[Proxy] | None = None) -> Mesh:
    return Mesh(resources_from(*sources), proxies or [])


def sidecar(name: str = "productpage", namespace: str = "default", labels: dict[str, str] | None = None,
            **kwargs: Any) -> Proxy:
    return Proxy(id=f"sidecar~127.0.0.1~{name}.{namespace}~{namespace}.svc.cluster.local", name=name,
                 namespace=namespace, labels=labels if labels is not None else {"app": name, "version": "v1"},
                 app_ports=kwargs.pop("app_ports", (AppPort(9080, "http"),)), **kwargs)


def config(snapshot: Snapshot, type_url: str, name: str) -> dict[str, Any]:
    resources = snapshot.resources(type_url)
    assert name in resources, f"{name} not in {sorted(resources)}"
    return to_dict(resources[name])


def generated(mesh: Mesh, proxy: Proxy | None = None) -> Snapshot:
    snapshot = generate(mesh, proxy or sidecar())
    assert snapshot.notes == ()
    return snapshot
