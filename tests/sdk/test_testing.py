"""sdk.testing.HostEmulator driving real modules (WAT assembled by wasmtime) through wasmhost."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdk.testing import (
    Action,
    EmulatorError,
    FailurePolicy,
    HostEmulator,
    LogLevel,
    ModuleError,
    PluginStartError,
    StreamType,
)
from tests.wasmhost.wat_plugin import OUT_LEN, OUT_PTR, OUT_TOKEN, WatPlugin, log, num, out_bytes

REQUEST, REQUEST_TRAILERS, RESPONSE, RESPONSE_TRAILERS = 0, 1, 2, 3
ROOT_CALLBACKS = ("proxy_on_configure", "proxy_on_vm_start")


def hdr(name: str, params: str = "(param $ctx i32) (param $n i32) (param $eos i32)") -> str:
    return f'(func (export "{name}") {params} (result i32)'


BODY = "(param $ctx i32) (param $size i32) (param $eos i32)"
TRAILERS = "(param $ctx i32) (param $n i32)"


def add(w: WatPlugin, map_type: int, name: str, value: str) -> str:
    return f"(drop (call $add_header (i32.const {map_type}) {w.s(name)} {value}))"


@pytest.fixture
def emulators() -> Iterator[list[HostEmulator]]:
    """Emulators a test opened; all are closed afterwards."""
    opened: list[HostEmulator] = []
    try:
        yield opened
    finally:
        for host in opened:
            host.close()


@pytest.fixture
def load(emulators: list[HostEmulator]):  # noqa: ANN201 - returns a factory
    def factory(module: bytes | str | Path, *, start: bool = True, **options: object) -> HostEmulator:
        host = HostEmulator.load(module, **options)
        emulators.append(host)
        if start:
            host.start_plugin()
        return host

    return factory


# -- loading and starting ---------------------------------------------------------------------------

def test_load_from_a_path_or_bytes(load, tmp_path: Path) -> None:
    w = WatPlugin()
    module = w.build(f'{hdr("proxy_on_request_headers")} {log(2, w.s("seen"))} (i32.const 0))')
    path = tmp_path / "plugin.wasm"
    path.write_bytes(module)
    for source in (path, str(path), module):
        host = load(source)
        host.call_on_request_headers(host.initialize_http_context(), {}, True)
        assert host.logs() == ["seen"]


def test_not_a_module_is_a_module_error() -> None:
    with pytest.raises(ModuleError, match="not a WebAssembly module"):
        HostEmulator.load(b"definitely not wasm")


def test_configuration_reaches_the_plugin_and_a_rejection_fails_start(load) -> None:
    w = WatPlugin()
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $get_buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {log(2, out_bytes())}
  (i32.ne (local.get $size) (i32.const 6)))"""
    )
    host = load(module, plugin_config="accept-me")
    assert host.logs() == ["accept-me"]
    rejecting = load(module, plugin_config="reject", start=False)
    with pytest.raises(PluginStartError, match="rejected the configuration"):
        rejecting.start_plugin()


def test_streams_need_a_started_plugin(load) -> None:
    host = load(WatPlugin().build(""), start=False)
    with pytest.raises(EmulatorError, match="start_plugin"):
        host.initialize_http_context()
    with pytest.raises(EmulatorError, match="no HTTP stream 7"):
        load(WatPlugin().build("")).call_on_request_headers(7, {}, True)


# -- request and response events -------------------------------------------------------------------------

def test_headers_are_changed_in_place_and_names_lower_cased(load) -> None:
    w = WatPlugin()
    module = w.build(
        f'{hdr("proxy_on_request_headers")} {add(w, REQUEST, "x-added", w.s("1"))}'
        f' (drop (call $remove_header (i32.const 0) {w.s("x-drop")})) (i32.const 0))'
        f'{hdr("proxy_on_response_headers")} {add(w, RESPONSE, "x-resp", w.s("2"))} (i32.const 0))'
    )
    host = load(module)
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, [(":path", "/"), ("X-Drop", "a"), ("X-Keep", "b")], True) is Action.CONTINUE
    assert host.current_request_headers(stream) == [(":path", "/"), ("x-keep", "b"), ("x-added", "1")]
    assert host.call_on_response_headers(stream, {":status": "200"}, True) is Action.CONTINUE
    assert host.current_response_headers(stream) == [(":status", "200"), ("x-resp", "2")]


