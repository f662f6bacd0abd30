"""The ext_authz filter (HTTP service), from Envoy's semantics: what the check request carries,
how the server's answer is read (200 continues, 5xx/failure is an error, anything else denies),
``filter_enabled_metadata`` as set by Istio's marking RBAC filter, and refusals by field path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import yaml
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format

from tests.wasmhost.sidecar._bootstrap import ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._core import get_request, make_runtime, new_stream, take
from wasmhost.sidecar import ConfigError, HeaderMap, load_plan
from wasmhost.sidecar._buffer import Buffer
from wasmhost.sidecar._commands import SendUpstreamData, StartUpstream
from wasmhost.sidecar._ext_authz import ExtAuthzFilter, parse_ext_authz
from wasmhost.sidecar._filter_api import (
    DataStatus,
    HeadersStatus,
    HttpCallResult,
    ResponseFlag,
    StreamInfo,
    TrailersStatus,
)

EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
AUTHZ_CLUSTER = "outbound|8000||authz.test"


def istio_config(**extra: Any) -> dict[str, Any]:
    """What the control plane emits for an ``envoyExtAuthzHttp`` provider."""
    service = {"server_uri": {"uri": "http://authz.test:8000", "cluster": AUTHZ_CLUSTER, "timeout": "0.6s"},
               "path_prefix": "/check",
               "authorization_request": {"allowed_headers": {"patterns": [{"exact": "x-ext-authz",
                                                                           "ignore_case": True}]}},
               "authorization_response": {
                   "allowed_upstream_headers": {"patterns": [{"exact": "x-user", "ignore_case": True}]},
                   "allowed_client_headers": {"patterns": [{"exact": "x-reason", "ignore_case": True}]}}}
    return {"transport_api_version": "V3", "http_service": service, **extra}


class FakeCallbacks:
    """A fake stream (named as one): records callouts and replies; the test answers the callouts."""

    def __init__(self) -> None:
        self.stream_info = StreamInfo(0.0, 0.0, 1, ("10.0.0.1", 1), ("127.0.0.1", 2))
        self.calls: list[tuple[str, list[Any], float, Callable[[HttpCallResult], None]]] = []
        self.cancelled: list[int] = []
        self.bodies: list[bytes] = []
        self.replies: list[tuple[int, bytes, list[Any], str]] = []
        self.continued = 0
        self.buffer: Buffer | None = None  # what the test buffered after StopIterationAndBuffer

    def decoding_buffer(self) -> Buffer | None:
        return self.buffer

    def dispatch_http_call(self, cluster: str, headers: Any, body: bytes, trailers: Any, timeout: float,
                           on_result: Callable[[HttpCallResult], None]) -> int:
        self.bodies.append(body)
        self.calls.append((cluster, list(headers), timeout, on_result))
        return len(self.calls)

    def cancel_http_call(self, token: int) -> None:
        self.cancelled.append(token)

    def continue_decoding(self) -> None:
        self.continued += 1

    def send_local_reply(self, status: int, body: bytes = b"", headers: Any = (), details: str = "",
                         grpc_status: int | None = None) -> None:
        self.replies.append((status, body, list(headers), details))


def make(config: dict[str, Any]) -> tuple[ExtAuthzFilter, FakeCallbacks]:
    parsed = parse_ext_authz(json_format.ParseDict(config, ext_authz_pb2.ExtAuthz()))
    callbacks = FakeCallbacks()
    return ExtAuthzFilter(parsed, callbacks), callbacks  # type: ignore[arg-type]


def request(path: str = "/items?x=1") -> HeaderMap:
    return get_request(path, authority="shop.test", method="POST", extra=[
        (b"authorization", b"Bearer t"), (b"x-ext-authz", b"allow"), (b"x-other", b"secret"),
        (b"content-length", b"5")])


def answer(status: int, headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b"") -> HttpCallResult:
    return HttpCallResult(HeaderMap([(b":status", str(status).encode()), *headers]), body, None)


def test_check_request_carries_method_prefixed_path_and_only_allowed_headers() -> None:
    item, callbacks = make(istio_config())
    assert item.decode_headers(request(), False) == HeadersStatus.StopAllIterationAndWatermark
    cluster_name, sent, timeout, _ = callbacks.calls[0]
    headers = dict(sent)
    assert cluster_name == AUTHZ_CLUSTER and timeout == pytest.approx(0.6)
    assert headers[b":method"] == b"POST" and headers[b":path"] == b"/check/items?x=1"
    assert headers[b":authority"] == b"shop.test"
    assert headers[b"authorization"] == b"Bearer t" and headers[b"x-ext-authz"] == b"allow"
    assert b"x-other" not in headers and headers[b"content-length"] == b"0" and callbacks.bodies == [b""]


def test_200_continues_with_only_the_allowed_upstream_headers() -> None:
    item, callbacks = make(istio_config())
    headers = request()
    item.decode_headers(headers, True)
    callbacks.calls[0][3](answer(200, [(b"x-user", b"alice"), (b"x-internal", b"no")]))
    assert callbacks.continued == 1 and callbacks.replies == []
    assert headers.get(b"x-user") == b"alice" and headers.get(b"x-internal") is None


def test_denial_passes_the_servers_status_body_and_allowed_client_headers() -> None:
    item, callbacks = make(istio_config())
    item.decode_headers(request(), True)
    callbacks.calls[0][3](answer(401, [(b"x-reason", b"no"), (b"x-secret", b"s"), (b"www-authenticate", b"Basic")],
                                 b"denied by ext_authz"))
    assert callbacks.continued == 0
    status, body, headers, details = callbacks.replies[0]
    assert (status, body, details) == (401, b"denied by ext_authz", "ext_authz_denied")
    assert (b"x-reason", b"no") in headers and (b"www-authenticate", b"Basic") in headers
    assert all(name != b"x-secret" for name, _ in headers)
    assert callbacks.stream_info.has_flag(ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)  # UAEX in access logs


def test_an_allowed_request_carries_no_uaex_flag() -> None:
    item, callbacks = make(istio_config())
    item.decode_headers(request(), True)
    callbacks.calls[0][3](answer(200))
    assert not callbacks.stream_info.has_flag(ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)


def test_without_allowed_client_headers_all_answer_headers_reach_the_client() -> None:
    config = istio_config()
    del config["http_service"]["authorization_response"]["allowed_client_headers"]
    item, callbacks = make(config)
    item.decode_headers(request(), True)
    callbacks.calls[0][3](answer(403, [(b"x-secret", b"s")]))
    assert callbacks.replies[0][0] == 403 and (b"x-secret", b"s") in callbacks.replies[0][2]


@pytest.mark.parametrize("result", [HttpCallResult(None, b"", None, failure="reset"), answer(503), answer(504)])
def test_server_failure_is_403_or_status_on_error_unless_failure_mode_allow(result: HttpCallResult) -> None:
    item, callbacks = make(istio_config())
    item.decode_headers(request(), True)
    callbacks.calls[0][3](result)
    assert callbacks.replies == [(403, b"", [], "ext_authz_error")]
    assert callbacks.stream_info.has_flag(ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)

    item, callbacks = make(istio_config(status_on_error={"code": 503}))
    item.decode_headers(request(), True)
    callbacks.calls[0][3](result)
    assert [r[0] for r in callbacks.replies] == [503]

    item, callbacks = make(istio_config(failure_mode_allow=True))
    item.decode_headers(request(), True)
    callbacks.calls[0][3](result)
    assert callbacks.replies == [] and callbacks.continued == 1
    assert not callbacks.stream_info.has_flag(ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)


def test_unknown_cluster_is_an_error_at_request_time() -> None:
    item, callbacks = make(istio_config())

    def refuse(*args: Any) -> int:
        from wasmhost.sidecar import UnknownClusterError
        raise UnknownClusterError("outbound|8000||authz.test")

    callbacks.dispatch_http_call = refuse  # type: ignore[method-assign,assignment]
    assert item.decode_headers(request(), True) == HeadersStatus.StopIteration
    assert callbacks.replies[0][0] == 403


def test_filter_enabled_metadata_decides_whether_to_check() -> None:
    marked = {"filter": "envoy.filters.http.rbac", "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
              "value": {"string_match": {"prefix": "istio-ext-authz"}}}
    item, callbacks = make(istio_config(filter_enabled_metadata=marked))
    assert item.decode_headers(request(), True) == HeadersStatus.Continue and callbacks.calls == []

    item, callbacks = make(istio_config(filter_enabled_metadata=marked))
    callbacks.stream_info.dynamic_metadata["envoy.filters.http.rbac"] = {
        "istio_ext_authz_shadow_effective_policy_id": "istio-ext-authz-ns[default]-policy[p]-rule[0]"}
    assert item.decode_headers(request(), True) == HeadersStatus.StopAllIterationAndWatermark
    assert len(callbacks.calls) == 1


def test_a_destroyed_stream_cancels_the_check_and_ignores_a_late_answer() -> None:
    item, callbacks = make(istio_config())
    item.decode_headers(request(), True)
    item.on_destroy()
    assert callbacks.cancelled == [1]
    callbacks.calls[0][3](answer(403))
    assert callbacks.replies == [] and callbacks.continued == 0


def test_marking_rbac_then_ext_authz_in_a_real_plan() -> None:
    """Istio's chain: the shadow RBAC filter marks /admin; only marked requests call the authz cluster."""
    rbac = {"@type": RBAC, "shadow_rules_stat_prefix": "istio_ext_authz_", "shadow_rules": {
        "action": "ALLOW", "policies": {"istio-ext-authz-ns[default]-policy[p]-rule[0]": {
            "permissions": [{"url_path": {"path": {"prefix": "/admin"}}}], "principals": [{"any": True}]}}}}
    marked = {"filter": "envoy.filters.http.rbac", "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
              "value": {"string_match": {"prefix": "istio-ext-authz"}}}
    filters = [{"name": "envoy.filters.http.rbac", "typed_config": rbac},
               {"name": "envoy.filters.http.ext_authz",
                "typed_config": {"@type": EXT_AUTHZ, **istio_config(filter_enabled_metadata=marked)}},
               ROUTER_FILTER]
    config = bootstrap(http_filters=filters, clusters=[cluster("backend", 9), cluster(AUTHZ_CLUSTER, 10)])
    _, ctx, _ = make_runtime(config)

    def cluster_called(path: str) -> str:
        stream = new_stream(ctx)
        stream.on_request_headers(get_request(path), True)
        starts = [c for c in take(ctx) if isinstance(c, StartUpstream)]
        assert len(starts) == 1
        return str(starts[0].sink.cluster.name)

    assert cluster_called("/public") == "backend"
    assert cluster_called("/admin/users") == AUTHZ_CLUSTER


