"""Security resources translated to Envoy config: PeerAuthentication on inbound listeners,
ISTIO_MUTUAL/auto-mTLS on clusters, AuthorizationPolicy to RBAC (and ext_authz), and
RequestAuthentication to jwt_authn, with the filters in Istio's order around Wasm plugins.
Every config is parsed into the real Envoy protos by generation itself."""

from __future__ import annotations

from typing import Any

from controlplane._authz_translate import rule_policy, string_match
from controlplane._generate import generate
from controlplane._meshconfig import parse_mesh_config
from controlplane._protos import CLUSTER, ENDPOINT, LISTENER
from controlplane._proxies import AppPort, Proxy
from tests.controlplane._fixtures import config, mesh_of, sidecar

TLS = {"security.istio.io/tlsMode": "istio"}
SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: shop}
spec:
  hosts: [server.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP, targetPort: 9000}]
  workloadSelector: {labels: {app: server}}
"""


def server(labels: dict[str, str] | None = None, account: str = "server") -> Proxy:
    return sidecar("server", "shop", labels if labels is not None else {"app": "server", **TLS},
                   app_ports=(AppPort(9000, "http-9000"),), inbound_ports={9000: 19000}, service_account=account)


def client(labels: dict[str, str] | None = None) -> Proxy:
    return sidecar("client", "shop", labels if labels is not None else {"app": "client", **TLS},
                   app_ports=(), outbound_ports={8080: 18080}, service_account="client")


def peer(mode: str, extra: str = "") -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: shop}}
spec:
  mtls: {{mode: {mode}}}
{extra}"""


def inbound(*manifests: str, proxy: Proxy | None = None) -> dict[str, Any]:
    target = proxy or server()
    return config(generate(mesh_of(SERVICE, *manifests, proxies=[target]), target), LISTENER, "virtualInbound_9000")


def hcm_filters(chain: dict[str, Any]) -> list[str]:
    return [f["name"] for f in chain["filters"][-1]["typed_config"]["http_filters"]]


def test_strict_has_only_an_mtls_chain_requiring_client_certificates() -> None:
    listener = inbound(peer("STRICT"))
    assert [c["filter_chain_match"] for c in listener["filter_chains"]] == [{"transport_protocol": "tls"}]
    tls = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    common = tls["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    assert common["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert "ads" in common["validation_context_sds_secret_config"]["sds_config"]
    assert listener["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    hcm = listener["filter_chains"][0]["filters"][-1]["typed_config"]
    assert hcm["forward_client_cert_details"] == "APPEND_FORWARD"


def test_permissive_adds_a_plaintext_chain_and_matches_mesh_alpn() -> None:
    chains = inbound(peer("PERMISSIVE"))["filter_chains"]
    assert len(chains) == 2
    assert chains[0]["filter_chain_match"]["application_protocols"][:2] == ["istio-peer-exchange", "istio"]
    assert "transport_socket" not in chains[1] and "filter_chain_match" not in chains[1]


def test_no_policy_is_permissive_and_disable_is_plaintext_only() -> None:
    assert len(inbound()["filter_chains"]) == 2
    chains = inbound(peer("DISABLE"))["filter_chains"]
    assert len(chains) == 1 and "transport_socket" not in chains[0]


def test_port_level_mtls_overrides_the_workload_mode() -> None:
    policy = peer("STRICT", "  selector: {matchLabels: {app: server}}\n  portLevelMtls: {\"9000\": {mode: DISABLE}}\n")
    assert len(inbound(policy)["filter_chains"]) == 1
    assert "transport_socket" not in inbound(policy)["filter_chains"][0]


def test_workload_policy_beats_namespace_and_mesh_wide() -> None:
    mesh_wide = peer("STRICT").replace("namespace: shop", "namespace: istio-system").replace("name: default", "name: m")
    workload = peer("DISABLE", "  selector: {matchLabels: {app: server}}\n").replace("name: default", "name: w")
    assert len(inbound(mesh_wide)["filter_chains"]) == 1  # STRICT from the root namespace
    assert "transport_socket" not in inbound(mesh_wide, workload)["filter_chains"][0]


def test_a_proxy_without_identity_keeps_plaintext_listeners() -> None:
    listener = inbound(peer("STRICT"), proxy=server({"app": "server"}))
    assert len(listener["filter_chains"]) == 1 and "transport_socket" not in listener["filter_chains"][0]


def outbound(*manifests: str, proxies: list[Proxy] | None = None, proxy: Proxy | None = None) -> dict[str, Any]:
    me = proxy or client()
    snapshot = generate(mesh_of(SERVICE, *manifests, proxies=proxies if proxies is not None else [server(), me]), me)
    return {"cluster": config(snapshot, CLUSTER, "outbound|8080||server.shop.svc.cluster.local"),
            "endpoints": config(snapshot, ENDPOINT, "outbound|8080||server.shop.svc.cluster.local")}


def test_auto_mtls_to_sidecar_endpoints_checks_their_spiffe_ids() -> None:
    result = outbound()
    matches = result["cluster"]["transport_socket_matches"]
    assert matches[0]["match"] == {"tlsMode": "istio"}
    tls = matches[0]["transport_socket"]["typed_config"]
    sans = tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]
    assert sans["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/shop/sa/server"}}]
    assert tls["common_tls_context"]["alpn_protocols"] == ["istio-peer-exchange", "istio"]
    assert tls["sni"] == "outbound_.8080_._.server.shop.svc.cluster.local"
    endpoint = result["endpoints"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["metadata"]["filter_metadata"]["envoy.transport_socket_match"] == {"tlsMode": "istio"}
    assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == 19000


def test_auto_mtls_is_off_for_disable_destinations_and_for_workloads_without_sidecar() -> None:
    disabled = outbound(peer("DISABLE"))
    assert "metadata" not in disabled["endpoints"]["endpoints"][0]["lb_endpoints"][0]
    assert "transport_socket_matches" not in disabled["cluster"]
    bare = outbound(proxies=[server({"app": "server"}), client()])
    assert "transport_socket_matches" not in bare["cluster"]


def test_destination_rule_tls_modes() -> None:
    def rule(mode: str) -> str:
        return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: server, namespace: shop}}
