"""The one-shot driver behind `wasmesh plugin run`: one request through one real plugin.

Every plugin here is WAT assembled by wasmtime and run by the real host; expectations come
from Envoy's behaviour (headers the filter sees, local-reply framing, callout answers).
"""

from __future__ import annotations

import struct

import pytest

from tests.wasmhost.wat_plugin import OUT_LEN, OUT_PTR, WatPlugin, log, num, out_bytes
from wasmhost import FailurePolicy, LogLevel
from wasmhost._runner import CalloutAnswer, PluginRunError, RunRequest, RunResult, run_request

REQUEST_HEADERS = 0
RESPONSE_HEADERS = 2
CALLOUT_HEADERS = 6


def run(module: bytes, **kwargs: object) -> RunResult:
    return run_request(RunRequest(module=module, **kwargs))  # type: ignore[arg-type]


def headers_cb(name: str, body: str, result: str = "(i32.const 0)") -> str:
    return (
        f'(func (export "{name}") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)\n'
        f"  {body}\n  {result})"
    )


def body_cb(name: str, body: str, result: str = "(i32.const 0)") -> str:
    return (
        f'(func (export "{name}") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)\n'
        f"  {body}\n  {result})"
    )


def add_header(w: WatPlugin, map_type: int, name: str, value_operands: str) -> str:
    return f"(drop (call $add_header (i32.const {map_type}) {w.s(name)} {value_operands}))"


def dump_pairs(map_type: int) -> str:
    """Log the whole map as its serialized pairs (info)."""
    return (
        f"(drop (call $get_pairs (i32.const {map_type}) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))"
        f" {log(2, out_bytes())}"
    )


def decode_logged_pairs(message: str) -> list[tuple[str, str]]:
    raw = message.encode("utf-8")
    (count,) = struct.unpack_from("<I", raw, 0)
    sizes = struct.unpack_from(f"<{2 * count}I", raw, 4)
    pos = 4 + 8 * count
    out = []
    for i in range(count):
        key = raw[pos : pos + sizes[2 * i]].decode()
        pos += sizes[2 * i] + 1
        value = raw[pos : pos + sizes[2 * i + 1]].decode()
        pos += sizes[2 * i + 1] + 1
        out.append((key, value))
    return out


# -- request and response paths -------------------------------------------------------------------

def test_plugin_sees_the_request_envoy_hands_its_filters_and_its_changes_go_upstream() -> None:
    w = WatPlugin()
    module = w.build(
        headers_cb("proxy_on_request_headers", dump_pairs(REQUEST_HEADERS) + add_header(w, 0, "x-wasm", w.s("in")))
        + headers_cb("proxy_on_response_headers", add_header(w, 2, "x-wasm", w.s("out")))
    )
    result = run(
        module, method="POST", path="/p?q=1", authority="svc.local", headers=(("X-A", "1"),), body=b"hi",
        response_status=201, response_headers=(("x-r", "2"),), response_body=b"done",
    )
    seen = decode_logged_pairs(result.logs[0].message)
    assert seen == [
        (":authority", "svc.local"), (":path", "/p?q=1"), (":method", "POST"), (":scheme", "http"),
        ("x-a", "1"), ("content-length", "2"), ("x-forwarded-proto", "http"),
    ]
    assert result.upstream_request is not None
    assert result.upstream_request.headers == seen + [("x-wasm", "in")]
    assert result.upstream_request.body == b"hi"
    assert result.response is not None
    assert result.response.status == 201
    assert result.response.headers == [("x-r", "2"), ("content-length", "4"), ("x-wasm", "out")]
    assert result.response.body == b"done"
    assert result.response.details == ""


def test_bodyless_request_ends_with_headers_and_no_body_callback_runs() -> None:
    w = WatPlugin()
    module = w.build(
        headers_cb("proxy_on_request_headers", f"(if (local.get $eos) (then {log(2, w.s('eos'))}))")
        + body_cb("proxy_on_request_body", log(2, w.s("request body")))
    )
    result = run(module)
    assert [r.message for r in result.logs] == ["eos"]