@pytest.mark.parametrize(("extra", "field"), [
    ({"grpc_service": {"google_grpc": {"target_uri": "authz:9000", "stat_prefix": "a"}}}, "grpc_service.google_grpc"),
    ({"grpc_service": {"envoy_grpc": {"cluster_name": "authz", "retry_policy": {}}}},
     "grpc_service.envoy_grpc.retry_policy"),
    ({"transport_api_version": "V2"}, "transport_api_version"),
    ({"with_request_body": {"max_request_bytes": 0}}, "with_request_body.max_request_bytes"),
    ({"with_request_body": {"max_request_bytes": 9, "pack_as_bytes": True}}, "with_request_body.pack_as_bytes"),
    ({"clear_route_cache": True}, "clear_route_cache"),
    ({"filter_enabled": {"default_value": {"numerator": 50}}}, "filter_enabled"),
    ({"status_on_error": {"code": 700}}, "status_on_error.code"),
])
def test_unsupported_or_invalid_configs_are_refused_by_path(extra: dict[str, Any], field: str) -> None:
    config = istio_config(**extra)
    if "grpc_service" in extra:
        del config["http_service"]
    filters = [{"name": "envoy.filters.http.ext_authz", "typed_config": {"@type": EXT_AUTHZ, **config}},
               ROUTER_FILTER]
    with pytest.raises(ConfigError) as caught:
        load_plan(yaml.safe_dump(bootstrap(http_filters=filters)), "test", 1)
    assert field in str(caught.value)