def test_local_response_and_pause(load) -> None:
    w = WatPlugin()
    send = (
        f"(drop (call $local_response (i32.const 429) {w.s('slow down')} {w.s('too many')}"
        f" {w.pairs([('retry-after', '1')])} (i32.const 8)))"
    )
    host = load(w.build(f'{hdr("proxy_on_request_headers")} {send} (i32.const 1))'))
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {}, True) is Action.PAUSE
    reply = host.local_response(stream)
    assert reply is not None
    assert (reply.status, reply.headers, reply.body, reply.details, reply.grpc_status) == (
        429, [("retry-after", "1")], b"too many", "slow_down", 8,
    )
    assert host.is_paused(stream)


def test_pause_is_tracked_per_direction_until_the_plugin_resumes(load) -> None:
    w = WatPlugin()
    module = w.build(
        f'{hdr("proxy_on_response_headers")} (global.set $stream (local.get $ctx)) (i32.const 1))'
        '(func (export "proxy_on_tick") (param $root i32)'
        " (drop (call $set_effective_context (global.get $stream))) (drop (call $continue_stream (i32.const 1))))"
    )
    host = load(module)
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {}, True) is Action.CONTINUE
    assert host.call_on_response_headers(stream, {":status": "200"}, True) is Action.PAUSE
    assert host.is_paused(stream, StreamType.HTTP_RESPONSE)
    assert not host.is_paused(stream, StreamType.HTTP_REQUEST)
    host.tick()
    assert not host.is_paused(stream, StreamType.HTTP_RESPONSE)


def test_body_is_buffered_while_paused_then_rewritten(load) -> None:
    w = WatPlugin()
    upper_first = (
        f"(drop (call $set_buffer (i32.const 0) (i32.const 0) (i32.const 1) {w.s('J')}))"
    )
    module = w.build(
        f'{hdr("proxy_on_request_body", BODY)}'
        f" (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))"
        f" {log(2, num('(local.get $size)'))} {upper_first} (i32.const 0))"
    )
    host = load(module)
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {":method": "POST"}, False)
    assert host.call_on_request_body(stream, b"jo", False) is Action.PAUSE
    assert host.current_request_body(stream) == b"jo"
    assert host.call_on_request_body(stream, b"hn", True) is Action.CONTINUE
    assert host.logs() == ["4"]
    assert host.current_request_body(stream) == b"John"


def test_trailers_both_directions(load) -> None:
    w = WatPlugin()
    module = w.build(
        f'{hdr("proxy_on_request_trailers", TRAILERS)} {add(w, REQUEST_TRAILERS, "x-t", w.s("req"))} (i32.const 0))'
        f'{hdr("proxy_on_response_trailers", TRAILERS)} {add(w, RESPONSE_TRAILERS, "x-t", w.s("resp"))} (i32.const 1))'
    )
    host = load(module)
    stream = host.initialize_http_context()
    assert host.call_on_request_trailers(stream, {"grpc-status": "0"}) is Action.CONTINUE
    assert host.current_request_trailers(stream) == [("grpc-status", "0"), ("x-t", "req")]
    assert host.call_on_response_trailers(stream, []) is Action.PAUSE
    assert host.current_response_trailers(stream) == [("x-t", "resp")]


def test_response_body_passes_through(load) -> None:
    w = WatPlugin()
    append = f"(drop (call $set_buffer (i32.const 1) (local.get $size) (i32.const 0) {w.s('!')}))"
    host = load(w.build(f'{hdr("proxy_on_response_body", BODY)} (if (local.get $eos) (then {append})) (i32.const 0))'))
    stream = host.initialize_http_context()
    host.call_on_response_headers(stream, {":status": "200"}, False)
    host.call_on_response_body(stream, b"part1 ", False)
    host.call_on_response_body(stream, b"part2", True)
    assert host.current_response_body(stream) == b"part1 part2!"


def test_complete_runs_log_done_delete_in_envoys_order(load) -> None:
    w = WatPlugin()
    module = w.build(
        f'(func (export "proxy_on_log") (param $ctx i32) {log(2, w.s("log"))})'
        f'{hdr("proxy_on_done", "(param $ctx i32)")} {log(2, w.s("done"))} (i32.const 1))'
        f'(func (export "proxy_on_delete") (param $ctx i32) {log(2, w.s("delete"))})'
    )
    host = load(module)
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {}, True)
    assert host.http_context_ids() == [stream]
    host.complete_http_context(stream)
    assert host.logs() == ["log", "done", "delete"]
    assert host.http_context_ids() == []