def test_response_body_arrives_as_data_then_an_empty_end_of_stream_chunk() -> None:
    w = WatPlugin()
    module = w.build(
        body_cb(
            "proxy_on_response_body",
            log(2, num("(local.get $size)")) + log(2, num("(local.get $eos)")),
        )
    )
    result = run(module, response_body=b"world")
    assert [r.message for r in result.logs] == ["5", "0", "0", "1"]
    assert result.response is not None and result.response.body == b"world"


def test_buffered_request_body_is_rewritten_before_it_goes_upstream() -> None:
    w = WatPlugin()
    replace = f"(drop (call $set_buffer (i32.const 0) (i32.const 0) (local.get $size) {w.s('REPLACED')}))"
    module = w.build(
        body_cb("proxy_on_request_body", f"(if (local.get $eos) (then {replace}) (else (return (i32.const 1))))")
    )
    result = run(module, method="PUT", body=b"original")
    assert result.upstream_request is not None
    assert result.upstream_request.body == b"REPLACED"


def test_response_suffix_appended_on_the_end_of_stream_chunk() -> None:
    w = WatPlugin()
    append = f"(drop (call $set_buffer (i32.const 1) (local.get $size) (i32.const 0) {w.s('[tail]')}))"
    module = w.build(body_cb("proxy_on_response_body", f"(if (local.get $eos) (then {append}))"))
    result = run(module, response_body=b"data")
    assert result.response is not None and result.response.body == b"data[tail]"


# -- local replies --------------------------------------------------------------------------------

def deny_module(w: WatPlugin, *, body: str = "denied\n", headers: list[tuple[str, str]] | None = None) -> bytes:
    send = (
        f"(drop (call $local_response (i32.const 403) {w.s('denied_by_test')} {w.s(body)}"
        f" {w.pairs(headers or [])} (i32.const -1)))"
    )
    return w.build(
        headers_cb("proxy_on_request_headers", send, "(i32.const 1)")
        + headers_cb("proxy_on_response_headers", dump_pairs(RESPONSE_HEADERS))
        + body_cb("proxy_on_response_body", log(2, w.s("response body seen")))
    )


def test_local_reply_is_framed_as_envoy_and_passes_through_the_response_callbacks() -> None:
    result = run(deny_module(WatPlugin(), headers=[("x-why", "test")]))
    assert result.upstream_request is None
    assert result.response is not None
    assert result.response.status == 403
    assert result.response.headers == [
        ("x-why", "test"), ("content-length", "7"), ("content-type", "text/plain"),
    ]
    assert result.response.body == b"denied\n"
    assert result.response.details == "denied_by_test"
    assert decode_logged_pairs(result.logs[0].message) == [(":status", "403")] + result.response.headers
    assert result.logs[1].message == "response body seen"


def test_local_reply_without_body_has_no_framing_headers() -> None:
    result = run(deny_module(WatPlugin(), body=""))
    assert result.response is not None
    assert result.response.headers == []
    assert result.response.body == b""


def test_local_reply_keeps_the_plugins_content_type() -> None:
    result = run(deny_module(WatPlugin(), body="{}", headers=[("content-type", "application/json")]))
    assert result.response is not None
    assert result.response.headers == [("content-type", "application/json"), ("content-length", "2")]


def test_local_reply_to_head_request_has_no_body() -> None:
    result = run(deny_module(WatPlugin()), method="HEAD")
    assert result.response is not None
    assert (result.response.status, result.response.body) == (403, b"")


def test_local_reply_to_grpc_request_is_trailers_only() -> None:
    result = run(deny_module(WatPlugin(), body="no access"), headers=(("content-type", "application/grpc"),))
    assert result.response is not None
    assert result.response.status == 200
    assert result.response.headers == [
        ("content-type", "application/grpc"), ("grpc-status", "7"), ("grpc-message", "no access"),
    ]


