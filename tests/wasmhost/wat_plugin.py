"""Build small proxy-wasm test plugins from WAT snippets (assembled by wasmtime.wat2wasm).

A test writes only the callbacks it needs; `WatPlugin` adds the rest of a valid module:
the ABI marker, memory, a bump `malloc`, `proxy_on_context_create`, imports of the common
`env.proxy_*` functions under short names, and the constant strings. `w.s("x")` places a
string in memory and returns its `(i32.const ptr) (i32.const len)` operands; `w.pairs(...)`
does the same for a serialized header map. Out-parameters go to fixed scratch addresses:
`$OUT_PTR` (1024), `$OUT_LEN` (1028), `$OUT_TOKEN` (1032). `num(expr)` gives the operands of an i32 written
as decimal text (through the module's `$itoa`, scratch at 1100).

Globals every module has: `$stream` (a remembered stream context id), `$count`, `$metric`.
"""

from __future__ import annotations

import struct

import wasmtime

OUT_PTR = 1024
OUT_LEN = 1028
OUT_TOKEN = 1032

_IMPORTS = """
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $replace_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove_header (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func $local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue_stream (param i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close_stream (param i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call"
    (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective_context (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick_period (param i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream"
    (func $grpc_stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $grpc_send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_close" (func $grpc_close (param i32) (result i32)))
  (import "env" "proxy_call_foreign_function"
    (func $call_foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_done" (func $done (result i32)))
"""

_PRELUDE = """
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $stream (mut i32) (i32.const 0))
  (global $count (mut i32) (i32.const 0))
  (global $metric (mut i32) (i32.const 0))
  (func (export "malloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.and (i32.add (i32.add (local.get $ptr) (local.get $size)) (i32.const 7))
                             (i32.const -8)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $ptr))
  ;; writes the decimal digits of an unsigned value at 1100 and returns their count
  (func $itoa (param $v i32) (result i32)
    (local $len i32) (local $tmp i32) (local $i i32)
    (local.set $tmp (local.get $v))
    (local.set $len (i32.const 1))
    (block $done
      (loop $count
        (br_if $done (i32.lt_u (local.get $tmp) (i32.const 10)))
        (local.set $tmp (i32.div_u (local.get $tmp) (i32.const 10)))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $count)))
    (local.set $i (local.get $len))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (i32.const 1100) (local.get $i))
                  (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $write (i32.gt_u (local.get $i) (i32.const 0))))
    (local.get $len))
"""

_CONTEXT_CREATE = '(func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32))'


def encode_pairs(pairs: list[tuple[str, str]]) -> bytes:
    """Header pairs in the proxy-wasm wire format (count, sizes, NUL-terminated strings)."""
    if not pairs:
        return b""
    out = struct.pack("<I", len(pairs))
    for name, value in pairs:
        out += struct.pack("<II", len(name.encode()), len(value.encode()))
    for name, value in pairs:
        out += name.encode() + b"\0" + value.encode() + b"\0"
    return out


class WatPlugin:
    """Collects constant data; `build(callbacks)` returns the module bytes."""

    def __init__(self, abi: str = "0_2_1") -> None:
        self.abi = abi
        self._data: list[tuple[int, bytes]] = []
        self._next = 2048

    def raw(self, data: bytes) -> str:
        """Place bytes in memory; the `(i32.const ptr) (i32.const len)` operands for them."""
        ptr = self._next
        self._data.append((ptr, data))
        self._next += (len(data) + 8) & ~7
        if self._next >= 60000:
            raise ValueError("too much constant data for the test module")
        return f"(i32.const {ptr}) (i32.const {len(data)})"

    def s(self, text: str) -> str:
        return self.raw(text.encode())

    def pairs(self, pairs: list[tuple[str, str]]) -> str:
        return self.raw(encode_pairs(pairs))

    def build(self, callbacks: str, *, context_create: bool = True) -> bytes:
        data = "\n".join(f'  (data (i32.const {ptr}) "{_wat_bytes(blob)}")' for ptr, blob in self._data)
        source = "\n".join(
            [
                "(module",
                _IMPORTS,
                _PRELUDE,
                data,
                f'  (func (export "proxy_abi_version_{self.abi}"))',
                _CONTEXT_CREATE if context_create else "",
                callbacks,
                ")",
            ]
        )
        return bytes(wasmtime.wat2wasm(source))


def _wat_bytes(blob: bytes) -> str:
    backslash = "\\"
    return "".join(f"{backslash}{b:02x}" for b in blob)


def log(level: int, operands: str) -> str:
    """WAT: log the string given by `operands` at `level`."""
    return f"(drop (call $log (i32.const {level}) {operands}))"


def log_out(level: int) -> str:
    """WAT: log the bytes a host call just returned through OUT_PTR/OUT_LEN."""
    return f"(drop (call $log (i32.const {level}) (i32.load (i32.const {OUT_PTR})) (i32.load (i32.const {OUT_LEN}))))"


def num(expr: str) -> str:
    """WAT operands (ptr, len) of the decimal text of the i32 expression `expr`."""
    return f"(i32.const 1100) (call $itoa {expr})"


def out_bytes() -> str:
    """WAT operands (ptr, len) of the bytes a host call just returned through OUT_PTR/OUT_LEN."""
    return f"(i32.load (i32.const {OUT_PTR})) (i32.load (i32.const {OUT_LEN}))"