def test_close_stream_marks_the_stream_reset(load) -> None:
    w = WatPlugin()
    host = load(w.build(f'{hdr("proxy_on_request_headers")} (drop (call $close_stream (i32.const 0))) (i32.const 1))'))
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {}, True)
    assert host.is_reset(stream)
    assert host.local_response(stream) is None


# -- callouts ------------------------------------------------------------------------------------------

def callout_module(w: WatPlugin) -> bytes:
    dispatch = (
        "(global.set $stream (local.get $ctx))"
        f"(global.set $count (call $http_call {w.s('auth')}"
        f" {w.pairs([(':method', 'POST'), (':path', '/v'), (':authority', 'auth')])} {w.s('q')}"
        f" {w.pairs([('x-trailer', '1')])} (i32.const 700) (i32.const {OUT_TOKEN})))"
        f"(if (global.get $count) (then {add(w, REQUEST, 'x-dispatch', num('(global.get $count)'))} (return (i32.const 0))))"
    )
    on_response = f"""
(func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $nb i32) (param $nt i32)
  (drop (call $set_effective_context (global.get $stream)))
  (drop (call $get_status (i32.const 1200) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {add(w, REQUEST, 'x-status-code', num('(i32.load (i32.const 1200))'))}
  {add(w, REQUEST, 'x-status-message', out_bytes())}
  (drop (call $get_header (i32.const 6) {w.s(':status')} (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {add(w, REQUEST, 'x-callout-status', out_bytes())}
  (drop (call $get_buffer (i32.const 4) (i32.const 0) (local.get $nb) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {add(w, REQUEST, 'x-callout-body', out_bytes())}
  (drop (call $continue_stream (i32.const 0))))"""
    return w.build(f'{hdr("proxy_on_request_headers")} {dispatch} (i32.const 1))' + on_response)


def test_callout_is_pending_until_answered_then_the_request_resumes(load) -> None:
    host = load(callout_module(WatPlugin()))
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {}, True) is Action.PAUSE
    [callout] = host.pending_callouts()
    assert (callout.cluster, callout.body, callout.trailers, callout.timeout_ms) == ("auth", b"q", [("x-trailer", "1")], 700)
    assert callout.headers == [(":method", "POST"), (":path", "/v"), (":authority", "auth")]
    assert host.is_paused(stream)
    host.answer_callout(callout.token, 202, {"x-a": "1"}, b"granted")
    assert not host.is_paused(stream)
    added = dict(host.current_request_headers(stream))
    assert (added["x-callout-status"], added["x-callout-body"], added["x-status-code"]) == ("202", "granted", "0")
    assert host.pending_callouts() == []


def test_failed_callout_gives_the_plugin_no_headers_and_status_11(load) -> None:
    host = load(callout_module(WatPlugin()))
    stream = host.initialize_http_context()
    host.call_on_request_headers(stream, {}, True)
    host.fail_callout(host.pending_callouts()[0].token, "timeout")
    added = dict(host.current_request_headers(stream))
    assert (added["x-status-code"], added["x-status-message"], added["x-callout-body"]) == ("11", "timeout", "")
    with pytest.raises(EmulatorError, match="no pending callout with token 99"):
        host.answer_callout(99)


def test_callouts_only_reach_declared_clusters(load) -> None:
    host = load(callout_module(WatPlugin()), clusters={"other"})
    stream = host.initialize_http_context()
    assert host.call_on_request_headers(stream, {}, True) is Action.CONTINUE
    assert dict(host.current_request_headers(stream))["x-dispatch"] == "2"
    assert host.pending_callouts() == []


def grpc_module(w: WatPlugin) -> bytes:
    start = f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $grpc_call {w.s('svc')} {w.s('pkg.S')} {w.s('Unary')} {w.pairs([('k', 'v')])} {w.s('req')} (i32.const 100) (i32.const {OUT_TOKEN})))
  (drop (call $grpc_stream {w.s('svc')} {w.s('pkg.S')} {w.s('Chat')} (i32.const 0) (i32.const 0) (i32.const 1036)))
  (drop (call $grpc_send (i32.load (i32.const 1036)) {w.s('hello')} (i32.const 0)))
  (drop (call $grpc_close (i32.load (i32.const 1036))))
  (i32.const 1))