def test_local_reply_from_response_headers_replaces_the_upstream_response() -> None:
    w = WatPlugin()
    send = f"(drop (call $local_response (i32.const 502) {w.s('bad_upstream')} {w.s('nope')} (i32.const 0) (i32.const 0) (i32.const -1)))"
    module = w.build(headers_cb("proxy_on_response_headers", send, "(i32.const 1)"))
    result = run(module, response_body=b"upstream body")
    assert result.upstream_request is not None
    assert result.response is not None
    assert (result.response.status, result.response.body, result.response.details) == (502, b"nope", "bad_upstream")


def test_close_stream_resets_so_the_client_gets_no_response() -> None:
    w = WatPlugin()
    module = w.build(headers_cb("proxy_on_request_headers", "(drop (call $close_stream (i32.const 0)))", "(i32.const 1)"))
    result = run(module)
    assert result.upstream_request is None
    assert result.response is None
    assert result.to_json()["response"] is None


# -- callouts -----------------------------------------------------------------------------------------

def callout_module(w: WatPlugin, cluster: str = "authz") -> bytes:
    dispatch = (
        f"(global.set $stream (local.get $ctx))"
        f"(global.set $count (call $http_call {w.s(cluster)}"
        f" {w.pairs([(':method', 'GET'), (':path', '/check'), (':authority', cluster)])} {w.s('ping')}"
        f" (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 1032)))"
        f"(if (global.get $count) (then {add_header(w, 0, 'x-dispatch-status', num('(global.get $count)'))}"
        f" (return (i32.const 0))))"
    )
    on_response = f"""
(func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $nh i32) (param $nb i32) (param $nt i32)
  (drop (call $set_effective_context (global.get $stream)))
  {add_header(w, 0, 'x-callout-headers', num('(local.get $nh)'))}
  (drop (call $get_header (i32.const {CALLOUT_HEADERS}) {w.s(':status')} (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {add_header(w, 0, 'x-callout-status', out_bytes())}
  (drop (call $get_buffer (i32.const 4) (i32.const 0) (local.get $nb) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {add_header(w, 0, 'x-callout-body', out_bytes())}
  (drop (call $continue_stream (i32.const 0))))"""
    return w.build(headers_cb("proxy_on_request_headers", dispatch, "(i32.const 1)") + on_response)


def test_callout_is_recorded_and_answered_then_the_request_resumes() -> None:
    result = run(callout_module(WatPlugin()), callouts={"authz": CalloutAnswer(201, b"allowed")})
    assert [(c.cluster, c.headers, c.body) for c in result.callouts] == [
        ("authz", [(":method", "GET"), (":path", "/check"), (":authority", "authz")], b"ping")
    ]
    assert result.upstream_request is not None
    added = dict(result.upstream_request.headers)
    # :status, content-length and Envoy's x-envoy-upstream-service-time
    assert (added["x-callout-headers"], added["x-callout-status"], added["x-callout-body"]) == ("3", "201", "allowed")
    assert result.response is not None and result.response.status == 200


def test_callout_to_an_unknown_cluster_fails_to_dispatch_with_bad_argument() -> None:
    result = run(callout_module(WatPlugin(), cluster="nowhere"), callouts={"authz": CalloutAnswer(200)})
    assert result.callouts == []
    assert result.upstream_request is not None
    assert dict(result.upstream_request.headers)["x-dispatch-status"] == "2"


def grpc_module(w: WatPlugin) -> bytes:
    dispatch = (
        f"(drop (call $grpc_call {w.s('backend')} {w.s('pkg.Svc')} {w.s('Do')} {w.pairs([('x-md', '1')])}"
        f" {w.s('req')} (i32.const 1000) (i32.const 1032)))"
    )
    return w.build(
        headers_cb("proxy_on_request_headers", dispatch)
        + f"""
(func (export "proxy_on_grpc_receive") (param $root i32) (param $token i32) (param $size i32)
  (drop (call $get_buffer (i32.const 5) (i32.const 0) (local.get $size) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {log(2, out_bytes())})
(func (export "proxy_on_grpc_close") (param $root i32) (param $token i32) (param $status i32)
  {log(2, num('(local.get $status)'))})"""
    )


