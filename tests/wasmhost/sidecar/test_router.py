"""The router filter without sockets: upstream attempts, retries, timeouts, rewrites, local replies."""

from __future__ import annotations

from typing import Any

from tests.wasmhost.sidecar._bootstrap import bootstrap, cluster
from tests.wasmhost.sidecar._core import commands_summary, get_request, make_runtime, new_stream, take
from wasmhost.sidecar import HeaderMap
from wasmhost.sidecar._commands import ResetUpstream, SendHeaders, StartUpstream, Timer
from wasmhost.sidecar._upstream_sink import CONNECTION_FAILURE


def routes(*routes: dict[str, Any], **vhost: Any) -> list[dict[str, Any]]:
    return [{"name": "vh", "domains": ["*"], "routes": list(routes), **vhost}]


def forward(cluster_name: str = "backend", **action: Any) -> dict[str, Any]:
    return {"match": {"prefix": "/"}, "route": {"cluster": cluster_name, **action}}


def start(config: dict[str, Any], request: HeaderMap | None = None, end_stream: bool = True) -> tuple[Any, Any, Any]:
    runtime, ctx, clock = make_runtime(config)
    stream = new_stream(ctx)
    stream.on_request_headers(request or get_request(), end_stream)
    return ctx, stream, clock


def only(commands: list[Any], kind: type) -> list[Any]:
    return [c for c in commands if isinstance(c, kind)]


def response(status: int, *extra: tuple[bytes, bytes]) -> HeaderMap:
    return HeaderMap([(b":status", str(status).encode()), *extra])


def test_forwarded_request_carries_envoy_headers() -> None:
    ctx, stream, _ = start(bootstrap())
    commands = take(ctx)
    upstream = only(commands, StartUpstream)
    assert len(upstream) == 1
    headers = upstream[0].sink.headers
    names = [name for name, _ in headers]
    assert names[-3:] == [b"x-forwarded-proto", b"x-request-id", b"x-envoy-expected-rq-timeout-ms"]
    assert headers.get(b"x-envoy-expected-rq-timeout-ms") == b"15000"
    assert len(headers.get(b"x-request-id")) == 36
    timers = only(commands, Timer)
    assert [t.delay for t in timers] == [15.0]


def test_response_flows_back_and_timer_is_cancelled() -> None:
    ctx, stream, clock = start(bootstrap())
    commands = take(ctx)
    attempt = only(commands, StartUpstream)[0].sink
    timer = only(commands, Timer)[0]
    clock.now += 0.0125
    ctx.worker.now = clock.now
    attempt.on_response_headers(response(200, (b"content-length", b"2")), False)
    attempt.on_response_data(b"ok", True)
    commands = take(ctx)
    sent = only(commands, SendHeaders)[0].headers
    assert sent.get(b"x-envoy-upstream-service-time") == b"12"
    assert sent.get(b"server") == b"envoy" and sent.get(b"date") is not None
    assert timer.cancelled
    assert commands_summary(commands)[-1] == ("StreamEnded",)
    assert stream.info.response_code == 200 and stream.info.response_code_details == "via_upstream"
    assert ctx.clusters["backend"].stats.rq_2xx.value == 1


def test_retry_on_5xx_then_success() -> None:
    config = bootstrap(virtual_hosts=routes(forward(retry_policy={"retry_on": "5xx", "num_retries": 2})))
    ctx, stream, _ = start(config)
    first = only(take(ctx), StartUpstream)[0].sink
    first.on_response_headers(response(503), True)
    commands = take(ctx)
    assert not only(commands, SendHeaders)
    backoff = [t for t in only(commands, Timer) if not t.cancelled][-1]
    assert backoff.delay <= 0.025
    backoff.fire()
    second = only(take(ctx), StartUpstream)[0].sink
    assert second is not first
    second.on_response_headers(response(200), True)
    assert only(take(ctx), SendHeaders)[0].headers.get(b":status") == b"200"
    stats = ctx.clusters["backend"].stats
    assert (stats.rq_retry.value, stats.rq_retry_success.value) == (1, 1)
    assert stream.info.attempt_count == 2


