"""AuthorizationPolicy semantics, one table row per documented rule (Istio reference docs:
AuthorizationPolicy, its Rule/Source/Operation/Condition messages, the conditions page and the
TCP authorization task). Each row's id and comment paraphrase the rule it checks."""

from __future__ import annotations

import pytest
import yaml

from wasmhost.security.authz import AuthorizationEngine, AuthzRequest, PolicyError, RequestAuth, parse_policy

CART = "cluster.local/ns/shop/sa/cart"
ADMIN = "cluster.local/ns/ops/sa/admin"


def engine(*specs: str) -> AuthorizationEngine:
    return AuthorizationEngine(parse_policy(yaml.safe_load(s) or {}, name=f"p{i}", namespace="shop")
                               for i, s in enumerate(specs))


def req(**kwargs) -> AuthzRequest:
    base = {"source_principal": CART, "source_ip": "10.0.0.5", "destination_ip": "10.0.1.9", "destination_port": 8080,
            "host": "api.shop.svc", "method": "GET", "path": "/", "headers": {}}
    base.update(kwargs)
    return AuthzRequest(**base)


def jwt(iss="https://issuer.example", sub="alice", **claims) -> RequestAuth:
    return RequestAuth(f"{iss}/{sub}", {"iss": iss, "sub": sub, **claims})