(func (export "proxy_on_grpc_receive_initial_metadata") (param $root i32) (param $token i32) (param $n i32)
  {log(2, w.s('initial metadata'))})
(func (export "proxy_on_grpc_receive") (param $root i32) (param $token i32) (param $size i32)
  (drop (call $get_buffer (i32.const 5) (i32.const 0) (local.get $size) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {log(2, out_bytes())})
(func (export "proxy_on_grpc_close") (param $root i32) (param $token i32) (param $status i32)
  {log(2, num('(local.get $status)'))})"""
    return w.build(start)


def test_grpc_calls_and_streams(load) -> None:
    host = load(grpc_module(WatPlugin()))
    unary, stream = host.pending_grpc_calls()
    assert (unary.cluster, unary.service, unary.method, unary.messages, unary.is_stream) == (
        "svc", "pkg.S", "Unary", [b"req"], False,
    )
    assert unary.initial_metadata == [("k", "v")]
    assert (stream.method, stream.messages, stream.is_stream, stream.half_closed) == ("Chat", [b"hello"], True, True)
    with pytest.raises(EmulatorError, match="unary call"):
        host.send_grpc_metadata(unary.token, {"a": "b"})
    host.answer_grpc_call(unary.token, b"resp")
    host.send_grpc_metadata(stream.token, {"a": "b"})
    host.send_grpc_message(stream.token, b"m1")
    host.close_grpc_call(stream.token, 0)
    assert host.logs() == ["resp", "initial metadata", "m1", "0"]  # the unary call: its message only
    assert host.pending_grpc_calls() == []
    with pytest.raises(EmulatorError, match="no open gRPC call"):
        host.close_grpc_call(unary.token, 0)  # the answer ended it


# -- time ----------------------------------------------------------------------------------------------

def tick_module(w: WatPlugin) -> bytes:
    return w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $set_tick_period (i32.const 100)))
  (i32.const 1))
(func (export "proxy_on_tick") (param $root i32)
  (drop (call $now (i32.const {OUT_PTR})))
  {log(2, num(f"(i32.wrap_i64 (i64.div_u (i64.load (i32.const {OUT_PTR})) (i64.const 1000000)))"))})"""
    )


def test_advance_time_fires_ticks_on_the_plugins_period_and_moves_its_clock(load) -> None:
    host = load(tick_module(WatPlugin()))
    assert host.tick_period_ms == 100
    assert host.advance_time(99) == 0
    assert host.advance_time(1) == 1
    assert host.advance_time(250) == 2
    stamps = [int(m) for m in host.logs()]
    assert [b - a for a, b in zip(stamps, stamps[1:], strict=False)] == [100, 100]
    host.tick()
    assert len(host.logs()) == 4
    with pytest.raises(EmulatorError, match="forward"):
        host.advance_time(-1)


def test_no_ticks_without_a_period(load) -> None:
    w = WatPlugin()
    host = load(w.build(f'(func (export "proxy_on_tick") (param $root i32) {log(2, w.s("tick"))})'))
    assert host.advance_time(10_000) == 0
    assert host.logs() == []


def test_deferred_root_shutdown_completes_after_proxy_done_from_a_tick(load) -> None:
    w = WatPlugin()
    module = w.build(
        f"""
{hdr("proxy_on_done", "(param $ctx i32)")} (drop (call $set_tick_period (i32.const 5))) (i32.const 0))
(func (export "proxy_on_tick") (param $root i32) {log(2, num("(call $done)"))})
(func (export "proxy_on_delete") (param $ctx i32) {log(2, w.s("deleted"))})"""
    )
    host = load(module)
    host.shutdown_plugin()
    assert not host.root_deleted
    host.advance_time(5)
    assert host.logs() == ["0", "deleted"]
    assert host.root_deleted


# -- logs, metrics, shared state, properties, foreign functions, traps --------------------------------------

def test_logs_by_level_and_the_host_log_level(load) -> None:
    w = WatPlugin()
    module = w.build(
        f'{hdr("proxy_on_request_headers")} '
        + "".join(log(level, w.s(name)) for level, name in enumerate(["t", "d", "i", "w", "e", "c"]))
        + " (i32.const 0))"
    )
    host = load(module)
    host.call_on_request_headers(host.initialize_http_context(), {}, True)
    assert host.logs() == ["t", "d", "i", "w", "e", "c"]
    assert host.logs("warn") == ["w"]
    assert host.logs(LogLevel.CRITICAL) == ["c"]
    assert [e.level for e in host.log_entries()][:2] == [LogLevel.TRACE, LogLevel.DEBUG]
    with pytest.raises(EmulatorError, match="unknown log level"):
        host.logs("loud")
    quiet = load(module, log_level=LogLevel.ERROR)
    quiet.call_on_request_headers(quiet.initialize_http_context(), {}, True)
    assert quiet.logs() == ["e", "c"]


def test_metrics(load) -> None:
    w = WatPlugin()
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $define_metric (i32.const 0) {w.s("hits")} (i32.const {OUT_TOKEN})))
  (global.set $metric (i32.load (i32.const {OUT_TOKEN})))
  (drop (call $define_metric (i32.const 2) {w.s("sizes")} (i32.const 1036)))
  (i32.const 1))
{hdr("proxy_on_request_headers")}
  (drop (call $increment_metric (global.get $metric) (i64.const 1)))
  (drop (call $record_metric (i32.load (i32.const 1036)) (i64.extend_i32_u (local.get $n))))
  (i32.const 0))"""
    )
    host = load(module)
    for _ in range(2):
        host.call_on_request_headers(host.initialize_http_context(), {"a": "1", "b": "2"}, True)
    assert host.metric("hits") == 2
    assert host.metrics() == {"hits": 2, "sizes": {"count": 2, "sum": 4}}
    with pytest.raises(KeyError, match="no metric 'misses'"):
        host.metric("misses")


def test_shared_data_both_ways(load) -> None:
    w = WatPlugin()
    module = w.build(
        f'{hdr("proxy_on_request_headers")}'
        f" (drop (call $get_shared_data {w.s('seed')} (i32.const {OUT_PTR}) (i32.const {OUT_LEN}) (i32.const 1200)))"
        f" {log(2, out_bytes())}"
        f" (drop (call $set_shared_data {w.s('from-plugin')} {w.s('v1')} (i32.const 0))) (i32.const 0))"
    )
    host = load(module, vm_id="shared-vm")
    host.set_shared_data("seed", "s0")
    host.call_on_request_headers(host.initialize_http_context(), {}, True)
    assert host.logs() == ["s0"]
    assert host.shared_data("from-plugin") == b"v1"
    assert host.shared_data(b"missing") is None


def test_queues_items_and_ready_notifications(load) -> None:
    w = WatPlugin()
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $register_queue {w.s("jobs")} (i32.const {OUT_TOKEN})))
  (global.set $metric (i32.load (i32.const {OUT_TOKEN})))
  (i32.const 1))
{hdr("proxy_on_request_headers")} (drop (call $enqueue (global.get $metric) {w.s("from-stream")})) (i32.const 0))
(func (export "proxy_on_queue_ready") (param $root i32) (param $queue i32)
  {log(2, w.s("ready"))})"""
    )
    host = load(module)
    host.call_on_request_headers(host.initialize_http_context(), {}, True)
    assert host.logs() == ["ready"]
    assert host.queue_items("jobs") == [b"from-stream"]
    host.enqueue("jobs", "from-host")
    assert host.logs() == ["ready", "ready"]
    assert host.queue_items("jobs") == [b"from-stream", b"from-host"]
    assert host.queue_items("unknown") == []
    with pytest.raises(EmulatorError, match="no shared queue 'nope'"):
        host.enqueue("nope", "x")