def test_retries_exhausted_forwards_the_last_response() -> None:
    config = bootstrap(virtual_hosts=routes(forward(retry_policy={"retry_on": "gateway-error", "num_retries": 1})))
    ctx, stream, _ = start(config)
    only(take(ctx), StartUpstream)[0].sink.on_response_headers(response(502), True)
    [t for t in only(take(ctx), Timer) if not t.cancelled][-1].fire()
    only(take(ctx), StartUpstream)[0].sink.on_response_headers(response(502), True)
    assert only(take(ctx), SendHeaders)[0].headers.get(b":status") == b"502"
    assert "URX" in stream.info.flags_string()


def test_not_retried_when_status_is_not_retriable() -> None:
    config = bootstrap(virtual_hosts=routes(forward(retry_policy={"retry_on": "gateway-error", "num_retries": 3})))
    ctx, stream, _ = start(config)
    only(take(ctx), StartUpstream)[0].sink.on_response_headers(response(500), True)
    assert only(take(ctx), SendHeaders)[0].headers.get(b":status") == b"500"


def test_retriable_status_codes() -> None:
    config = bootstrap(virtual_hosts=routes(forward(retry_policy={
        "retry_on": "retriable-status-codes", "retriable_status_codes": [418], "num_retries": 1})))
    ctx, stream, _ = start(config)
    only(take(ctx), StartUpstream)[0].sink.on_response_headers(response(418), True)
    assert not only(take(ctx), SendHeaders)


def test_connect_failure_without_retry_is_a_503_with_envoys_words() -> None:
    ctx, stream, _ = start(bootstrap())
    only(take(ctx), StartUpstream)[0].sink.on_pool_failure(CONNECTION_FAILURE, "")
    commands = take(ctx)
    assert commands_summary(commands)[:2] == [
        ("SendHeaders", b"503", False),
        ("SendData", b"upstream connect error or disconnect/reset before headers. reset reason: "
                     b"remote connection failure", True)]
    assert stream.info.flags_string() == "UF"


def test_connect_failure_retried_then_reported_as_retried() -> None:
    config = bootstrap(virtual_hosts=routes(forward(retry_policy={"retry_on": "connect-failure",
                                                                  "num_retries": 1})))
    ctx, stream, _ = start(config)
    only(take(ctx), StartUpstream)[0].sink.on_pool_failure(CONNECTION_FAILURE, "")
    [t for t in only(take(ctx), Timer) if not t.cancelled][-1].fire()
    only(take(ctx), StartUpstream)[0].sink.on_pool_failure(CONNECTION_FAILURE, "")
    data = [c for c in take(ctx) if type(c).__name__ == "SendData"][0].data
    assert data.startswith(b"upstream connect error or disconnect/reset before headers. retried and the latest")


def test_global_timeout_answers_504_and_resets_the_attempt() -> None:
    config = bootstrap(virtual_hosts=routes(forward(timeout="0.5s")))
    ctx, stream, _ = start(config)
    commands = take(ctx)
    attempt = only(commands, StartUpstream)[0].sink
    timer = only(commands, Timer)[0]
    assert timer.delay == 0.5
    timer.fire()
    commands = take(ctx)
    assert any(isinstance(c, ResetUpstream) and c.sink is attempt for c in commands)
    assert commands_summary(commands)[:2] == [("SendHeaders", b"504", False),
                                              ("SendData", b"upstream request timeout", True)]
    assert stream.info.flags_string() == "UT"
    assert ctx.clusters["backend"].stats.rq_timeout.value == 1