ALLOW_ALL = "rules: [{}]"
CASES = [
    # --- actions and evaluation order ---------------------------------------------------------
    ("no-policy-allows", [], req(), True),  # no ALLOW policy for the workload: allow
    ("allow-nothing-spec-empty-denies", ["{}"], req(), False),  # rules unset never match; ALLOW present: deny
    ("allow-all-empty-rule-allows", [ALLOW_ALL], req(), True),  # an empty rule always matches
    ("deny-all-empty-rule-denies", ["{action: DENY, rules: [{}]}"], req(), False),
    ("deny-without-rules-matches-nothing", ["{action: DENY}"], req(), True),
    ("deny-before-allow", ["{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}", ALLOW_ALL],
     req(path="/admin"), False),  # any matching DENY denies, even with a matching ALLOW
    ("deny-not-matching-then-allow", ["{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}", ALLOW_ALL],
     req(path="/home"), True),
    ("allow-present-none-match-denies", ["rules: [{to: [{operation: {methods: [POST]}}]}]"], req(), False),
    ("any-allow-policy-matching-allows", ["rules: [{to: [{operation: {methods: [POST]}}]}]", ALLOW_ALL], req(), True),
    ("audit-alone-does-not-deny", ["{action: AUDIT, rules: [{}]}"], req(), True),  # AUDIT never decides
    ("audit-is-not-an-allow-policy", ["{action: AUDIT, rules: [{to: [{operation: {paths: [/x]}}]}]}"], req(), True),
    ("audit-does-not-rescue-allow-nothing", ["{action: AUDIT, rules: [{}]}", "{}"], req(), False),
    # --- from: principals and their negation, wildcards ----------------------------------------
    ("principals-exact", [f"rules: [{{from: [{{source: {{principals: [{CART}]}}}}]}}]"], req(), True),
    ("principals-other", [f"rules: [{{from: [{{source: {{principals: [{ADMIN}]}}}}]}}]"], req(), False),
    ("principals-spiffe-prefix-accepted", [f"rules: [{{from: [{{source: {{principals: ['spiffe://{CART}']}}}}]}}]"],
     req(), True),
    ("principals-prefix", ["rules: [{from: [{source: {principals: ['cluster.local/ns/shop/*']}}]}]"], req(), True),
    ("principals-suffix", ["rules: [{from: [{source: {principals: ['*/sa/cart']}}]}]"], req(), True),
    ("principals-presence-needs-mtls", ["rules: [{from: [{source: {principals: ['*']}}]}]"],
     req(source_principal=""), False),  # "*" matches only a non-empty value
    ("principals-presence-with-mtls", ["rules: [{from: [{source: {principals: ['*']}}]}]"], req(), True),
    ("not-principals-presence-matches-plaintext", ["{action: DENY, rules: [{from: [{source: {notPrincipals: ['*']}}]}]}"],
     req(source_principal=""), False),
    ("not-principals-excludes", [f"rules: [{{from: [{{source: {{notPrincipals: [{CART}]}}}}]}}]"], req(), False),
    # --- from: namespaces, ip blocks, remote ip blocks, request principals --------------------
    ("namespaces-from-peer-identity", ["rules: [{from: [{source: {namespaces: [shop]}}]}]"], req(), True),
    ("namespaces-plaintext-has-none", ["rules: [{from: [{source: {namespaces: [shop]}}]}]"],
     req(source_principal=""), False),
    ("not-namespaces", ["rules: [{from: [{source: {notNamespaces: [shop]}}]}]"], req(), False),
    ("ip-blocks-cidr", ["rules: [{from: [{source: {ipBlocks: [10.0.0.0/24]}}]}]"], req(), True),
    ("ip-blocks-single-ip", ["rules: [{from: [{source: {ipBlocks: [10.0.0.6]}}]}]"], req(), False),
    ("not-ip-blocks", ["rules: [{from: [{source: {notIpBlocks: [10.0.0.0/8]}}]}]"], req(), False),
    ("remote-ip-blocks-use-original-client", ["rules: [{from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]}]"],
     req(remote_ip="203.0.113.7"), True),
    ("ip-blocks-ignore-original-client", ["rules: [{from: [{source: {ipBlocks: [203.0.113.0/24]}}]}]"],
     req(remote_ip="203.0.113.7"), False),
    ("remote-ip-defaults-to-source", ["rules: [{from: [{source: {remoteIpBlocks: [10.0.0.5]}}]}]"], req(), True),
    ("not-remote-ip-blocks", ["rules: [{from: [{source: {notRemoteIpBlocks: [203.0.113.0/24]}}]}]"],
     req(remote_ip="203.0.113.7"), False),
    ("ipv6-block", ["rules: [{from: [{source: {ipBlocks: ['fd00::/8']}}]}]"], req(source_ip="fd00::1"), True),
    ("request-principals-presence-needs-jwt", ["rules: [{from: [{source: {requestPrincipals: ['*']}}]}]"],
     req(), False),
    ("request-principals-presence-with-jwt", ["rules: [{from: [{source: {requestPrincipals: ['*']}}]}]"],
     req(auth=jwt()), True),
    ("request-principals-exact", ["rules: [{from: [{source: {requestPrincipals: ['https://issuer.example/alice']}}]}]"],
     req(auth=jwt(sub="bob")), False),
    ("not-request-principals", ["rules: [{from: [{source: {notRequestPrincipals: ['*/alice']}}]}]"],
     req(auth=jwt()), False),
    ("source-fields-are-anded", ["rules: [{from: [{source: {namespaces: [shop], ipBlocks: [192.168.0.0/16]}}]}]"],
     req(), False),
    ("sources-are-ored", ["rules: [{from: [{source: {namespaces: [ops]}}, {source: {ipBlocks: [10.0.0.0/8]}}]}]"],
     req(), True),
    # --- to: hosts, ports, methods, paths -------------------------------------------------------
    ("hosts-case-insensitive", ["rules: [{to: [{operation: {hosts: [API.Shop.SVC]}}]}]"], req(), True),
    ("hosts-exact-does-not-strip-port", ["rules: [{to: [{operation: {hosts: [api.shop.svc]}}]}]"],
     req(host="api.shop.svc:8080"), False),
    ("hosts-prefix-covers-port", ["rules: [{to: [{operation: {hosts: ['api.shop.svc:*']}}]}]"],
     req(host="api.shop.svc:8080"), True),
    ("hosts-suffix", ["rules: [{to: [{operation: {hosts: ['*.shop.svc']}}]}]"], req(), True),
    ("not-hosts", ["rules: [{to: [{operation: {notHosts: ['*.shop.svc']}}]}]"], req(), False),
    ("ports", ["rules: [{to: [{operation: {ports: ['8080']}}]}]"], req(), True),
    ("not-ports", ["rules: [{to: [{operation: {notPorts: ['8080']}}]}]"], req(), False),
    ("methods", ["rules: [{to: [{operation: {methods: [GET, HEAD]}}]}]"], req(), True),
    ("not-methods", ["rules: [{to: [{operation: {notMethods: [GET]}}]}]"], req(), False),
    ("paths-exact", ["rules: [{to: [{operation: {paths: [/info]}}]}]"], req(path="/info/x"), False),
    ("paths-prefix", ["rules: [{to: [{operation: {paths: ['/info*']}}]}]"], req(path="/info/x"), True),
    ("paths-suffix", ["rules: [{to: [{operation: {paths: ['*.png']}}]}]"], req(path="/img/a.png"), True),
    ("paths-presence", ["rules: [{to: [{operation: {paths: ['*']}}]}]"], req(path="/anything"), True),
    ("paths-ignore-query", ["rules: [{to: [{operation: {paths: [/search]}}]}]"], req(path="/search?q=1"), True),
    ("paths-middle-star-is-literal", ["rules: [{to: [{operation: {paths: ['/a*b']}}]}]"], req(path="/axxb"), False),
    ("paths-template-one-segment", ["rules: [{to: [{operation: {paths: ['/users/{*}/profile']}}]}]"],
     req(path="/users/42/profile"), True),
    ("paths-template-one-segment-only", ["rules: [{to: [{operation: {paths: ['/users/{*}/profile']}}]}]"],
     req(path="/users/4/2/profile"), False),
    ("paths-template-rest", ["rules: [{to: [{operation: {paths: ['/static/{**}']}}]}]"],
     req(path="/static/css/a.css"), True),
    ("not-paths", ["rules: [{to: [{operation: {notPaths: ['/admin*']}}]}]"], req(path="/admin/x"), False),
    ("operation-fields-are-anded", ["rules: [{to: [{operation: {methods: [GET], paths: [/x]}}]}]"], req(), False),
    ("operations-are-ored", ["rules: [{to: [{operation: {methods: [POST]}}, {operation: {paths: ['/']}}]}]"],
     req(), True),
    ("rule-needs-from-and-to", [f"rules: [{{from: [{{source: {{principals: [{CART}]}}}}], to: [{{operation: {{methods: [POST]}}}}]}}]"],
     req(), False),
    ("rules-are-ored", ["rules: [{to: [{operation: {methods: [POST]}}]}, {to: [{operation: {methods: [GET]}}]}]"],
     req(), True),
    # --- when ---------------------------------------------------------------------------------
    ("when-header", ["rules: [{when: [{key: 'request.headers[X-Tenant]', values: [acme]}]}]"],
     req(headers={"x-tenant": "acme"}), True),
    ("when-header-wildcard", ["rules: [{when: [{key: 'request.headers[User-Agent]', values: ['Mozilla/*']}]}]"],
     req(headers={"User-Agent": "Mozilla/5.0"}), True),
    ("when-header-missing", ["rules: [{when: [{key: 'request.headers[X-Tenant]', values: ['*']}]}]"], req(), False),
    ("when-header-not-values", ["rules: [{when: [{key: 'request.headers[X-Tenant]', notValues: [evil]}]}]"],
     req(headers={"x-tenant": "evil"}), False),
    ("when-values-and-not-values", ["rules: [{when: [{key: 'request.headers[x]', values: ['a*'], notValues: [ab]}]}]"],
     req(headers={"x": "ab"}), False),
    ("when-source-ip", ["rules: [{when: [{key: source.ip, values: [10.0.0.0/16]}]}]"], req(), True),
    ("when-remote-ip", ["rules: [{when: [{key: remote.ip, values: [198.51.100.1]}]}]"],
     req(remote_ip="198.51.100.1"), True),
    ("when-source-namespace", ["rules: [{when: [{key: source.namespace, values: [ops]}]}]"], req(), False),
    ("when-source-principal", [f"rules: [{{when: [{{key: source.principal, values: [{CART}]}}]}}]"], req(), True),
    ("when-auth-principal", ["rules: [{when: [{key: request.auth.principal, values: ['https://issuer.example/*']}]}]"],
     req(auth=jwt()), True),
    ("when-auth-audiences", ["rules: [{when: [{key: request.auth.audiences, values: [shop-api]}]}]"],
     req(auth=jwt(aud=["web", "shop-api"])), True),
    ("when-auth-presenter", ["rules: [{when: [{key: request.auth.presenter, values: [web-client]}]}]"],
     req(auth=jwt(azp="web-client")), True),
    ("when-claim", ["rules: [{when: [{key: 'request.auth.claims[iss]', values: ['https://issuer.example']}]}]"],
     req(auth=jwt()), True),
    ("when-claim-list-any-element", ["rules: [{when: [{key: 'request.auth.claims[groups]', values: [admins]}]}]"],
     req(auth=jwt(groups=["dev", "admins"])), True),
    ("when-claim-nested", ["rules: [{when: [{key: 'request.auth.claims[realm][role]', values: [owner]}]}]"],
     req(auth=jwt(realm={"role": "owner"})), True),
    ("when-claim-nested-missing", ["rules: [{when: [{key: 'request.auth.claims[realm][role]', values: [owner]}]}]"],
     req(auth=jwt(realm="flat")), False),
    ("when-claim-without-jwt", ["rules: [{when: [{key: 'request.auth.claims[iss]', values: ['*']}]}]"], req(), False),
    ("when-destination-ip", ["rules: [{when: [{key: destination.ip, values: [10.0.1.0/24]}]}]"], req(), True),
    ("when-destination-port", ["rules: [{when: [{key: destination.port, values: ['80', '443']}]}]"], req(), False),
    ("when-sni", ["rules: [{when: [{key: connection.sni, values: ['*.shop.svc']}]}]"], req(sni="api.shop.svc"), True),
    ("when-conditions-are-anded", ["rules: [{when: [{key: source.namespace, values: [shop]}, {key: destination.port, values: ['1']}]}]"],
     req(), False),
    ("experimental-key-never-grants-allow", ["rules: [{when: [{key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: ['[update]']}]}]"],
     req(), False),
    ("experimental-key-still-denies", ["{action: DENY, rules: [{when: [{key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: ['[update]']}]}]}"],
     req(), False),
    # --- TCP traffic: HTTP-only attributes -------------------------------------------------------
    ("tcp-deny-treats-http-fields-as-matching", ["{action: DENY, rules: [{to: [{operation: {methods: [POST], ports: ['8080']}}]}]}"],
     req(protocol="tcp", method=""), False),
    ("tcp-deny-still-scoped-by-port", ["{action: DENY, rules: [{to: [{operation: {methods: [POST], ports: ['9090']}}]}]}"],
     req(protocol="tcp", method=""), True),
    ("tcp-allow-rule-with-http-fields-never-matches", ["rules: [{to: [{operation: {methods: [GET], ports: ['8080']}}]}]"],
     req(protocol="tcp"), False),
    ("tcp-allow-with-tcp-fields", [f"rules: [{{from: [{{source: {{principals: [{CART}]}}}}], to: [{{operation: {{ports: ['8080']}}}}]}}]"],
     req(protocol="tcp"), True),
    ("tcp-allow-request-principals-never-match", ["rules: [{from: [{source: {requestPrincipals: ['*']}}]}]"],
     req(protocol="tcp", auth=jwt()), False),
]