def property_module(w: WatPlugin, path: str, *, at_root: bool = False) -> bytes:
    raw_path = w.raw(path.replace(".", "\0").encode())
    read = (
        f"(if (i32.eqz (call $get_property {raw_path} (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))"
        f" (then {log(2, out_bytes())}) (else {log(2, w.s('missing'))}))"
    )
    if at_root:
        return w.build(f'(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32) {read} (i32.const 1))')
    return w.build(f'{hdr("proxy_on_request_headers")} {read} (i32.const 0))')


def test_properties_for_streams_and_the_node(load) -> None:
    host = load(property_module(WatPlugin(), "source.address"), properties={"source.address": "10.0.0.9:80"})
    host.call_on_request_headers(host.initialize_http_context(), {}, True)
    host.set_property("source.address", "10.0.0.10")
    host.call_on_request_headers(host.initialize_http_context(), {}, True)
    assert host.logs() == ["10.0.0.9:80", "10.0.0.10"]
    custom = load(property_module(WatPlugin(), "app.tier"), properties={"app.tier": "gold"})
    custom.call_on_request_headers(custom.initialize_http_context(), {}, True)
    assert custom.logs() == ["gold"]
    node = load(property_module(WatPlugin(), "node.id", at_root=True), properties={"node.id": "proxy-1"})
    assert node.logs() == ["proxy-1"]
    with pytest.raises(EmulatorError, match="not an integer"):
        node.set_property("source.port", "http")