@pytest.mark.parametrize(("change", "field"), [
    (lambda s: s["server_uri"].pop("cluster"), "http_service.server_uri.cluster"),
    (lambda s: s.update(authorization_request={"allowed_headers": {"patterns": [{"exact": "a"}]},
                                               "headers_to_add": [{"key": "", "value": "v"}]}),
     "http_service.authorization_request.headers_to_add[0].key"),
    (lambda s: s["authorization_response"].update(allowed_upstream_headers_to_append={"patterns": [{"exact": "a"}]}),
     "http_service.authorization_response.allowed_upstream_headers_to_append"),
])
def test_http_service_fields_are_refused_by_path(change: Callable[[dict[str, Any]], Any], field: str) -> None:
    config = istio_config()
    change(config["http_service"])
    with pytest.raises(ConfigError) as caught:
        parse_ext_authz(json_format.ParseDict(config, ext_authz_pb2.ExtAuthz()))
    assert field in str(caught.value)


GRPC_CONFIG = {"transport_api_version": "V3", "grpc_service": {
    "envoy_grpc": {"cluster_name": AUTHZ_CLUSTER, "authority": "authz.test"}, "timeout": "0.5s"}}


def grpc_answer(reply: external_auth_pb2.CheckResponse, grpc_status: bytes = b"0") -> HttpCallResult:
    payload = reply.SerializeToString()
    return HttpCallResult(HeaderMap([(b":status", b"200"), (b"content-type", b"application/grpc")]),
                          b"\x00" + len(payload).to_bytes(4, "big") + payload,
                          HeaderMap([(b"grpc-status", grpc_status)]))