def test_per_try_timeout_retries() -> None:
    config = bootstrap(virtual_hosts=routes(forward(retry_policy={"retry_on": "5xx", "num_retries": 1,
                                                                  "per_try_timeout": "0.1s"})))
    ctx, stream, _ = start(config)
    commands = take(ctx)
    first = only(commands, StartUpstream)[0].sink
    assert first.headers.get(b"x-envoy-expected-rq-timeout-ms") == b"100"
    per_try = [t for t in only(commands, Timer) if t.delay == 0.1][0]
    per_try.fire()
    commands = take(ctx)
    assert any(isinstance(c, ResetUpstream) and c.sink is first for c in commands)
    [t for t in only(commands, Timer) if not t.cancelled and t.delay < 0.1][0].fire()
    assert len(only(take(ctx), StartUpstream)) == 1


def test_no_route_is_a_404() -> None:
    config = bootstrap(virtual_hosts=routes({"match": {"prefix": "/api"}, "route": {"cluster": "backend"}}))
    ctx, stream, _ = start(config, get_request("/other"))
    assert commands_summary(take(ctx))[0] == ("SendHeaders", b"404", True)
    assert stream.info.flags_string() == "NR"


def test_direct_response_with_body_and_route_headers() -> None:
    config = bootstrap(virtual_hosts=routes({"match": {"prefix": "/"}, "direct_response": {
        "status": 418, "body": {"inline_string": "teapot"}},
        "response_headers_to_add": [{"header": {"key": "x-route", "value": "direct"}}]}))
    ctx, stream, _ = start(config)
    commands = take(ctx)
    headers = only(commands, SendHeaders)[0].headers
    assert headers.get(b":status") == b"418" and headers.get(b"x-route") == b"direct"
    assert headers.get(b"content-type") == b"text/plain"
    assert commands_summary(commands)[1] == ("SendData", b"teapot", True)


def test_redirect_location() -> None:
    config = bootstrap(virtual_hosts=routes({"match": {"prefix": "/old"}, "redirect": {
        "https_redirect": True, "prefix_rewrite": "/new", "response_code": "TEMPORARY_REDIRECT"}}))
    ctx, stream, _ = start(config, get_request("/old/page?x=1", authority="example.com:80"))
    headers = only(take(ctx), SendHeaders)[0].headers
    assert headers.get(b":status") == b"307"
    assert headers.get(b"location") == b"https://example.com/new/page?x=1"


def test_redirect_with_host_and_strip_query() -> None:
    config = bootstrap(virtual_hosts=routes({"match": {"prefix": "/"}, "redirect": {
        "host_redirect": "other.org", "path_redirect": "/landing", "strip_query": True}}))
    ctx, stream, _ = start(config, get_request("/a?b=c", authority="example.com:8080"))
    headers = only(take(ctx), SendHeaders)[0].headers
    assert headers.get(b":status") == b"301"
    assert headers.get(b"location") == b"http://other.org:8080/landing"


def test_unknown_cluster_from_header_uses_cluster_not_found_code() -> None:
    config = bootstrap(virtual_hosts=routes({"match": {"prefix": "/"}, "route": {"cluster_header": "x-cluster",
                                                                                "cluster_not_found_response_code": "NOT_FOUND"}}))
    ctx, stream, _ = start(config, get_request(extra=[(b"x-cluster", b"missing")]))
    assert commands_summary(take(ctx))[0] == ("SendHeaders", b"404", True)