def test_foreign_functions_both_directions(load) -> None:
    w = WatPlugin()
    module = w.build(
        f'{hdr("proxy_on_request_headers")}'
        f" (drop (call $call_foreign {w.s('reverse')} {w.s('abc')} (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))"
        f" {log(2, out_bytes())} (i32.const 0))"
        f'(func (export "proxy_on_foreign_function") (param $root i32) (param $id i32) (param $size i32)'
        f" {log(2, num('(local.get $id)'))})"
    )
    host = load(module, foreign_functions={"reverse": lambda args: args[::-1]})
    host.call_on_request_headers(host.initialize_http_context(), {}, True)
    host.call_on_foreign_function(42, b"args")
    assert host.logs() == ["cba", "42"]


def test_trap_fails_the_stream_and_the_policy_decides_later_streams(load) -> None:
    w = WatPlugin()
    module = w.build(f'{hdr("proxy_on_request_headers")} {log(2, w.s("called"))} unreachable)')
    for policy, later_action in ((FailurePolicy.FAIL_CLOSED, Action.PAUSE), (FailurePolicy.FAIL_OPEN, Action.CONTINUE)):
        host = load(module, failure_policy=policy)
        first = host.initialize_http_context()
        host.call_on_request_headers(first, {}, True)
        assert host.trap is not None and "proxy_on_request_headers" in host.trap
        if policy is FailurePolicy.FAIL_CLOSED:
            reply = host.local_response(first)
            assert reply is not None and (reply.status, reply.details) == (503, "wasm_fail_stream")
        later = host.initialize_http_context()
        assert host.call_on_request_headers(later, {}, True) is later_action, policy
        later_reply = host.local_response(later)
        assert (later_reply.status if later_reply else None) == (503 if policy is FailurePolicy.FAIL_CLOSED else None)
        assert host.logs() == ["called"]  # a failed VM is never called again; its failure is host.trap


def test_emulator_uses_only_the_public_wasmhost_api() -> None:
    package = Path(__file__).resolve().parents[2] / "sdk" / "testing"
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wasmhost"):
                assert node.module == "wasmhost", f"{source.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("wasmhost.") for a in node.names), source.name


# -- the documented examples, on the repository's C conformance plugins ------------------------------

def test_package_docstring_example_local_reply() -> None:
    from tests._tools import plugin_path

    with HostEmulator.load(plugin_path("local_reply")) as host:
        host.start_plugin()
        stream = host.initialize_http_context()
        action = host.call_on_request_headers(stream, {":path": "/", "x-deny": "yes"}, True)
        assert action is Action.PAUSE
        reply = host.local_response(stream)
        assert reply is not None
        assert (reply.status, reply.body) == (403, b"access denied: yes\n")
        assert host.logs("info") == ["local_reply: denied status=0"]


def test_docs_page_example_http_call() -> None:
    from tests._tools import plugin_path

    with HostEmulator.load(plugin_path("http_call"), plugin_config="authz") as host:
        host.start_plugin()
        stream = host.initialize_http_context()
        assert host.call_on_request_headers(stream, {":path": "/orders", ":method": "GET"}, True) is Action.PAUSE
        [callout] = host.pending_callouts()
        assert callout.cluster == "authz"
        host.answer_callout(callout.token, 200, body=b"allowed")
        assert not host.is_paused(stream)
        assert ("x-callout-body", "allowed") in host.current_request_headers(stream)
        assert host.logs("info")[-1].startswith("http_call: response")