def test_grpc_callout_is_recorded_and_answered_with_its_message() -> None:
    result = run(grpc_module(WatPlugin()), callouts={"backend": CalloutAnswer(200, b"reply")})
    assert [(c.cluster, c.kind, c.body) for c in result.callouts] == [("backend", "grpc", b"req")]
    assert result.callouts[0].headers == [
        (":method", "POST"), (":path", "/pkg.Svc/Do"), (":authority", "backend"),
        ("content-type", "application/grpc"), ("x-md", "1"),
    ]
    assert [r.message for r in result.logs] == ["reply"]


def test_grpc_callout_answered_with_an_http_error_closes_with_envoys_grpc_status() -> None:
    result = run(grpc_module(WatPlugin()), callouts={"backend": CalloutAnswer(503)})
    assert [r.message for r in result.logs] == ["14"]


# -- waiting: ticks and the idle timeout --------------------------------------------------------------

def tick_module(w: WatPlugin, *, resume: bool) -> bytes:
    on_tick = (
        f"(global.set $count (i32.add (global.get $count) (i32.const 1)))"
        f"(drop (call $now (i32.const {OUT_PTR})))"
        + (
            "(if (i32.eq (global.get $count) (i32.const 3)) (then "
            "(drop (call $set_effective_context (global.get $stream)))"
            f"{add_header(w, 0, 'x-ticks', num('(global.get $count)'))}"
            "(drop (call $continue_stream (i32.const 0)))))"
            if resume else ""
        )
    )
    return w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $set_tick_period (i32.const 250)))
  (i32.const 1))
(func (export "proxy_on_tick") (param $root i32) {on_tick})"""
        + headers_cb("proxy_on_request_headers", "(global.set $stream (local.get $ctx))", "(i32.const 1)")
    )


def test_paused_stream_is_resumed_by_the_plugins_tick() -> None:
    result = run(tick_module(WatPlugin(), resume=True))
    assert result.ticks == 3
    assert result.upstream_request is not None
    assert dict(result.upstream_request.headers)["x-ticks"] == "3"


def test_stream_never_resumed_gets_envoys_idle_timeout_after_bounded_ticks() -> None:
    result = run(tick_module(WatPlugin(), resume=False), max_ticks=4)
    assert result.ticks == 4
    assert result.upstream_request is None
    assert result.response is not None
    assert (result.response.status, result.response.body, result.response.details) == (
        408, b"stream timeout", "stream_idle_timeout",
    )


def test_ticks_move_the_plugins_clock_by_the_period() -> None:
    w = WatPlugin()
    read_clock = (
        f"(drop (call $now (i32.const {OUT_PTR})))"
        f"(i64.store (i32.add (i32.const 1200) (i32.mul (global.get $count) (i32.const 8))) (i64.load (i32.const {OUT_PTR})))"
        "(global.set $count (i32.add (global.get $count) (i32.const 1)))"
    )
    delta_ms = "(i32.wrap_i64 (i64.div_u (i64.sub (i64.load (i32.const 1208)) (i64.load (i32.const 1200))) (i64.const 1000000)))"
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $set_tick_period (i32.const 60000)))
  (i32.const 1))
(func (export "proxy_on_tick") (param $root i32)
  {read_clock}
  (if (i32.eq (global.get $count) (i32.const 2)) (then {log(2, num(delta_ms))})))"""
        + headers_cb("proxy_on_request_headers", "", "(i32.const 1)")
    )
    result = run(module, max_ticks=2)
    elapsed_ms = int(result.logs[0].message)
    assert 60000 <= elapsed_ms < 61000


def test_plugin_without_tick_that_pauses_times_out_without_ticks() -> None:
    w = WatPlugin()
    module = w.build(headers_cb("proxy_on_request_headers", "", "(i32.const 1)"))
    result = run(module)
    assert result.ticks == 0
    assert result.response is not None and result.response.status == 408


# -- failures -------------------------------------------------------------------------------------------

def trap_module(w: WatPlugin) -> bytes:
    return w.build(
        headers_cb("proxy_on_request_headers", "unreachable")
        + headers_cb("proxy_on_response_headers", log(2, w.s("response callback ran")))
    )


