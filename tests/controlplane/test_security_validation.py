"""Validation of security.istio.io manifests: Istio's field names accepted, mistakes reported
with the field path and line, in both served versions."""

from __future__ import annotations

import pytest

from controlplane._validation import analyze_text

VALID = """\
apiVersion: security.istio.io/{version}
kind: PeerAuthentication
metadata: {{name: strict, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  mtls: {{mode: STRICT}}
  portLevelMtls: {{"8080": {{mode: PERMISSIVE}}}}
---
apiVersion: security.istio.io/{version}
kind: AuthorizationPolicy
metadata: {{name: allow, namespace: shop, annotations: {{istio.io/dry-run: "true"}}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/shop/sa/a"], notIpBlocks: ["10.0.0.0/8"]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/api/{{*}}/items"], notPorts: ["9090"]}}}}]
    when: [{{key: "request.auth.claims[groups]", values: [admin]}}]
---
apiVersion: security.istio.io/{version}
kind: RequestAuthentication
metadata: {{name: jwt, namespace: shop}}
spec:
  jwtRules:
  - issuer: https://issuer.test
    jwksUri: https://issuer.test/jwks.json
    fromHeaders: [{{name: x-token, prefix: "Bearer "}}]
    outputClaimToHeaders: [{{header: x-sub, claim: sub}}]
"""


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_istio_manifests_are_accepted(version: str) -> None:
    analysis = analyze_text(VALID.format(version=version), "ok.yaml")
    assert analysis.diagnostics == []
    assert [r.kind for r in analysis.resources] == ["PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication"]


@pytest.mark.parametrize(("kind", "spec", "path", "reason"), [
    ("PeerAuthentication", "mtls: {mode: STRICTER}", "spec.mtls.mode", "is not one of"),
    ("PeerAuthentication", 'portLevelMtls: {"80": {mode: STRICT}}', "spec.portLevelMtls", "selector"),
    ("AuthorizationPolicy", "action: MAYBE", "spec.action", "is not one of"),
    ("AuthorizationPolicy", "action: CUSTOM\n  rules: [{}]", "spec.provider.name", "required"),
    ("AuthorizationPolicy", "provider: {name: x}", "spec.provider", "only allowed with action CUSTOM"),
    ("AuthorizationPolicy", "rules: [{from: [{source: {ipBlocks: [bad]}}]}]", "spec.rules[0].from[0].source.ipBlocks[0]",
     "not an IP"),
    ("AuthorizationPolicy", "rules: [{to: [{operation: {ports: [http]}}]}]", "spec.rules[0].to[0].operation.ports[0]",
     "not a port"),
    ("AuthorizationPolicy", "rules: [{when: [{key: request.magic, values: [x]}]}]", "spec.rules[0].when[0].key",
     "unsupported condition key"),
    ("AuthorizationPolicy", "rules: [{to: [{operation: {paths: ['/{**}/x/{*}']}}]}]",
     "spec.rules[0].to[0].operation.paths[0]", "last operator"),
    ("AuthorizationPolicy", "rules: [{from: [{source: {principal: [a]}}]}]", "spec.rules[0].from[0].source",
     "unknown field"),
    ("RequestAuthentication", "jwtRules: [{jwksUri: 'https://x/jwks'}]", "spec.jwtRules[0].issuer", "required"),
    ("RequestAuthentication", "jwtRules: [{issuer: a, jwksUri: 'ftp://x'}]", "spec.jwtRules[0].jwksUri", "http(s)"),
    ("RequestAuthentication", "jwtRules: [{issuer: a, jwks: '{'}]", "spec.jwtRules[0].jwks", "not JSON"),
    ("RequestAuthentication", "jwtRules: [{issuer: a, jwks: '{\"keys\": []}'}, {issuer: a, jwks: '{\"keys\": []}'}]",
     "spec.jwtRules[1].issuer", "already used"),
])
def test_mistakes_name_the_field(kind: str, spec: str, path: str, reason: str) -> None:
    text = f"apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: x, namespace: shop}}\nspec:\n  {spec}\n"
    analysis = analyze_text(text, "bad.yaml")
    assert analysis.resources == []
    rendered = [d.render() for d in analysis.diagnostics]
    assert any(f"{path}: " in line and reason in line and "bad.yaml:" in line for line in rendered), rendered
