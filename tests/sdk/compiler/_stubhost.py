"""TEST STUB: a minimal fake proxy-wasm host for the compiler's own tests.

Not a product host (that is ``wasmhost``; the SDK's emulator is ``sdk.testing``). One
``StubHost`` object holds the host-side state (logs, header maps, buffers, shared data,
queues, metrics, the local response) and serves it two ways:

* as a ``sdk.proxywasm.HostBinding`` for plugins run directly in CPython;
* as the ``env.proxy_*`` imports of a compiled module run in real wasmtime, written here
  by hand from the ABI reference (independently of the compiler's own marshalling).

Both runners expose ``call(export_name, *args)`` so a test drives CPython and WebAssembly
with the same sequence and compares the resulting ``StubHost`` state.
"""

from __future__ import annotations

import inspect
import struct
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime

from sdk import _hostabi, entrypoint
from sdk.errors import (
    BadArgumentError,
    CasMismatchError,
    EmptyError,
    NotFoundError,
    ProxyWasmError,
)

OK = 0
I32 = wasmtime.ValType.i32()
I64 = wasmtime.ValType.i64()


class StubHost:
    """Host-side state plus the HostBinding methods over it."""

    def __init__(self, plugin_configuration: bytes = b"", vm_configuration: bytes = b"") -> None:
        self.logs: list[tuple[int, str]] = []
        self.maps: dict[int, list[tuple[bytes, bytes]]] = {i: [] for i in range(8)}
        self.buffers: dict[int, bytes] = {6: vm_configuration, 7: plugin_configuration}
        self.local_response: tuple[int, bytes, bytes, list[tuple[bytes, bytes]], int] | None = None
        self.continued: list[int] = []
        self.closed: list[int] = []
        self.tick_period = 0
        self.effective_context = 0
        self.properties: dict[bytes, bytes] = {}
        self.shared: dict[bytes, tuple[bytes, int]] = {}
        self.queues: dict[int, list[bytes]] = {}
        self.queue_names: dict[bytes, int] = {}
        self.metrics: dict[int, tuple[int, bytes, int]] = {}
        self.http_calls: list[tuple[bytes, list[tuple[bytes, bytes]], bytes, list[tuple[bytes, bytes]], int]] = []
        self.status: tuple[int, bytes] = (0, b"")
        self.done_calls = 0
        self.time_ns = 1_700_000_000_000_000_000

    def snapshot(self) -> dict[str, Any]:
        """Everything a plugin can change, for comparing two runs."""
        return {
            "logs": list(self.logs),
            "maps": {k: list(v) for k, v in self.maps.items()},
            "buffers": dict(self.buffers),
            "local_response": self.local_response,
            "continued": list(self.continued),
            "closed": list(self.closed),
            "tick_period": self.tick_period,
            "properties": dict(self.properties),
            "shared": dict(self.shared),
            "queues": {k: list(v) for k, v in self.queues.items()},
            "metrics": dict(self.metrics),
            "http_calls": list(self.http_calls),
        }

    # --- HostBinding ----------------------------------------------------------------

    def log(self, level: int, message: bytes) -> None:
        if not 0 <= level <= 5:
            raise BadArgumentError("level")
        self.logs.append((level, message.decode("utf-8", "replace")))

    def get_log_level(self) -> int:
        return 0

    def get_current_time_nanoseconds(self) -> int:
        return self.time_ns

    def set_tick_period_milliseconds(self, period_ms: int) -> None:
        self.tick_period = period_ms

    def set_effective_context(self, context_id: int) -> None:
        self.effective_context = context_id

    def done(self) -> None:
        self.done_calls += 1

    def get_buffer_bytes(self, buffer_type: int, start: int, max_size: int) -> bytes:
        if buffer_type not in self.buffers:
            raise NotFoundError("buffer")
        data = self.buffers[buffer_type]
        return data[start : start + max_size]

    def get_buffer_status(self, buffer_type: int) -> tuple[int, int]:
        if buffer_type not in self.buffers:
            raise NotFoundError("buffer")
        return len(self.buffers[buffer_type]), 0

    def set_buffer_bytes(self, buffer_type: int, start: int, size: int, data: bytes) -> None:
        current = self.buffers.get(buffer_type, b"")
        if start == 0:
            self.buffers[buffer_type] = data + current[size:]
        elif start >= len(current):
            self.buffers[buffer_type] = current + data
        else:
            raise BadArgumentError("start")

    def get_header_map_pairs(self, map_type: int) -> list[tuple[bytes, bytes]]:
        return list(self.maps[map_type])

    def set_header_map_pairs(self, map_type: int, pairs: list[tuple[bytes, bytes]]) -> None:
        self.maps[map_type] = [(k.lower(), v) for k, v in pairs]

    def get_header_map_value(self, map_type: int, key: bytes) -> bytes:
        for k, v in self.maps[map_type]:
            if k == key.lower():
                return v
        raise NotFoundError("header")

    def add_header_map_value(self, map_type: int, key: bytes, value: bytes) -> None:
        self.maps[map_type].append((key.lower(), value))

    def replace_header_map_value(self, map_type: int, key: bytes, value: bytes) -> None:
        self.remove_header_map_value(map_type, key)
        self.maps[map_type].append((key.lower(), value))

    def remove_header_map_value(self, map_type: int, key: bytes) -> None:
        self.maps[map_type] = [(k, v) for k, v in self.maps[map_type] if k != key.lower()]

    def get_header_map_size(self, map_type: int) -> int:
        return len(self.maps[map_type])

    def continue_stream(self, stream_type: int) -> None:
        self.continued.append(stream_type)

    def close_stream(self, stream_type: int) -> None:
        self.closed.append(stream_type)

    def send_local_response(
        self, status_code: int, details: bytes, body: bytes, headers: list[tuple[bytes, bytes]], grpc_status: int
    ) -> None:
        self.local_response = (status_code, details, body, list(headers), grpc_status)

    def http_call(
        self,
        upstream: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        trailers: list[tuple[bytes, bytes]],
        timeout_ms: int,
    ) -> int:
        if upstream == b"unknown":
            raise BadArgumentError("upstream")
        self.http_calls.append((upstream, list(headers), body, list(trailers), timeout_ms))
        return len(self.http_calls)

    def get_status(self) -> tuple[int, bytes]:
        return self.status

    def get_property(self, path: bytes) -> bytes:
        if path not in self.properties:
            raise NotFoundError("property")
        return self.properties[path]

    def set_property(self, path: bytes, value: bytes) -> None:
        self.properties[path] = value

    def get_shared_data(self, key: bytes) -> tuple[bytes, int]:
        if key not in self.shared:
            raise NotFoundError("shared data")
        return self.shared[key]

    def set_shared_data(self, key: bytes, value: bytes, cas: int) -> None:
        current = self.shared.get(key)
        if current is not None and cas != 0 and cas != current[1]:
            raise CasMismatchError("cas")
        self.shared[key] = (value, (current[1] + 1) if current else 1)

    def register_shared_queue(self, name: bytes) -> int:
        queue_id = self.queue_names.setdefault(name, len(self.queue_names) + 1)
        self.queues.setdefault(queue_id, [])
        return queue_id

    def resolve_shared_queue(self, vm_id: bytes, name: bytes) -> int:
        if name not in self.queue_names:
            raise NotFoundError("queue")
        return self.queue_names[name]

    def enqueue_shared_queue(self, queue_id: int, value: bytes) -> None:
        if queue_id not in self.queues:
            raise NotFoundError("queue")
        self.queues[queue_id].append(value)

    def dequeue_shared_queue(self, queue_id: int) -> bytes:
        if queue_id not in self.queues:
            raise NotFoundError("queue")
        if not self.queues[queue_id]:
            raise EmptyError("queue")
        return self.queues[queue_id].pop(0)

    def define_metric(self, metric_type: int, name: bytes) -> int:
        if metric_type > 2:
            raise BadArgumentError("metric type")
        for metric_id, (kind, existing, _) in self.metrics.items():
            if existing == name and kind == metric_type:
                return metric_id
        metric_id = len(self.metrics) + 1
        self.metrics[metric_id] = (metric_type, name, 0)
        return metric_id

    def increment_metric(self, metric_id: int, offset: int) -> None:
        if metric_id not in self.metrics:
            raise NotFoundError("metric")
        kind, name, value = self.metrics[metric_id]
        self.metrics[metric_id] = (kind, name, value + offset)

    def record_metric(self, metric_id: int, value: int) -> None:
        if metric_id not in self.metrics:
            raise NotFoundError("metric")
        kind, name, _ = self.metrics[metric_id]
        self.metrics[metric_id] = (kind, name, value)

    def get_metric(self, metric_id: int) -> int:
        if metric_id not in self.metrics:
            raise NotFoundError("metric")
        return self.metrics[metric_id][2]

    def call_foreign_function(self, name: bytes, argument: bytes) -> bytes:
        if name == b"reverse":
            return argument[::-1]
        raise NotFoundError("foreign function")