spec: {{host: server.shop.svc.cluster.local, trafficPolicy: {{tls: {{mode: {mode}}}}}}}
"""
    mutual = outbound(rule("ISTIO_MUTUAL"), proxies=[server({"app": "server"}), client()])["cluster"]
    assert mutual["transport_socket"]["typed_config"]["common_tls_context"][
        "tls_certificate_sds_secret_configs"][0]["name"] == "default"
    disabled = outbound(rule("DISABLE"))["cluster"]
    assert "transport_socket" not in disabled and "transport_socket_matches" not in disabled
    simple = outbound(rule("SIMPLE").replace("mode: SIMPLE", "mode: SIMPLE, sni: api.example.com"))["cluster"]
    assert simple["transport_socket"]["typed_config"]["sni"] == "api.example.com"


def policy(spec: str, name: str = "p", annotations: str = "") -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: shop{annotations}}}
spec:
{spec}"""


def rbac(listener: dict[str, Any]) -> list[dict[str, Any]]:
    http = listener["filter_chains"][-1]["filters"][-1]["typed_config"]["http_filters"]
    return [f["typed_config"] for f in http if f["name"] == "envoy.filters.http.rbac"]


def test_actions_become_rbac_filters_in_istio_order() -> None:
    manifests = [policy("  action: ALLOW\n  rules: [{}]\n", "a"), policy("  action: DENY\n  rules: [{}]\n", "d"),
                 policy("  action: AUDIT\n  rules: [{}]\n", "l")]
    filters = rbac(inbound(*manifests))
    # ALLOW is the enum's zero value, which Envoy's JSON form leaves out
    assert [f["rules"].get("action", "ALLOW") for f in filters] == ["DENY", "LOG", "ALLOW"]
    assert list(filters[2]["rules"]["policies"]) == ["ns[shop]-policy[a]-rule[0]"]
    assert filters[2]["rules"]["policies"]["ns[shop]-policy[a]-rule[0]"] == {
        "permissions": [{"any": True}], "principals": [{"any": True}]}


def test_allow_policy_without_rules_denies_everything_and_no_allow_policy_allows() -> None:
    (deny_all,) = rbac(inbound(policy("  action: ALLOW\n")))
    assert deny_all["rules"] == {}  # action ALLOW with no policy: nothing is allowed
    assert rbac(inbound()) == []


def test_dry_run_policies_are_shadow_rules() -> None:
    annotated = policy("  action: DENY\n  rules: [{}]\n", annotations=", annotations: {istio.io/dry-run: 'true'}")
    (only,) = rbac(inbound(annotated))
    assert "rules" not in only and only["shadow_rules"]["action"] == "DENY"


def test_policies_of_other_workloads_and_namespaces_do_not_apply() -> None:
    other = policy("  selector: {matchLabels: {app: other}}\n  action: DENY\n  rules: [{}]\n")
    elsewhere = policy("  action: DENY\n  rules: [{}]\n").replace("namespace: shop", "namespace: other")
    assert rbac(inbound(other, elsewhere)) == []


