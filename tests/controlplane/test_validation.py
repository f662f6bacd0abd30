"""Validation: schema and semantic errors name file, document, line, field path and reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from controlplane._validation import analyze_paths, analyze_text, check_references
from controlplane.cli._controlplane import main as cli


def _errors(text: str) -> list[tuple[str, str]]:
    analysis = analyze_text(textwrap.dedent(text), "m.yaml")
    return [(d.path, d.message) for d in analysis.diagnostics if d.is_error]


VS_HEAD = """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
"""


def test_unknown_field_is_reported_with_file_document_line_and_path() -> None:
    text = "---\nkind: Gateway\napiVersion: networking.istio.io/v1\nmetadata: {name: g}\nspec: {servers: []}\n---" + \
        VS_HEAD + "  http:\n  - route: [{destination: {host: reviews}}]\n    timeoutz: 3s\n"
    analysis = analyze_text(text, "dir/m.yaml")
    [unknown] = [d for d in analysis.diagnostics if "timeoutz" in d.message]
    assert unknown.origin.file == "dir/m.yaml" and unknown.origin.document == 1
    assert unknown.path == "spec.http[0]"
    assert unknown.message == "unknown field 'timeoutz'"
    assert unknown.render().startswith("Error [IST0106] (VirtualService default/r, dir/m.yaml:13, document 1) spec.http[0]:")
    assert [r.kind for r in analysis.resources] == []  # both documents rejected (the Gateway has no servers)


@pytest.mark.parametrize(("snippet", "path", "reason"), [
    ("  http:\n  - route:\n    - {destination: {host: a}, weight: 60}\n    - {destination: {host: b}, weight: 30}\n",
     "spec.http[0].route", "route weights sum to 90, not 100"),
    ("  http:\n  - match: [{uri: {regex: 'a(b'}}]\n    route: [{destination: {host: a}}]\n",
     "spec.http[0].match[0].uri.regex", "invalid regex"),
    ("  http:\n  - match: [{headers: {x: {regex: '(?=a)'}}}]\n    route: [{destination: {host: a}}]\n",
     "spec.http[0].match[0].headers.x.regex", "RE2 does not support"),
    ("  http:\n  - match: [{uri: {exact: /a, prefix: /b}}]\n    route: [{destination: {host: a}}]\n",
     "spec.http[0].match[0].uri", "set only one of exact, prefix, regex"),
    ("  http:\n  - fault: {abort: {httpStatus: 700}}\n    route: [{destination: {host: a}}]\n",
     "spec.http[0].fault.abort.httpStatus", "outside 200..599"),
    ("  http:\n  - fault: {delay: {fixedDelay: 1s, percentage: {value: 150}}}\n    route: [{destination: {host: a}}]\n",
     "spec.http[0].fault.delay.percentage.value", "outside 0..100"),
    ("  http:\n  - timeout: 5 seconds\n    route: [{destination: {host: a}}]\n", "spec.http[0].timeout", "does not match"),
    ("  http:\n  - name: x\n    route: [{destination: {host: a}}]\n  - name: x\n    route: [{destination: {host: a}}]\n",
     "spec.http[1].name", "duplicate route name"),
    ("  http:\n  - redirect: {uri: /x}\n    route: [{destination: {host: a}}]\n", "spec.http[0]", "cannot be combined"),
])
def test_virtual_service_semantic_checks(snippet: str, path: str, reason: str) -> None:
    errors = _errors(VS_HEAD + snippet)
    assert any(p == path and reason in m for p, m in errors), errors


@pytest.mark.parametrize(("text", "path", "reason"), [
    ("kind: ServiceEntry\nspec:\n  hosts: [a.example]\n  ports: [{number: 80, name: http}, {number: 80, name: http}]\n",
     "spec.ports[1].name", "duplicate port name"),
    ("kind: ServiceEntry\nspec:\n  hosts: [a.example]\n  ports: [{number: 70000, name: http}]\n",
     "spec.ports[0].number", "is greater than the maximum"),
    ("kind: ServiceEntry\nspec:\n  hosts: [a.example]\n  ports: [{number: 0, name: http}]\n",
     "spec.ports[0].number", "port number must be 1..65535"),
    ("kind: ServiceEntry\nspec:\n  hosts: [a.example]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n"
     "  endpoints: [{address: not-an-ip}]\n", "spec.endpoints[0].address", "is not an IP address"),
    ("kind: ServiceEntry\nspec:\n  hosts: [a.example]\n  ports: [{number: 80, name: http}]\n"
     "  endpoints: [{address: 1.2.3.4, ports: {grpc: 90}}]\n", "spec.endpoints[0].ports.grpc", "no service port named"),
    ("kind: DestinationRule\nspec:\n  host: a\n  subsets: [{name: v1}, {name: v1}]\n",
     "spec.subsets[1].name", "duplicate subset name"),
    ("kind: DestinationRule\nspec:\n  host: a\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n",
     "spec.trafficPolicy.loadBalancer.simple", "'FASTEST' is not one of"),
    ("kind: WasmPlugin\nspec: {url: ftp://h/x.wasm}\n", "spec.url", "unsupported URL scheme 'ftp'"),
    ("kind: WasmPlugin\nspec: {url: file://relative.wasm}\n", "spec.url", "absolute path"),
    ("kind: WasmPlugin\nspec: {url: oci://r/x, sha256: ABC}\n", "spec.sha256", "does not match"),
    ("kind: WasmPlugin\nspec:\n  url: 'oci://r/x@sha256:" + "a" * 64 + "'\n  sha256: '" + "b" * 64 + "'\n",
     "spec.sha256", "does not match the digest in the URL"),
    ("kind: WasmPlugin\nspec:\n  url: oci://r/x\n  vmConfig: {env: [{name: A, valueFrom: HOST, value: x}]}\n",
     "spec.vmConfig.env[0].value", "must be empty when valueFrom is HOST"),
    ("kind: WasmPlugin\nspec:\n  url: oci://r/x\n  selector: {matchLabels: {a: b}}\n  targetRefs: [{kind: Gateway, name: g}]\n",
     "spec", "set only one of selector and targetRefs"),
    ("kind: WasmPlugin\nspec: {url: oci://r/x, phase: LATE}\n", "spec.phase", "is not one of"),
    ("kind: EnvoyFilter\nspec:\n  configPatches: [{applyTo: CLUSTER, patch: {operation: INSERT_BEFORE, value: {name: x}}}]\n",
     "spec.configPatches[0].patch.operation", "not valid for applyTo CLUSTER"),
    ("kind: EnvoyFilter\nspec:\n  configPatches: [{applyTo: CLUSTER, patch: {operation: ADD}}]\n",
     "spec.configPatches[0].patch.value", "needs a value"),
    ("kind: EnvoyFilter\nspec:\n  configPatches: [{applyTo: CLUSTER, patch: {operation: ADD, value: {nmae: x}}}]\n",
     "spec.configPatches[0].patch.value", "not a valid envoy.config.cluster.v3.Cluster"),
    ("kind: EnvoyFilter\nspec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n    patch:\n      operation: ADD\n"
     "      value: {name: x, typed_config: {'@type': type.googleapis.com/envoy.nope.v3.Nope}}\n",
     "spec.configPatches[0].patch.value", "unknown type"),
])
def test_kind_semantic_checks(text: str, path: str, reason: str) -> None:
    kind = text.split("\n", 1)[0].split(": ")[1]
    group = "extensions.istio.io/v1alpha1" if kind == "WasmPlugin" else (
        "networking.istio.io/v1alpha3" if kind == "EnvoyFilter" else "networking.istio.io/v1")
    errors = _errors(f"apiVersion: {group}\nmetadata: {{name: x}}\n{text}")
    assert any(p == path and reason in m for p, m in errors), errors


def test_yaml_syntax_error_names_the_line() -> None:
    analysis = analyze_text("apiVersion: v1\nkind: [unclosed\n", "bad.yaml")
    [problem] = analysis.diagnostics
    assert problem.code == "WSM0001" and problem.origin.line == 3 and "invalid YAML" in problem.message


def test_unknown_istio_kind_is_an_error_and_other_kinds_are_ignored() -> None:
    analysis = analyze_text("apiVersion: security.istio.io/v1\nkind: Frobnicator\nmetadata: {name: a}\n---\n"
                            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n")
    assert [d.message for d in analysis.diagnostics] == ["unknown kind 'Frobnicator' in security.istio.io/v1"]


def test_missing_subset_and_duplicates_are_found_across_files(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text(VS_HEAD + "  http:\n  - route: [{destination: {host: reviews, subset: v9}}]\n")
    (tmp_path / "dr.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                                      "metadata: {name: d}\nspec: {host: reviews, subsets: [{name: v1}]}\n---\n"
                                      "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                                      "metadata: {name: d}\nspec: {host: reviews}\n")
    analysis = analyze_paths([tmp_path])
    messages = [(d.code, d.path, d.message) for d in analysis.diagnostics]
    assert ("IST0101", "spec.http[0].route[0].destination.subset",
            'referenced host+subset in DestinationRule not found: "reviews.default.svc.cluster.local+v9"') in messages
    assert any(code == "WSM0003" and "defined twice" in m for code, _, m in messages)
    assert check_references(analysis.resources[:1]) == []


def test_analyze_command_prints_like_istioctl_and_fails_on_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ok.yaml").write_text(VS_HEAD + "  http:\n  - route: [{destination: {host: reviews}}]\n")
    assert cli(["analyze", "-f", str(tmp_path)]) == 0
    assert "No validation issues found when analyzing 1 resources" in capsys.readouterr().out
    (tmp_path / "bad.yaml").write_text(VS_HEAD + "  http:\n  - route: [{destination: {host: reviews}, weight: 5}]\n")
    assert cli(["analyze", "-f", str(tmp_path)]) == 79
    out = capsys.readouterr()
    assert "Error [IST0106] (VirtualService default/r, " in out.out and "bad.yaml:8, document 0) spec.http[0].route: " \
        "route weights sum to 5, not 100" in out.out
    assert cli(["analyze", "-f", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("task", sorted((Path(__file__).resolve().parents[2] / "examples" / "manifests" / "tasks").glob(
    "*.yaml")), ids=lambda p: p.stem)
def test_documentation_examples_are_valid(task: Path) -> None:
    """Each task file is an alternative applied on top of bookinfo (they reuse names)."""
    bookinfo = task.parent.parent / "bookinfo"
    analysis = analyze_paths([bookinfo / "services.yaml", bookinfo / "workloads.yaml",
                              bookinfo / "destination-rule-all.yaml", task])
    assert not analysis.has_errors, [d.render() for d in analysis.diagnostics]