def encode_pairs(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The ABI's header-map serialization (reference section 4)."""
    if not pairs:
        return b""
    out = struct.pack("<I", len(pairs))
    for k, v in pairs:
        out += struct.pack("<II", len(k), len(v))
    for k, v in pairs:
        out += k + b"\0" + v + b"\0"
    return out


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < 4:
        return []
    (count,) = struct.unpack_from("<I", data, 0)
    sizes = [struct.unpack_from("<II", data, 4 + 8 * i) for i in range(count)]
    pos = 4 + 8 * count
    pairs = []
    for klen, vlen in sizes:
        key = data[pos : pos + klen]
        pos += klen + 1
        value = data[pos : pos + vlen]
        pos += vlen + 1
        pairs.append((key, value))
    return pairs


class WasmRunner:
    """A compiled module under real wasmtime, its imports served by a StubHost."""

    def __init__(self, wasm: bytes, host: StubHost) -> None:
        self.host = host
        self.engine = wasmtime.Engine()
        self.store = wasmtime.Store(self.engine)
        self.module = wasmtime.Module(self.engine, wasm)
        linker = wasmtime.Linker(self.engine)
        for name, params, func in self._imports():
            linker.define_func("env", name, wasmtime.FuncType(params, [I32]), func, access_caller=True)
        self.instance = linker.instantiate(self.store, self.module)
        self.exports = self.instance.exports(self.store)
        self.exports["_initialize"](self.store)

    def call(self, name: str, *args: int) -> Any:
        return self.exports[name](self.store, *args)

    def memory_size(self) -> int:
        memory = self.exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        return memory.data_len(self.store)

    # --- marshalling ----------------------------------------------------------------

    @staticmethod
    def _read(caller: wasmtime.Caller, ptr: int, size: int) -> bytes:
        memory = caller["memory"]
        assert isinstance(memory, wasmtime.Memory)
        return bytes(memory.read(caller, ptr, ptr + size))

    @staticmethod
    def _write(caller: wasmtime.Caller, ptr: int, data: bytes) -> None:
        memory = caller["memory"]
        assert isinstance(memory, wasmtime.Memory)
        memory.write(caller, data, ptr)

    def _give(self, caller: wasmtime.Caller, data: bytes, ptr_out: int, size_out: int) -> None:
        address = 0
        if data:
            address = caller["proxy_on_memory_allocate"](caller, len(data))  # type: ignore[operator]
            self._write(caller, address, data)
        self._write(caller, ptr_out, struct.pack("<I", address))
        self._write(caller, size_out, struct.pack("<I", len(data)))

    def _imports(self) -> list[tuple[str, list[wasmtime.ValType], Callable[..., int]]]:
        h = self.host
        r = self._read

        def status(fn: Callable[..., None]) -> Callable[..., int]:
            def wrapped(*args: Any) -> int:
                try:
                    fn(*args)
                except ProxyWasmError as err:
                    return err.status
                return OK

            return wrapped

        def u32(c: wasmtime.Caller, p: int, v: int) -> None:
            self._write(c, p, struct.pack("<I", v & 0xFFFFFFFF))

        def s32(v: int) -> int:
            return v - (1 << 32) if v >= 1 << 31 else v

        table: list[tuple[str, list[wasmtime.ValType], Callable[..., None]]] = [
            ("proxy_log", [I32] * 3, lambda c, lvl, p, n: h.log(lvl, r(c, p, n))),
            ("proxy_get_log_level", [I32], lambda c, out: u32(c, out, h.get_log_level())),
            ("proxy_get_current_time_nanoseconds", [I32],
             lambda c, out: self._write(c, out, struct.pack("<Q", h.get_current_time_nanoseconds()))),
            ("proxy_set_tick_period_milliseconds", [I32], lambda c, ms: h.set_tick_period_milliseconds(ms)),
            ("proxy_set_effective_context", [I32], lambda c, ctx: h.set_effective_context(ctx)),
            ("proxy_done", [], lambda c: h.done()),
            ("proxy_get_buffer_bytes", [I32] * 5,
             lambda c, t, start, size, po, so: self._give(c, h.get_buffer_bytes(t, start, size), po, so)),
            ("proxy_get_buffer_status", [I32] * 3, lambda c, t, so, fo: self._buffer_status(c, t, so, fo)),
            ("proxy_set_buffer_bytes", [I32] * 5, lambda c, t, start, size, p, n: h.set_buffer_bytes(t, start, size, r(c, p, n))),
            ("proxy_get_header_map_pairs", [I32] * 3,
             lambda c, t, po, so: self._give(c, encode_pairs(h.get_header_map_pairs(t)), po, so)),
            ("proxy_set_header_map_pairs", [I32] * 3, lambda c, t, p, n: h.set_header_map_pairs(t, decode_pairs(r(c, p, n)))),
            ("proxy_get_header_map_value", [I32] * 5,
             lambda c, t, kp, kn, po, so: self._give(c, h.get_header_map_value(t, r(c, kp, kn)), po, so)),
            ("proxy_add_header_map_value", [I32] * 5,
             lambda c, t, kp, kn, vp, vn: h.add_header_map_value(t, r(c, kp, kn), r(c, vp, vn))),
            ("proxy_replace_header_map_value", [I32] * 5,
             lambda c, t, kp, kn, vp, vn: h.replace_header_map_value(t, r(c, kp, kn), r(c, vp, vn))),
            ("proxy_remove_header_map_value", [I32] * 3, lambda c, t, kp, kn: h.remove_header_map_value(t, r(c, kp, kn))),
            ("proxy_get_header_map_size", [I32] * 2, lambda c, t, out: u32(c, out, h.get_header_map_size(t))),
            ("proxy_continue_stream", [I32], lambda c, t: h.continue_stream(t)),
            ("proxy_close_stream", [I32], lambda c, t: h.close_stream(t)),
            ("proxy_send_local_response", [I32] * 8,
             lambda c, code, dp, dn, bp, bn, hp, hn, grpc: h.send_local_response(
                 code, r(c, dp, dn), r(c, bp, bn), decode_pairs(r(c, hp, hn)), s32(grpc))),
            ("proxy_http_call", [I32] * 10, lambda c, up, un, hp, hn, bp, bn, tp, tn, timeout, out: u32(
                c, out, h.http_call(r(c, up, un), decode_pairs(r(c, hp, hn)), r(c, bp, bn), decode_pairs(r(c, tp, tn)), timeout))),
            ("proxy_get_status", [I32] * 3, lambda c, co, po, so: self._status(c, co, po, so)),
            ("proxy_get_property", [I32] * 4, lambda c, p, n, po, so: self._give(c, h.get_property(r(c, p, n)), po, so)),
            ("proxy_set_property", [I32] * 4, lambda c, p, n, vp, vn: h.set_property(r(c, p, n), r(c, vp, vn))),
            ("proxy_get_shared_data", [I32] * 5, lambda c, kp, kn, po, so, co: self._shared(c, r(c, kp, kn), po, so, co)),
            ("proxy_set_shared_data", [I32] * 5, lambda c, kp, kn, vp, vn, cas: h.set_shared_data(r(c, kp, kn), r(c, vp, vn), cas)),
            ("proxy_register_shared_queue", [I32] * 3, lambda c, p, n, out: u32(c, out, h.register_shared_queue(r(c, p, n)))),
            ("proxy_resolve_shared_queue", [I32] * 5,
             lambda c, vp, vn, p, n, out: u32(c, out, h.resolve_shared_queue(r(c, vp, vn), r(c, p, n)))),
            ("proxy_enqueue_shared_queue", [I32] * 3, lambda c, q, p, n: h.enqueue_shared_queue(q, r(c, p, n))),
            ("proxy_dequeue_shared_queue", [I32] * 3, lambda c, q, po, so: self._give(c, h.dequeue_shared_queue(q), po, so)),
            ("proxy_define_metric", [I32] * 4, lambda c, t, p, n, out: u32(c, out, h.define_metric(t, r(c, p, n)))),
            ("proxy_increment_metric", [I32, I64], lambda c, m, v: h.increment_metric(m, v)),
            ("proxy_record_metric", [I32, I64], lambda c, m, v: h.record_metric(m, v)),
            ("proxy_get_metric", [I32] * 2, lambda c, m, out: self._write(c, out, struct.pack("<q", h.get_metric(m)))),
            ("proxy_call_foreign_function", [I32] * 6,
             lambda c, np, nn, ap, an, po, so: self._give(c, h.call_foreign_function(r(c, np, nn), r(c, ap, an)), po, so)),
        ]
        return [(name, params, status(fn)) for name, params, fn in table]

    def _buffer_status(self, c: wasmtime.Caller, t: int, size_out: int, flags_out: int) -> None:
        size, flags = self.host.get_buffer_status(t)
        self._write(c, size_out, struct.pack("<I", size))
        self._write(c, flags_out, struct.pack("<I", flags))

    def _status(self, c: wasmtime.Caller, code_out: int, ptr_out: int, size_out: int) -> None:
        code, message = self.host.get_status()
        self._write(c, code_out, struct.pack("<I", code))
        self._give(c, message, ptr_out, size_out)

    def _shared(self, c: wasmtime.Caller, key: bytes, ptr_out: int, size_out: int, cas_out: int) -> None:
        value, cas = self.host.get_shared_data(key)
        self._give(c, value, ptr_out, size_out)
        self._write(c, cas_out, struct.pack("<I", cas))


class PythonRunner:
    """The same plugin source imported into CPython, the SDK bound to the StubHost."""

    def __init__(self, path: Path, host: StubHost) -> None:
        self.host = host
        self.previous = _hostabi.set_host(host)
        entrypoint.load_plugin(str(path))

    def call(self, name: str, *args: int) -> Any:
        _hostabi.set_host(self.host)
        func = getattr(entrypoint, name)
        hints = typing.get_type_hints(func)
        params = [hints[p] for p in inspect.signature(func).parameters]
        converted = [bool(a) if t is bool else a for a, t in zip(args, params, strict=True)]
        result = func(*converted)
        if isinstance(result, bool):
            return int(result)
        return int(result) if result is not None else None

    def close(self) -> None:
        _hostabi.set_host(self.previous)
        entrypoint.reset()
