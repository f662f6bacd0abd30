"""The RBAC filter, from Envoy's semantics: actions, permissions, principals, shadow rules, refusals."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap
from tests.wasmhost.sidecar._core import commands_summary, get_request, make_runtime, new_stream, take
from wasmhost.sidecar import ConfigError, load_plan
from wasmhost.sidecar._commands import StartUpstream

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
SPIFFE = "spiffe://cluster.local/ns/shop/sa/client"


def rbac_filter(config: dict[str, Any]) -> dict[str, Any]:
    return {"name": "envoy.filters.http.rbac", "typed_config": {"@type": RBAC, **config}}


def decide(filters: list[dict[str, Any]], path: str = "/", method: str = "GET",
           headers: list[tuple[bytes, bytes]] | None = None, peer: str | None = None,
           metadata: dict[str, Any] | None = None) -> tuple[int, Any]:
    """Run one request through ``filters`` + router: 200 when it reaches the upstream, else the local status."""
    _, ctx, _ = make_runtime(bootstrap(http_filters=[*filters, ROUTER_FILTER]))
    stream = new_stream(ctx)
    if peer is not None:
        stream.info.downstream_tls = {"peer_certificate_presented": True, "uri_san_peer_certificate": [peer],
                                      "dns_san_peer_certificate": [], "sni": "outbound_.8080_._.server"}
    if metadata:
        stream.info.dynamic_metadata.update(metadata)
    stream.on_request_headers(get_request(path, method=method, extra=headers or []), True)
    commands = take(ctx)
    if any(isinstance(c, StartUpstream) for c in commands):
        return 200, stream
    summary = commands_summary(commands)
    status = int(summary[0][1])
    if status == 403:
        assert summary[1] == ("SendData", b"RBAC: access denied", True)
    return status, stream


def rules(action: str, policies: dict[str, Any]) -> dict[str, Any]:
    return rbac_filter({"rules": {"action": action, "policies": policies}})


def policy(permissions: list[dict[str, Any]] | None = None, principals: list[dict[str, Any]] | None = None
           ) -> dict[str, Any]:
    return {"permissions": permissions or [{"any": True}], "principals": principals or [{"any": True}]}


PUBLIC_GET = {"and_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                                      {"url_path": {"path": {"prefix": "/public/"}}}]}}


def test_allow_lets_through_only_what_a_policy_matches() -> None:
    allow = [rules("ALLOW", {"p": policy([PUBLIC_GET])})]
    assert decide(allow, "/public/page")[0] == 200
    assert decide(allow, "/public/page?x=1")[0] == 200  # the query is not part of the path
    assert decide(allow, "/public/page", method="POST")[0] == 403
    status, stream = decide(allow, "/private")
    assert status == 403
    assert stream.info.response_code_details == "rbac_access_denied_matched_policy[none]"
    stats = stream.ctx.worker.stats
    assert stats.counter("http.ingress_http.rbac.denied").value == 1
    assert stats.counter("http.ingress_http.rbac.allowed").value == 0  # each decide() has its own runtime


def test_deny_refuses_what_a_policy_matches_and_names_it() -> None:
    deny = [rules("DENY", {"ns[shop]-policy[deny]-rule[0]": policy([{"url_path": {"path": {"exact": "/secret"}}}])})]
    assert decide(deny, "/open")[0] == 200
    status, stream = decide(deny, "/secret")
    assert status == 403
    assert stream.info.response_code_details == "rbac_access_denied_matched_policy[ns[shop]-policy[deny]-rule[0]]"


def test_deny_filter_runs_before_allow_filter() -> None:
    filters = [rules("DENY", {"d": policy([{"url_path": {"path": {"exact": "/public/secret"}}}])}),
               rules("ALLOW", {"a": policy([PUBLIC_GET])})]
    assert decide(filters, "/public/page")[0] == 200
    assert decide(filters, "/public/secret")[0] == 403


def test_allow_with_no_policies_denies_all_and_no_rules_allows_all() -> None:
    assert decide([rules("ALLOW", {})])[0] == 403
    assert decide([rules("DENY", {})])[0] == 200
    assert decide([rbac_filter({})])[0] == 200


def test_authenticated_principal_reads_the_peer_uri_san() -> None:
    by_name = [rules("ALLOW", {"p": policy(principals=[
        {"authenticated": {"principal_name": {"exact": SPIFFE}}}])})]
    assert decide(by_name, peer=SPIFFE)[0] == 200
    assert decide(by_name, peer="spiffe://cluster.local/ns/shop/sa/other")[0] == 403
    assert decide(by_name)[0] == 403  # plaintext: no principal
    any_peer = [rules("ALLOW", {"p": policy(principals=[{"authenticated": {}}])})]
    assert decide(any_peer, peer=SPIFFE)[0] == 200
    assert decide(any_peer)[0] == 403
    namespace = [rules("ALLOW", {"p": policy(principals=[
        {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/shop/.*"}}}}])})]
    assert decide(namespace, peer=SPIFFE)[0] == 200
    assert decide(namespace, peer="spiffe://cluster.local/ns/other/sa/client")[0] == 403


def test_not_or_and_combinators() -> None:
    not_admin = [rules("ALLOW", {"p": policy([{"not_rule": {"url_path": {"path": {"prefix": "/admin"}}}}])})]
    assert decide(not_admin, "/x")[0] == 200
    assert decide(not_admin, "/admin/x")[0] == 403
    either = [rules("ALLOW", {"p": policy(principals=[{"or_ids": {"ids": [
        {"header": {"name": "x-user", "string_match": {"exact": "a"}}},
        {"not_id": {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}}]}}])})]
    assert decide(either, headers=[(b"x-user", b"a")])[0] == 200
    assert decide(either, headers=[(b"x-user", b"b")])[0] == 403  # the test stream comes from 10.0.0.1


def test_addresses_ports_and_sni() -> None:
    source = [rules("ALLOW", {"p": policy(principals=[{"direct_remote_ip": {"address_prefix": "10.0.0.0",
                                                                             "prefix_len": 24}}])})]
    assert decide(source)[0] == 200
    port = [rules("ALLOW", {"p": policy([{"destination_port": 8080}])})]
    assert decide(port)[0] == 200
    other_port = [rules("ALLOW", {"p": policy([{"destination_port": 9090}])})]
    assert decide(other_port)[0] == 403
    sni = [rules("ALLOW", {"p": policy([{"requested_server_name": {"prefix": "outbound_"}}])})]
    assert decide(sni, peer=SPIFFE)[0] == 200
    assert decide(sni)[0] == 403


def test_metadata_matches_the_jwt_payload() -> None:
    jwt_sub = {"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "iss"}, {"key": "sub"}],
                            "value": {"string_match": {"exact": "alice"}}}}
    groups = {"metadata": {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": "iss"}, {"key": "groups"}],
                           "value": {"list_match": {"one_of": {"string_match": {"exact": "staff"}}}}}}
    allow = [rules("ALLOW", {"p": policy(principals=[{"and_ids": {"ids": [jwt_sub, groups]}}])})]
    payload = {"envoy.filters.http.jwt_authn": {"iss": {"sub": "alice", "groups": ["staff", "x"]}}}
    assert decide(allow, metadata=payload)[0] == 200
    assert decide(allow, metadata={"envoy.filters.http.jwt_authn": {"iss": {"sub": "alice", "groups": []}}})[0] == 403
    assert decide(allow)[0] == 403  # no token verified


def test_uri_template_paths() -> None:
    template = {"uri_template": {"name": "uri-template", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
        "path_template": "/books/*/pages/**"}}}
    allow = [rules("ALLOW", {"p": policy([template])})]
    assert decide(allow, "/books/1/pages/2/3")[0] == 200
    assert decide(allow, "/books/1/2/pages/3")[0] == 403


def test_log_action_never_denies_and_shadow_rules_only_record() -> None:
    log = [rules("LOG", {"p": policy()})]
    status, stream = decide(log)
    assert status == 200
    assert stream.info.dynamic_metadata["envoy.filters.http.rbac"]["access_log_hint"] is True
    shadow = [rbac_filter({"shadow_rules": {"action": "ALLOW", "policies": {}},
                           "shadow_rules_stat_prefix": "istio_dry_run_allow_"})]
    status, stream = decide(shadow)
    assert status == 200
    assert stream.ctx.worker.stats.counter("http.ingress_http.rbac.istio_dry_run_allow_shadow_denied").value == 1
    assert stream.info.dynamic_metadata["envoy.filters.http.rbac"]["istio_dry_run_allow_shadow_engine_result"] \
        == "denied"


@pytest.mark.parametrize(("config", "field"), [
    ({"rules": {"policies": {"p": {"permissions": [{"any": True}], "principals": [{"any": True}],
                                   "condition": {"const_expr": {"bool_value": True}}}}}}, "condition"),
    ({"rules": {"policies": {"p": {"permissions": [], "principals": [{"any": True}]}}}}, "permissions"),
    ({"rules": {"policies": {"p": {"permissions": [{"destination_ip": {"address_prefix": "nope"}}],
                                   "principals": [{"any": True}]}}}}, "destination_ip"),
    ({"rules": {"policies": {"p": {"permissions": [{"any": True}],
                                   "principals": [{"header": {"name": "x", "safe_regex_match": {"regex": "("}}}]}}}},
     "safe_regex_match"),
])
def test_unsupported_or_invalid_configs_are_refused_by_path(config: dict[str, Any], field: str) -> None:
    text = yaml.safe_dump(bootstrap(http_filters=[rbac_filter(config), ROUTER_FILTER]))
    with pytest.raises(ConfigError) as caught:
        load_plan(text, "test", 1)
    assert field in str(caught.value)