def test_header_mutation_order_and_rewrites() -> None:
    config = bootstrap(
        virtual_hosts=routes(
            {"match": {"prefix": "/api/"},
             "route": {"cluster": "backend", "prefix_rewrite": "/", "host_rewrite_literal": "internal"},
             "request_headers_to_add": [{"header": {"key": "x-level", "value": "route"}}],
             "request_headers_to_remove": ["x-drop"]},
            request_headers_to_add=[{"header": {"key": "x-level", "value": "vhost"}}],
        ),
        route_config_extra={"request_headers_to_add": [{"header": {"key": "x-level", "value": "global"},
                                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                                                       {"header": {"key": "x-client",
                                                                   "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}]},
    )
    ctx, stream, _ = start(config, get_request("/api/users?id=1", extra=[(b"x-drop", b"1")]))
    headers = only(take(ctx), StartUpstream)[0].sink.headers
    # route, then vhost (appended), then global overwrites: Envoy's default order
    assert headers.get_all(b"x-level") == [b"global"]
    assert headers.get(b"x-drop") is None
    assert headers.get(b"x-client") == b"10.0.0.1"
    assert headers.get(b":path") == b"/users?id=1"
    assert headers.get(b"x-envoy-original-path") == b"/api/users?id=1"
    assert headers.get(b":authority") == b"internal"


def test_most_specific_header_mutations_win() -> None:
    config = bootstrap(
        virtual_hosts=routes({"match": {"prefix": "/"}, "route": {"cluster": "backend"},
                              "request_headers_to_add": [{"header": {"key": "x-level", "value": "route"},
                                                          "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}),
        route_config_extra={"most_specific_header_mutations_wins": True,
                            "request_headers_to_add": [{"header": {"key": "x-level", "value": "global"}}]},
    )
    ctx, stream, _ = start(config)
    assert only(take(ctx), StartUpstream)[0].sink.headers.get_all(b"x-level") == [b"route"]


def test_mirror_sends_a_shadow_copy() -> None:
    config = bootstrap(
        virtual_hosts=routes(forward(request_mirror_policies=[{"cluster": "shadow"}])),
        clusters=[cluster("backend", 9), cluster("shadow", 10)],
    )
    ctx, stream, _ = start(config, get_request(authority="example.com:8080"))
    upstream = only(take(ctx), StartUpstream)
    assert [u.sink.cluster.name for u in upstream] == ["backend", "shadow"]
    assert upstream[1].sink.headers.get(b":authority") == b"example.com-shadow:8080"
    # the shadow's answer never reaches the client
    upstream[1].sink.on_response_headers(response(500), True)
    assert not only(take(ctx), SendHeaders)


def test_circuit_breaker_overflow() -> None:
    config = bootstrap(clusters=[cluster("backend", 9, circuit_breakers={"thresholds": [{"max_requests": 1}]})])
    runtime, ctx, _ = make_runtime(config)
    first = new_stream(ctx)
    first.on_request_headers(get_request(), True)
    take(ctx)
    second = new_stream(ctx)
    second.on_request_headers(get_request(), True)
    commands = take(ctx)
    headers = only(commands, SendHeaders)[0].headers
    assert headers.get(b":status") == b"503" and headers.get(b"x-envoy-overloaded") == b"true"
    assert second.info.flags_string() == "UO"


def test_cluster_without_hosts_has_no_healthy_upstream() -> None:
    empty = cluster("backend")
    ctx, stream, _ = start(bootstrap(clusters=[empty]))
    commands = take(ctx)
    assert commands_summary(commands)[:2] == [("SendHeaders", b"503", False),
                                              ("SendData", b"no healthy upstream", True)]


def test_downstream_reset_resets_the_upstream_attempt() -> None:
    ctx, stream, _ = start(bootstrap(), get_request(method="POST"), end_stream=False)
    attempt = only(take(ctx), StartUpstream)[0].sink
    stream.on_downstream_reset()
    assert any(isinstance(c, ResetUpstream) and c.sink is attempt for c in take(ctx))


def test_weighted_cluster_headers() -> None:
    config = bootstrap(
        virtual_hosts=routes({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "backend", "weight": 1, "request_headers_to_add": [{"header": {"key": "x-pick", "value": "b"}}],
             "response_headers_to_add": [{"header": {"key": "x-served", "value": "b"}}]}]}}}),
    )
    ctx, stream, _ = start(config)
    attempt = only(take(ctx), StartUpstream)[0].sink
    assert attempt.headers.get(b"x-pick") == b"b"
    attempt.on_response_headers(response(200), True)
    assert only(take(ctx), SendHeaders)[0].headers.get(b"x-served") == b"b"