def test_trap_fails_the_stream_closed_with_503_and_reports_the_trap() -> None:
    result = run(trap_module(WatPlugin()))
    assert result.upstream_request is None
    assert result.response is not None
    assert (result.response.status, result.response.details) == (503, "wasm_fail_stream")
    assert result.trap is not None and "proxy_on_request_headers" in result.trap
    assert result.logs == []  # no response callback ran; the failure is the trap, not a plugin log


def stream_create_trap_module(w: WatPlugin) -> bytes:
    """Traps while creating a stream context (the root starts fine)."""
    return w.build(
        '(func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)'
        " (if (local.get $parent) (then unreachable)))",
        context_create=False,
    )


def test_a_trap_creating_the_stream_context_fails_that_stream_closed_under_every_policy() -> None:
    """As Envoy 1.40 with failure_policy FAIL_OPEN: the stream that met the failure gets 503;
    only streams that start after it skip the plugin."""
    module = stream_create_trap_module(WatPlugin())
    for policy in (FailurePolicy.FAIL_CLOSED, FailurePolicy.FAIL_OPEN):
        result = run(module, failure_policy=policy, response_body=b"ok")
        assert result.response is not None and result.response.status == 503
        assert result.upstream_request is None
        assert result.trap is not None and "proxy_on_context_create" in result.trap


def test_module_errors_are_plugin_run_errors() -> None:
    with pytest.raises(PluginRunError, match="not a WebAssembly module"):
        run(b"(module)")
    w = WatPlugin(abi="9_9_9")
    with pytest.raises(PluginRunError, match="ABI version"):
        run(w.build(""))


def test_configure_rejection_names_the_plugins_last_error_log() -> None:
    w = WatPlugin()
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  {log(4, w.s("config must name a cluster"))}
  (i32.const 0))"""
    )
    with pytest.raises(PluginRunError, match="rejected the configuration.*config must name a cluster"):
        run(module)


# -- logs, metrics, properties, queues, configuration ---------------------------------------------------

def test_logs_keep_levels_and_the_log_level_drops_lower_ones() -> None:
    w = WatPlugin()
    module = w.build(
        headers_cb("proxy_on_request_headers", "".join(log(level, w.s(f"at {level}")) for level in range(6)))
    )
    result = run(module)
    assert [(r.level_name, r.message) for r in result.logs] == [
        ("trace", "at 0"), ("debug", "at 1"), ("info", "at 2"), ("warn", "at 3"), ("error", "at 4"), ("critical", "at 5"),
    ]
    assert [r.message for r in run(module, log_level=LogLevel.WARN).logs] == ["at 3", "at 4", "at 5"]


def test_metrics_are_reported_by_name() -> None:
    w = WatPlugin()
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $define_metric (i32.const 0) {w.s("requests_total")} (i32.const 1032)))
  (global.set $metric (i32.load (i32.const 1032)))
  (i32.const 1))"""
        + headers_cb("proxy_on_request_headers", "(drop (call $increment_metric (global.get $metric) (i64.const 3)))")
    )
    assert run(module).metrics == {"requests_total": 3}


def property_module(w: WatPlugin, path: str) -> bytes:
    """Adds the value as x-prop (or x-prop-missing), logs its length and its first u32 in decimal."""
    found = (
        f"{add_header(w, 0, 'x-prop', out_bytes())}"
        f" {log(2, num(f'(i32.load (i32.const {OUT_LEN}))'))}"
        f" {log(2, num(f'(i32.load (i32.load (i32.const {OUT_PTR})))'))}"
    )
    read = (
        f"(if (i32.eqz (call $get_property {w.raw(path.replace('.', chr(0)).encode())}"
        f" (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))"
        f" (then {found})"
        f" (else {add_header(w, 0, 'x-prop-missing', w.s('1'))}))"
    )
    return w.build(headers_cb("proxy_on_request_headers", read))


def prop(path: str, properties: dict[str, str]) -> str | None:
    result = run(property_module(WatPlugin(), path), properties=properties)
    assert result.upstream_request is not None
    headers = dict(result.upstream_request.headers)
    return None if "x-prop-missing" in headers else headers["x-prop"]


