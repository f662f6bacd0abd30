"""The ``sdk._hostabi`` functions lowered to proxy-wasm 0.2.1 imports.

Each spec says how the Python-level arguments map to the import's parameters (``i32``:
an int narrowed to 32 bits, ``i64``, ``buf``: str/bytes as pointer + length, ``pairs``: a
``list[tuple[bytes, bytes]]`` serialized to the header-map encoding) and what the import
writes back through out-pointers (``buf``: pointer + length of memory the host obtained
from our allocator, ``u32``, ``u64``). A non-OK status raises the matching
``sdk.errors`` exception via ``sdk.errors.error_for_status``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdk.compiler._program import Param
from sdk.compiler._types import BYTES, INT, NONE, ListT, TupleT, Type

OUT_BASE = 48  # scratch words for out-parameters (48..64)
PAIRS = ListT(TupleT((BYTES, BYTES)))


@dataclass(frozen=True)
class HostcallSpec:
    import_name: str
    params: tuple[tuple[str, str, Type], ...]  # (name, kind, python type)
    outs: tuple[str, ...]
    result: Type

    @property
    def python_params(self) -> list[Param]:
        return [Param(name, t, None) for name, _, t in self.params]


def _p(name: str, kind: str) -> tuple[str, str, Type]:
    return (name, kind, {"i32": INT, "i64": INT, "buf": BYTES, "pairs": PAIRS}[kind])


SPECS: dict[str, HostcallSpec] = {
    "log": HostcallSpec("proxy_log", (_p("level", "i32"), _p("message", "buf")), (), NONE),
    "get_log_level": HostcallSpec("proxy_get_log_level", (), ("u32",), INT),
    "get_current_time_nanoseconds": HostcallSpec("proxy_get_current_time_nanoseconds", (), ("u64",), INT),
    "set_tick_period_milliseconds": HostcallSpec("proxy_set_tick_period_milliseconds", (_p("period_ms", "i32"),), (), NONE),
    "set_effective_context": HostcallSpec("proxy_set_effective_context", (_p("context_id", "i32"),), (), NONE),
    "done": HostcallSpec("proxy_done", (), (), NONE),
    "get_buffer_bytes": HostcallSpec(
        "proxy_get_buffer_bytes", (_p("buffer_type", "i32"), _p("start", "i32"), _p("max_size", "i32")), ("buf",), BYTES
    ),
    "get_buffer_status": HostcallSpec("proxy_get_buffer_status", (_p("buffer_type", "i32"),), ("u32", "u32"), TupleT((INT, INT))),
    "set_buffer_bytes": HostcallSpec(
        "proxy_set_buffer_bytes",
        (_p("buffer_type", "i32"), _p("start", "i32"), _p("size", "i32"), _p("data", "buf")),
        (),
        NONE,
    ),
    "get_header_map_pairs": HostcallSpec("proxy_get_header_map_pairs", (_p("map_type", "i32"),), ("buf",), PAIRS),
    "set_header_map_pairs": HostcallSpec("proxy_set_header_map_pairs", (_p("map_type", "i32"), _p("pairs", "pairs")), (), NONE),
    "get_header_map_value": HostcallSpec(
        "proxy_get_header_map_value", (_p("map_type", "i32"), _p("key", "buf")), ("buf",), BYTES
    ),
    "add_header_map_value": HostcallSpec(
        "proxy_add_header_map_value", (_p("map_type", "i32"), _p("key", "buf"), _p("value", "buf")), (), NONE
    ),
    "replace_header_map_value": HostcallSpec(
        "proxy_replace_header_map_value", (_p("map_type", "i32"), _p("key", "buf"), _p("value", "buf")), (), NONE
    ),
    "remove_header_map_value": HostcallSpec("proxy_remove_header_map_value", (_p("map_type", "i32"), _p("key", "buf")), (), NONE),
    "get_header_map_size": HostcallSpec("proxy_get_header_map_size", (_p("map_type", "i32"),), ("u32",), INT),
    "continue_stream": HostcallSpec("proxy_continue_stream", (_p("stream_type", "i32"),), (), NONE),
    "close_stream": HostcallSpec("proxy_close_stream", (_p("stream_type", "i32"),), (), NONE),
    "send_local_response": HostcallSpec(
        "proxy_send_local_response",
        (_p("status_code", "i32"), _p("details", "buf"), _p("body", "buf"), _p("headers", "pairs"), _p("grpc_status", "i32")),
        (),
        NONE,
    ),
    "http_call": HostcallSpec(
        "proxy_http_call",
        (_p("upstream", "buf"), _p("headers", "pairs"), _p("body", "buf"), _p("trailers", "pairs"), _p("timeout_ms", "i32")),
        ("u32",),
        INT,
    ),
    "get_status": HostcallSpec("proxy_get_status", (), ("u32", "buf"), TupleT((INT, BYTES))),
    "get_property": HostcallSpec("proxy_get_property", (_p("path", "buf"),), ("buf",), BYTES),
    "set_property": HostcallSpec("proxy_set_property", (_p("path", "buf"), _p("value", "buf")), (), NONE),
    "get_shared_data": HostcallSpec("proxy_get_shared_data", (_p("key", "buf"),), ("buf", "u32"), TupleT((BYTES, INT))),
    "set_shared_data": HostcallSpec("proxy_set_shared_data", (_p("key", "buf"), _p("value", "buf"), _p("cas", "i32")), (), NONE),
    "register_shared_queue": HostcallSpec("proxy_register_shared_queue", (_p("name", "buf"),), ("u32",), INT),
    "resolve_shared_queue": HostcallSpec("proxy_resolve_shared_queue", (_p("vm_id", "buf"), _p("name", "buf")), ("u32",), INT),
    "enqueue_shared_queue": HostcallSpec("proxy_enqueue_shared_queue", (_p("queue_id", "i32"), _p("value", "buf")), (), NONE),
    "dequeue_shared_queue": HostcallSpec("proxy_dequeue_shared_queue", (_p("queue_id", "i32"),), ("buf",), BYTES),
    "define_metric": HostcallSpec("proxy_define_metric", (_p("metric_type", "i32"), _p("name", "buf")), ("u32",), INT),
    "increment_metric": HostcallSpec("proxy_increment_metric", (_p("metric_id", "i32"), _p("offset", "i64")), (), NONE),
    "record_metric": HostcallSpec("proxy_record_metric", (_p("metric_id", "i32"), _p("value", "i64")), (), NONE),
    "get_metric": HostcallSpec("proxy_get_metric", (_p("metric_id", "i32"),), ("u64",), INT),
    "call_foreign_function": HostcallSpec(
        "proxy_call_foreign_function", (_p("name", "buf"), _p("argument", "buf")), ("buf",), BYTES
    ),
}

_OUT_SIZE = {"buf": 8, "u32": 4, "u64": 8}


def import_signature(spec: HostcallSpec) -> str:
    """The WAT type of the import: every parameter i32 except i64 ones, result i32 status."""
    params: list[str] = []
    for _, kind, _ in spec.params:
        params += {"i32": ["i32"], "i64": ["i64"], "buf": ["i32", "i32"], "pairs": ["i32", "i32"]}[kind]
    params += ["i32"] * sum(2 if out == "buf" else 1 for out in spec.outs)
    param_text = " ".join(params)
    return f"(param {param_text}) (result i32)" if params else "(result i32)"


def out_layout(spec: HostcallSpec) -> list[int]:
    """Scratch addresses of each out-parameter (u64 first so it stays 8-aligned)."""
    order = sorted(range(len(spec.outs)), key=lambda i: spec.outs[i] != "u64")
    addresses = [0] * len(spec.outs)
    offset = OUT_BASE
    for i in order:
        addresses[i] = offset
        offset += _OUT_SIZE[spec.outs[i]]
    if offset > OUT_BASE + 16:
        raise AssertionError("out-parameters overflow the scratch area")
    return addresses


def wrapper(name: str, spec: HostcallSpec, error_for_status: str, call_name_addr: int) -> str:
    """The WAT function ``$hc:<name>`` that marshals, calls, checks and unmarshals."""
    params = "".join(f" (param ${pname} {t.wasm})" for pname, _, t in spec.params)
    result = f" (result {spec.result.wasm})" if spec.result != NONE else ""
    locals_ = ["(local $status i32)", "(local $tmp i32)", "(local $out i32)"]
    body: list[str] = [f"(memory.fill (i32.const {OUT_BASE}) (i32.const 0) (i32.const 16))"]
    args: list[str] = []
    pair_locals = 0
    pre: list[str] = []
    for pname, kind, _ in spec.params:
        if kind == "i32":
            args.append(f"(i32.wrap_i64 (local.get ${pname}))")
        elif kind == "i64":
            args.append(f"(local.get ${pname})")
        elif kind == "buf":
            args.append(f"(i32.add (local.get ${pname}) (i32.const 16))")
            args.append(f"(i32.load offset=8 (local.get ${pname}))")
        else:
            pair_locals += 1
            local = f"$enc{pair_locals}"
            locals_.append(f"(local {local} i32)")
            pre.append(f"(local.set {local} (call $rt_pairs_encode (local.get ${pname})))")
            args.append(f"(i32.add (local.get {local}) (i32.const 16))")
            args.append(f"(i32.load offset=8 (local.get {local}))")
    addresses = out_layout(spec)
    for out, address in zip(spec.outs, addresses, strict=True):
        if out == "buf":
            args += [f"(i32.const {address})", f"(i32.const {address + 4})"]
        else:
            args.append(f"(i32.const {address})")
    body += pre
    body.append(f"(local.set $status (call ${spec.import_name} {' '.join(args)}))")
    zero = f" ({spec.result.wasm}.const 0)" if spec.result != NONE else ""
    body.append(
        "(if (local.get $status) (then "
        f"(call $rt_raise (call {error_for_status} (i64.extend_i32_u (local.get $status)) (i32.const {call_name_addr}))) "
        f"(return{zero})))"
    )
    values: list[str] = []
    for out, address in zip(spec.outs, addresses, strict=True):
        if out == "buf":
            values.append(f"(call $rt_str_from_data (i32.load (i32.const {address})) (i32.load (i32.const {address + 4})))")
        elif out == "u32":
            values.append(f"(i64.extend_i32_u (i32.load (i32.const {address})))")
        else:
            values.append(f"(i64.load (i32.const {address}))")
    if spec.result == NONE:
        pass
    elif spec.result == PAIRS:
        body.append(f"(call $rt_pairs_decode {values[0]})")
    elif isinstance(spec.result, TupleT):
        body.append(f"(local.set $out (call $rt_tuple_new (i32.const {len(values)}) (i32.const "
                    f"{sum(1 << i for i, t in enumerate(spec.result.items) if t.is_pointer)})))")
        for i, (value, item) in enumerate(zip(values, spec.result.items, strict=True)):
            slot = value if item == INT else f"(i64.extend_i32_u {value})"
            body.append(f"(i64.store offset={16 + 8 * i} (local.get $out) {slot})")
        body.append("(local.get $out)")
    else:
        body.append(values[0])
    return "\n".join([f"(func $hc:{name}{params}{result}", *("  " + line for line in locals_ + body), ")"])