def test_grpc_check_is_a_unary_call_carrying_the_request_attributes() -> None:
    item, callbacks = make(GRPC_CONFIG)
    assert item.decode_headers(request(), True) == HeadersStatus.StopAllIterationAndWatermark
    cluster_name, sent, timeout, _ = callbacks.calls[0]
    headers = dict(sent)
    assert cluster_name == AUTHZ_CLUSTER and timeout == pytest.approx(0.5)
    assert headers[b":method"] == b"POST" and headers[b":path"] == b"/envoy.service.auth.v3.Authorization/Check"
    assert headers[b":authority"] == b"authz.test" and headers[b"content-type"] == b"application/grpc"
    body = callbacks.bodies[0]
    assert body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5
    check = external_auth_pb2.CheckRequest.FromString(body[5:])
    http = check.attributes.request.http
    assert (http.method, http.path, http.host) == ("POST", "/items?x=1", "shop.test")
    assert http.headers["x-other"] == "secret" and http.headers["authorization"] == "Bearer t"
    assert check.attributes.source.address.socket_address.address == "10.0.0.1"


def test_grpc_ok_applies_header_changes_and_denied_answers_as_given() -> None:
    item, callbacks = make(GRPC_CONFIG)
    headers = request()
    item.decode_headers(headers, True)
    reply = external_auth_pb2.CheckResponse()
    reply.ok_response.headers.add(header={"key": "x-user", "value": "alice"})
    reply.ok_response.headers.add(header={"key": "x-ext-authz", "value": "more"}, append={"value": True})
    reply.ok_response.headers_to_remove.append("x-other")
    callbacks.calls[0][3](grpc_answer(reply))
    assert callbacks.continued == 1 and callbacks.replies == []
    assert headers.get(b"x-user") == b"alice" and headers.get(b"x-other") is None
    assert headers.get_all(b"x-ext-authz") == [b"allow", b"more"]

    item, callbacks = make(GRPC_CONFIG)
    item.decode_headers(request(), True)
    denied = external_auth_pb2.CheckResponse()
    denied.status.code = 7  # PERMISSION_DENIED
    denied.denied_response.status.code = 401
    denied.denied_response.body = "go away"
    denied.denied_response.headers.add(header={"key": "x-reason", "value": "no"})
    callbacks.calls[0][3](grpc_answer(denied))
    assert callbacks.replies == [(401, b"go away", [(b"x-reason", b"no")], "ext_authz_denied")]

    item, callbacks = make(GRPC_CONFIG)
    item.decode_headers(request(), True)
    denied.ClearField("denied_response")
    callbacks.calls[0][3](grpc_answer(denied))
    assert callbacks.replies[0][0] == 403  # denied without a denied_response