def prop_number(path: str, properties: dict[str, str]) -> tuple[int, int]:
    """(length, first u32 little-endian) of a binary property value."""
    result = run(property_module(WatPlugin(), path), properties=properties)
    length, first = (int(r.message) for r in result.logs)
    return length, first


def test_properties_set_stream_info_fields_with_envoys_types() -> None:
    assert prop("source.address", {"source.address": "10.1.2.3:4567"}) == "10.1.2.3:4567"
    assert prop_number("source.port", {"source.address": "10.1.2.3:4567"}) == (8, 4567)
    assert prop_number("connection.id", {"connection.id": "77"}) == (8, 77)
    assert prop_number("connection.mtls", {"connection.mtls": "true"})[0] == 1
    assert prop("xds.route_name", {"xds.route_name": "r1"}) == "r1"


def test_properties_outside_the_catalogue_are_served_verbatim() -> None:
    assert prop("wasmesh.custom.key", {"wasmesh.custom.key": "value"}) == "value"
    assert prop("wasmesh.custom.key", {}) is None


def test_node_properties_build_the_proxy_node() -> None:
    # envoy.config.core.v3.Node: field 1 (id) then field 2 (cluster), length-delimited
    assert prop("node", {"node.id": "sidecar~1", "node.cluster": "c"}) == "\n\tsidecar~1\x12\x01c"


def test_bad_property_value_is_a_plugin_run_error() -> None:
    with pytest.raises(PluginRunError, match="source.port.*not an integer"):
        run(property_module(WatPlugin(), "source.port"), properties={"source.port": "eighty"})


def test_queue_ready_is_delivered_to_the_registering_root() -> None:
    w = WatPlugin()
    module = w.build(
        f"""
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  (drop (call $register_queue {w.s("q")} (i32.const 1032)))
  (global.set $metric (i32.load (i32.const 1032)))
  (i32.const 1))
(func (export "proxy_on_queue_ready") (param $root i32) (param $queue i32)
  (drop (call $dequeue (local.get $queue) (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))
  {log(2, out_bytes())})"""
        + headers_cb("proxy_on_request_headers", f"(drop (call $enqueue (global.get $metric) {w.s('item-1')}))")
    )
    assert [r.message for r in run(module).logs] == ["item-1"]


def test_plugin_and_vm_configuration_and_root_id_reach_the_plugin() -> None:
    w = WatPlugin()
    read = (
        "(drop (call $get_buffer (i32.const {buf}) (i32.const 0) (local.get $size)"
        f" (i32.const {OUT_PTR}) (i32.const {OUT_LEN}))) {log(2, out_bytes())}"
    )
    root_id = (
        f"(drop (call $get_property {w.s('plugin_root_id')} (i32.const {OUT_PTR}) (i32.const {OUT_LEN})))"
        f" {log(2, out_bytes())}"
    )
    module = w.build(
        f"""
(func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
  {read.format(buf=6)} (i32.const 1))
(func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
  {read.format(buf=7)} {root_id} (i32.const 1))"""
    )
    result = run(module, configuration=b"plugin-cfg", vm_configuration=b"vm-cfg", root_id="my_root")
    assert [r.message for r in result.logs] == ["vm-cfg", "plugin-cfg", "my_root"]


def test_to_json_has_exactly_the_documented_shape() -> None:
    result = run(callout_module(WatPlugin()), callouts={"authz": CalloutAnswer(200, b"ok")}, response_body=b"r")
    document = result.to_json()
    assert set(document) == {"upstream_request", "response", "callouts", "logs", "metrics", "trap"}
    assert set(document["upstream_request"]) == {"headers", "body"}
    assert set(document["response"]) == {"status", "headers", "body"}
    assert document["callouts"] == [
        {"cluster": "authz", "headers": [[":method", "GET"], [":path", "/check"], [":authority", "authz"]], "body": "ping"}
    ]
    assert document["response"] == {"status": 200, "headers": [["content-length", "1"]], "body": "r"}
    assert document["trap"] is None