@pytest.mark.parametrize(("specs", "request_", "allowed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_documented_semantics(specs, request_, allowed):
    decision = engine(*specs).check(request_)
    assert decision.allowed is allowed, decision.reason


def test_audit_marks_the_request_without_changing_the_decision():
    decision = engine("{action: AUDIT, rules: [{to: [{operation: {paths: ['/user/profile/*']}}]}]}").check(
        req(path="/user/profile/1"))
    assert decision.allowed and decision.audit_policies == ("shop/p0",)
    assert not engine("{action: AUDIT, rules: [{to: [{operation: {paths: [/x]}}]}]}").check(req()).audit


def test_decision_names_the_deciding_policy_and_rule():
    decision = engine("{action: DENY, rules: [{to: [{operation: {paths: [/a]}}]}, {to: [{operation: {paths: [/b]}}]}]}").check(
        req(path="/b"))
    assert decision.policy == "shop/p0" and "rule 1" in decision.reason


def test_dry_run_policy_is_evaluated_but_not_enforced():
    manifest = {"kind": "AuthorizationPolicy", "metadata": {"name": "dry", "namespace": "shop",
                                                            "annotations": {"istio.io/dry-run": "true"}},
                "spec": {"action": "DENY", "rules": [{}]}}
    decision = AuthorizationEngine([parse_policy(manifest)]).check(req())
    assert decision.allowed and decision.shadow_allowed is False and decision.shadow_policy == "shop/dry"


def test_scope_by_namespace_root_namespace_and_selector():
    policy = parse_policy({"metadata": {"name": "p", "namespace": "shop"}, "kind": "AuthorizationPolicy",
                           "spec": {"selector": {"matchLabels": {"app": "cart"}}}})
    assert policy.applies_to("shop", {"app": "cart", "v": "1"})
    assert not policy.applies_to("shop", {"app": "web"})
    assert not policy.applies_to("other", {"app": "cart"})
    mesh_wide = parse_policy({"kind": "AuthorizationPolicy", "metadata": {"name": "m", "namespace": "istio-system"},
                              "spec": {}})
    assert mesh_wide.applies_to("any", {})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"action": "PERMIT"}, "spec.action: 'PERMIT' is not"),
        ({"action": "CUSTOM", "rules": [{}]}, "spec.provider.name: required"),
        ({"provider": {"name": "x"}}, "spec.provider: only allowed with action CUSTOM"),
        ({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8", "300.1.1.1"]}}]}]},
         r"spec.rules\[0\].from\[0\].source.ipBlocks\[1\]: '300.1.1.1' is not an IP"),
        ({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}, r"ports\[0\]: 'http' is not a port"),
        ({"rules": [{"to": [{"operation": {"verbs": ["GET"]}}]}]}, r"operation.verbs: unknown field"),
        ({"rules": [{"when": [{"key": "request.body", "values": ["x"]}]}]}, "unsupported condition key 'request.body'"),
        ({"rules": [{"when": [{"key": "source.ip"}]}]}, "at least one of values or notValues"),
        ({"rules": [{"to": [{"operation": {"paths": ["/a/{**}/b/{*}"]}}]}]}, "must be the last operator"),
        ({"rules": [{"to": [{"operation": {"paths": ["/a/{*}*"]}}]}]}, "mixes a path template"),
        ({"rules": [{"from": [{"source": {"principals": "cart"}}]}]}, "principals: must be a list of strings"),
        ({"rules": {"to": []}}, "spec.rules: must be a list"),
    ],
)
def test_invalid_policies_are_refused_naming_the_field(spec, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(spec)


def test_one_workload_cannot_use_two_custom_providers():
    with pytest.raises(PolicyError, match="at most one"):
        engine("{action: CUSTOM, provider: {name: a}, rules: [{}]}", "{action: CUSTOM, provider: {name: b}, rules: [{}]}")