def test_rule_fields_translate_to_envoy_matchers() -> None:
    rule = {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/client"], "notNamespaces": ["dev"]}},
                     {"source": {"ipBlocks": ["10.0.0.0/8"], "remoteIpBlocks": ["1.2.3.4"]}}],
            "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*", "/items/{*}/reviews"], "hosts": ["*.example.com"],
                                  "notPorts": ["9000"]}}],
            "when": [{"key": "request.headers[x-user]", "values": ["alice"]},
                     {"key": "destination.port", "values": ["9000"]}]}
    result = rule_policy(rule, 9000, ["https://issuer"])
    first, second = result["principals"]
    ids = first["and_ids"]["ids"]
    assert ids[0] == {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/shop/sa/client"}}}
    assert ids[1] == {"not_id": {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/dev/.*"}}}}}
    assert ids[2] == {"header": {"name": "x-user", "string_match": {"exact": "alice"}}}
    assert second["and_ids"]["ids"][:2] == [{"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
                                            {"remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}}]
    rules = result["permissions"][0]["and_rules"]["rules"]
    assert rules[0] == {"header": {"name": ":authority", "string_match": {"suffix": ".example.com", "ignore_case": True}}}
    assert rules[1] == {"header": {"name": ":method", "string_match": {"exact": "GET"}}}
    paths = rules[2]["or_rules"]["rules"]
    assert paths[0] == {"url_path": {"path": {"prefix": "/api/"}}}
    assert paths[1]["uri_template"]["typed_config"]["path_template"] == "/items/*/reviews"
    assert rules[3] == {"not_rule": {"any": True}}  # notPorts names this listener's port
    assert rules[4] == {"any": True}  # destination.port is this listener's port


def test_request_principals_and_claims_read_the_verified_jwt_payload() -> None:
    rule = {"from": [{"source": {"requestPrincipals": ["https://issuer/alice", "*"]}}],
            "when": [{"key": "request.auth.claims[groups]", "values": ["admin"]}]}
    ids = rule_policy(rule, 80, ["https://issuer"])["principals"][0]["and_ids"]["ids"]
    alice, anyone = ids[0]["or_ids"]["ids"]
    assert alice["metadata"]["path"] == [{"key": "https://issuer"}, {"key": "sub"}]
    assert alice["metadata"]["value"] == {"string_match": {"exact": "alice"}}
    assert anyone["metadata"]["value"] == {"present_match": True}
    claim = ids[1]["metadata"]
    assert claim["path"] == [{"key": "https://issuer"}, {"key": "groups"}]
    assert claim["value"]["or_match"]["value_matchers"][1] == {"list_match": {"one_of": {"string_match": {"exact": "admin"}}}}
    # no RequestAuthentication: no token can be verified, so a request principal never matches
    never = {"not_id": {"any": True}}
    assert rule_policy(rule, 80, [])["principals"][0]["and_ids"]["ids"][0] == {"or_ids": {"ids": [never, never]}}


def test_string_match_follows_istio_wildcards() -> None:
    assert string_match("*") == {"safe_regex": {"regex": ".+"}}
    assert string_match("abc*") == {"prefix": "abc"}
    assert string_match("*abc") == {"suffix": "abc"}
    assert string_match("a*c") == {"exact": "a*c"}


JWT = """\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  jwtRules:
  - issuer: https://issuer.test
    audiences: [shop]
    jwksUri: http://127.0.0.1:7777/jwks.json
    fromHeaders: [{name: x-token, prefix: "Token "}]
    fromParams: [tok]
    forwardOriginalToken: true
    outputPayloadToHeader: x-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
"""


def test_request_authentication_becomes_jwt_authn_and_a_jwks_cluster() -> None:
    target = server()
    snapshot = generate(mesh_of(SERVICE, JWT, proxies=[target]), target)
    listener = config(snapshot, LISTENER, "virtualInbound_9000")
    http = listener["filter_chains"][-1]["filters"][-1]["typed_config"]["http_filters"]
    jwt_config = next(f["typed_config"] for f in http if f["name"] == "envoy.filters.http.jwt_authn")
    provider = jwt_config["providers"]["origins-0"]
    assert provider["issuer"] == "https://issuer.test" and provider["audiences"] == ["shop"]
    assert provider["from_headers"] == [{"name": "x-token", "value_prefix": "Token "}]
    assert provider["from_params"] == ["tok"] and provider["forward"] is True
    assert provider["payload_in_metadata"] == "https://issuer.test"
    assert provider["forward_payload_header"] == "x-payload"
    assert provider["claim_to_headers"] == [{"header_name": "x-sub", "claim_name": "sub"}]
    assert provider["remote_jwks"]["http_uri"]["cluster"] == "jwks|127.0.0.1|7777"
    requirements = jwt_config["rules"][0]["requires"]["requires_any"]["requirements"]
    assert requirements == [{"provider_name": "origins-0"}, {"allow_missing": {}}]
    cluster = config(snapshot, CLUSTER, "jwks|127.0.0.1|7777")
    assert cluster["type"] == "STATIC"


WASM = """\
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  url: file:///plugins/{name}.wasm
  phase: {phase}
"""


def test_security_filters_sit_between_wasm_phases_in_istio_order() -> None:
    mesh_config = parse_mesh_config({"extensionProviders": [
        {"name": "opa", "envoyExtAuthzHttp": {"service": "opa.shop.svc.cluster.local", "port": 8181,
                                              "includeRequestHeadersInCheck": ["x-user"]}}]})
    opa = SERVICE.replace("name: server", "name: opa").replace("server.shop.svc", "opa.shop.svc").replace(
        "number: 8080", "number: 8181").replace("app: server", "app: opa")
    custom = policy("  action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n",
                    "ext")
    manifests = [SERVICE, opa, JWT, custom, policy("  action: DENY\n  rules: [{}]\n", "d"),
                 WASM.format(name="authn", phase="AUTHN"), WASM.format(name="authz", phase="AUTHZ"),
                 WASM.format(name="stats", phase="STATS")]
    target = server()
    mesh = mesh_of(*manifests, proxies=[target])
    mesh.config = mesh_config
    listener = config(generate(mesh, target), LISTENER, "virtualInbound_9000")
    names = hcm_filters(listener["filter_chains"][-1])
    assert names == ["envoy.filters.http.rbac", "envoy.filters.http.ext_authz", "shop.authn",
                     "envoy.filters.http.jwt_authn", "shop.authz", "envoy.filters.http.rbac", "shop.stats",
                     "envoy.filters.http.router"]
    http = listener["filter_chains"][-1]["filters"][-1]["typed_config"]["http_filters"]
    ext = http[1]["typed_config"]
    assert ext["http_service"]["server_uri"]["cluster"] == "outbound|8181||opa.shop.svc.cluster.local"
    assert ext["filter_enabled_metadata"]["path"] == [{"key": "istio_ext_authz_shadow_effective_policy_id"}]
    assert list(http[0]["typed_config"]["shadow_rules"]["policies"]) == ["istio-ext-authz-ns[shop]-policy[ext]-rule[0]"]


def test_custom_policy_with_an_unknown_provider_denies_what_it_matches() -> None:
    custom = policy("  action: CUSTOM\n  provider: {name: missing}\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n")
    (deny,) = rbac(inbound(custom))
    assert deny["rules"]["action"] == "DENY"
    assert "envoy.filters.http.ext_authz" not in hcm_filters(inbound(custom)["filter_chains"][-1])


def test_gateway_listeners_enforce_the_policies_that_select_the_gateway() -> None:
    gateway = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
    deny = policy("  selector: {matchLabels: {istio: ingressgateway}}\n  action: DENY\n"
                  "  rules: [{to: [{operation: {ports: ['8080'], paths: [/admin]}}]}]\n")
    router = Proxy(id="router~127.0.0.1~ingress.shop~shop.svc.cluster.local", type="router", name="ingress",
                   namespace="shop", labels={"istio": "ingressgateway"}, outbound_ports={8080: 18080})
    snapshot = generate(mesh_of(SERVICE, gateway, deny, JWT.replace("app: server", "istio: ingressgateway"),
                                proxies=[router]), router)
    listeners = [config(snapshot, LISTENER, name) for name in snapshot.resources(LISTENER)]
    names = [hcm_filters(chain) for listener in listeners for chain in listener["filter_chains"]]
    assert names == [["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac", "envoy.filters.http.fault",
                      "envoy.filters.http.cors", "envoy.filters.http.router"]]
    (deny_filter,) = [f for listener in listeners for f in rbac(listener)]
    rules = next(iter(deny_filter["rules"]["policies"].values()))["permissions"][0]["and_rules"]["rules"]
    assert rules[1] == {"any": True}  # the gateway port is the policy's port
    assert "jwks|127.0.0.1|7777" in snapshot.resources(CLUSTER)


def test_https_jwks_uri_gets_a_tls_cluster_checking_the_host() -> None:
    target = server()
    remote = JWT.replace("http://127.0.0.1:7777/jwks.json", "https://login.example.com/keys")
    snapshot = generate(mesh_of(SERVICE, remote, proxies=[target]), target)
    cluster = config(snapshot, CLUSTER, "jwks|login.example.com|443")
    assert cluster["type"] == "STRICT_DNS"
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "login.example.com"
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "login.example.com"}}]