@pytest.mark.parametrize("result", [
    HttpCallResult(None, b"", None, failure="reset"),
    grpc_answer(external_auth_pb2.CheckResponse(), grpc_status=b"14"),  # UNAVAILABLE
    HttpCallResult(HeaderMap([(b":status", b"503")]), b"no healthy upstream", None),
    HttpCallResult(HeaderMap([(b":status", b"200")]), b"\x00\x00\x00\x00\x09short", HeaderMap([(b"grpc-status", b"0")])),
])
def test_grpc_failures_are_errors(result: HttpCallResult) -> None:
    item, callbacks = make({**GRPC_CONFIG, "status_on_error": {"code": 503}})
    item.decode_headers(request(), True)
    callbacks.calls[0][3](result)
    assert [r[0] for r in callbacks.replies] == [503]


def feed(item: ExtAuthzFilter, callbacks: FakeCallbacks, chunks: list[bytes], end: bool = True) -> list[DataStatus]:
    """Send body chunks as a stream would, buffering what the filter asks to buffer."""
    out = []
    for index, chunk in enumerate(chunks):
        status = item.decode_data(Buffer(chunk), end and index == len(chunks) - 1)
        if status == DataStatus.StopIterationAndBuffer:
            callbacks.buffer = callbacks.buffer or Buffer()
            callbacks.buffer.append(chunk)
        out.append(status)
    return out


def test_with_request_body_sends_the_buffered_body_with_the_check() -> None:
    item, callbacks = make(istio_config(with_request_body={"max_request_bytes": 100}))
    assert item.decode_headers(request(), False) == HeadersStatus.StopIteration
    assert callbacks.calls == []
    assert feed(item, callbacks, [b"hello ", b"world"]) == [DataStatus.StopIterationAndBuffer] * 2
    headers = dict(callbacks.calls[0][1])
    assert callbacks.bodies == [b"hello world"] and headers[b"content-length"] == b"11"
    assert headers[b"x-envoy-auth-partial-body"] == b"false"
    callbacks.calls[0][3](answer(200))
    assert callbacks.continued == 1


def test_a_body_over_the_limit_is_413_unless_partial_messages_are_allowed() -> None:
    item, callbacks = make(istio_config(with_request_body={"max_request_bytes": 4}))
    item.decode_headers(request(), False)
    assert feed(item, callbacks, [b"abc", b"defg"]) == [DataStatus.StopIterationAndBuffer,
                                                       DataStatus.StopIterationNoBuffer]
    assert callbacks.calls == [] and callbacks.replies[0][0] == 413

    item, callbacks = make(istio_config(with_request_body={"max_request_bytes": 4, "allow_partial_message": True}))
    item.decode_headers(request(), False)
    feed(item, callbacks, [b"abc", b"defg", b"more"], end=False)
    assert callbacks.bodies == [b"abcd"]
    assert dict(callbacks.calls[0][1])[b"x-envoy-auth-partial-body"] == b"true"


