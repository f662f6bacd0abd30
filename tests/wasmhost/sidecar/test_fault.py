"""The fault filter: fixed and header-controlled delays and aborts, percentages, conditions."""

from __future__ import annotations

from typing import Any

from tests.wasmhost.sidecar._bootstrap import FAULT, ROUTER_FILTER, bootstrap, cluster
from tests.wasmhost.sidecar._core import commands_summary, get_request, make_runtime, new_stream, take
from wasmhost.sidecar._commands import StartUpstream, Timer


def run(fault: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None, seed: int = 7,
        **kwargs: Any) -> tuple[Any, Any]:
    config = bootstrap(http_filters=[{"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT, **fault}},
                                     ROUTER_FILTER], **kwargs)
    _, ctx, _ = make_runtime(config, seed=seed)
    stream = new_stream(ctx)
    stream.on_request_headers(get_request(extra=headers or []), True)
    return ctx, stream


def test_fixed_abort_at_100_percent() -> None:
    ctx, stream = run({"abort": {"http_status": 503, "percentage": {"numerator": 100}}})
    assert commands_summary(take(ctx))[:2] == [("SendHeaders", b"503", False), ("SendData", b"fault filter abort", True)]
    assert stream.info.flags_string() == "FI"
    assert ctx.stats.aborts_injected.value == 1


def test_abort_without_percentage_never_fires() -> None:
    ctx, stream = run({"abort": {"http_status": 503}})
    assert any(isinstance(c, StartUpstream) for c in take(ctx))


def test_percentage_uses_the_stream_random_value() -> None:
    fired = 0
    for seed in range(200):
        ctx, _ = run({"abort": {"http_status": 500, "percentage": {"numerator": 25}}}, seed=seed)
        fired += any(getattr(c, "headers", None) is not None and c.headers.get(b":status") == b"500"
                     for c in take(ctx))
    assert 25 <= fired <= 75


def test_header_controlled_abort_is_capped_by_configured_percentage() -> None:
    fault = {"abort": {"header_abort": {}, "percentage": {"numerator": 100}}}
    ctx, _ = run(fault, [(b"x-envoy-fault-abort-request", b"429")])
    assert commands_summary(take(ctx))[0] == ("SendHeaders", b"429", False)
    ctx, _ = run(fault, [(b"x-envoy-fault-abort-request", b"429"),
                         (b"x-envoy-fault-abort-request-percentage", b"0")])
    assert any(isinstance(c, StartUpstream) for c in take(ctx))
    ctx, _ = run(fault)  # no header: no fault
    assert any(isinstance(c, StartUpstream) for c in take(ctx))


def test_fixed_delay_then_continue() -> None:
    ctx, stream = run({"delay": {"fixed_delay": "0.2s", "percentage": {"numerator": 100}}})
    commands = take(ctx)
    timers = [c for c in commands if isinstance(c, Timer)]
    assert [t.delay for t in timers] == [0.2] and not any(isinstance(c, StartUpstream) for c in commands)
    timers[0].fire()
    assert any(isinstance(c, StartUpstream) for c in take(ctx))
    assert stream.info.flags_string() == "DI"


def test_header_delay_then_abort() -> None:
    fault = {"delay": {"header_delay": {}, "percentage": {"numerator": 100}},
             "abort": {"http_status": 418, "percentage": {"numerator": 100}}}
    ctx, stream = run(fault, [(b"x-envoy-fault-delay-request", b"50")])
    timer = [c for c in take(ctx) if isinstance(c, Timer)][0]
    assert timer.delay == 0.05
    timer.fire()
    assert commands_summary(take(ctx))[0] == ("SendHeaders", b"418", False)
    assert stream.info.flags_string() == "DI,FI"


def test_fault_conditions_on_headers_and_cluster() -> None:
    fault = {"abort": {"http_status": 500, "percentage": {"numerator": 100}},
             "headers": [{"name": "x-chaos", "string_match": {"exact": "on"}}]}
    ctx, _ = run(fault)
    assert any(isinstance(c, StartUpstream) for c in take(ctx))
    ctx, _ = run(fault, [(b"x-chaos", b"on")])
    assert commands_summary(take(ctx))[0] == ("SendHeaders", b"500", False)
    other = {"abort": {"http_status": 500, "percentage": {"numerator": 100}}, "upstream_cluster": "other"}
    ctx, _ = run(other, clusters=[cluster("backend", 9), cluster("other", 10)])
    assert any(isinstance(c, StartUpstream) for c in take(ctx))


def test_max_active_faults() -> None:
    config = bootstrap(http_filters=[{"name": "f", "typed_config": {
        "@type": FAULT, "delay": {"fixed_delay": "1s", "percentage": {"numerator": 100}},
        "max_active_faults": 1}}, ROUTER_FILTER])
    _, ctx, _ = make_runtime(config)
    first = new_stream(ctx)
    first.on_request_headers(get_request(), True)
    second = new_stream(ctx)
    take(ctx)
    second.on_request_headers(get_request(), True)
    assert any(isinstance(c, StartUpstream) for c in take(ctx))
    assert ctx.stats.faults_overflow.value == 1
    first.on_downstream_reset()
    assert ctx.stats.active_faults.value == 0