def test_with_request_body_checks_at_the_trailers_and_without_a_body() -> None:
    item, callbacks = make(istio_config(with_request_body={"max_request_bytes": 100}))
    item.decode_headers(request(), False)
    feed(item, callbacks, [b"data"], end=False)
    assert callbacks.calls == []
    assert item.decode_trailers(HeaderMap([(b"x-t", b"1")])) == TrailersStatus.StopIteration
    assert callbacks.bodies == [b"data"]

    item, callbacks = make(istio_config(with_request_body={"max_request_bytes": 100}))
    assert item.decode_headers(request(), True) == HeadersStatus.StopAllIterationAndWatermark
    assert callbacks.bodies == [b""]


def test_grpc_with_request_body_puts_it_in_the_check_request() -> None:
    for packed in (False, True):
        item, callbacks = make({**GRPC_CONFIG, "with_request_body": {"max_request_bytes": 50, "pack_as_bytes": packed}})
        item.decode_headers(request(), False)
        feed(item, callbacks, [b"{\"a\": 1}"])
        http = external_auth_pb2.CheckRequest.FromString(callbacks.bodies[0][5:]).attributes.request.http
        assert (http.raw_body, http.body) == ((b'{"a": 1}', "") if packed else (b"", '{"a": 1}'))


def test_body_check_in_a_real_stream_releases_headers_and_body_after_the_answer() -> None:
    filters = [{"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": EXT_AUTHZ, **istio_config(with_request_body={"max_request_bytes": 100})}}, ROUTER_FILTER]
    config = bootstrap(http_filters=filters, clusters=[cluster("backend", 9), cluster(AUTHZ_CLUSTER, 10)])
    _, ctx, _ = make_runtime(config)
    stream = new_stream(ctx)
    stream.on_request_headers(get_request("/upload", method="POST", extra=[(b"content-length", b"10")]), False)
    assert take(ctx) == []
    stream.on_request_data(b"0123456789", True)
    commands = take(ctx)
    check = next(c for c in commands if isinstance(c, StartUpstream))
    assert check.sink.cluster.name == AUTHZ_CLUSTER
    assert [c.data for c in commands if isinstance(c, SendUpstreamData)] == [b"0123456789"]
    check.sink.on_response_headers(HeaderMap([(b":status", b"200"), (b"x-user", b"bob")]), True)
    commands = take(ctx)
    routed = next(c for c in commands if isinstance(c, StartUpstream))
    assert routed.sink.cluster.name == "backend" and routed.sink.headers.get(b"x-user") == b"bob"
    assert b"".join(c.data for c in commands if isinstance(c, SendUpstreamData)) == b"0123456789"


def test_counters_under_the_connection_managers_stat_prefix() -> None:
    """Envoy's ``http.<hcm prefix>.ext_authz.[<stat_prefix>.]`` counters: ok, denied, error, failure_mode_allowed."""

    def counters(extra: dict[str, Any], statuses: list[bytes]) -> dict[str, int]:
        filters = [{"name": "envoy.filters.http.ext_authz", "typed_config": {"@type": EXT_AUTHZ, **istio_config(**extra)}},
                   ROUTER_FILTER]
        config = bootstrap(http_filters=filters, clusters=[cluster("backend", 9), cluster(AUTHZ_CLUSTER, 10)])
        _, ctx, _ = make_runtime(config)
        for status in statuses:
            stream = new_stream(ctx)
            stream.on_request_headers(get_request("/x"), True)
            check = next(c for c in take(ctx) if isinstance(c, StartUpstream))
            check.sink.on_response_headers(HeaderMap([(b":status", status)]), True)
            take(ctx)
        root = "http.ingress_http.ext_authz." + (f"{extra['stat_prefix']}." if "stat_prefix" in extra else "")
        names = ("ok", "denied", "error", "failure_mode_allowed")
        return {name: ctx.worker.stats.counter(root + name).value for name in names}

    assert counters({}, [b"200", b"200", b"403", b"503"]) == {
        "ok": 2, "denied": 1, "error": 1, "failure_mode_allowed": 0}
    assert counters({"failure_mode_allow": True, "stat_prefix": "waf"}, [b"503", b"401"]) == {
        "ok": 0, "denied": 1, "error": 1, "failure_mode_allowed": 1}
