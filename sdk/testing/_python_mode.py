"""CPython mode: run a plugin's Python source against the real host, through the bridge module.

:class:`PythonPlugin` is the foreign function the bridge (:mod:`._bridge`) calls for every
``proxy_on_*`` callback. It runs ``sdk.entrypoint``'s dispatcher — the same code a compiled
plugin runs — with ``sdk.proxywasm`` bound to :class:`BridgeBinding`, whose methods call the
real ``env.proxy_*`` host functions through the bridge's trampolines, marshalling exactly
as the compiler does (same ``SPECS`` table). So statuses, header edits, context windows and
deferred effects come from ``wasmhost`` itself, and a test can hold both modes to one
expectation.

What differs from the compiled module, by nature: the plugin's top-level code runs when it
is loaded (not inside the VM's start window); ints do not wrap at 64 bits; an uncaught
exception is logged like the compiled module logs it (``uncaught exception Name: message``)
and traps the VM, and its traceback is printed to stderr and kept in ``errors``.

``sdk.entrypoint`` keeps its contexts in module globals; each ``PythonPlugin`` keeps its
own copy and swaps it in while it runs, so several emulators in CPython mode can coexist
(driven from one thread at a time, as the emulator itself is).
A FAIL_RELOAD rebuild (a new VM) imports the plugin afresh, as a new instance of the
compiled module starts from fresh globals.
"""

from __future__ import annotations

import struct
import sys
import traceback
from pathlib import Path
from typing import Any

import wasmtime

from sdk import _hostabi, entrypoint
from sdk.compiler._hostcalls import PAIRS, SPECS, HostcallSpec
from sdk.errors import error_for_status
from wasmhost import WasmVM, decode_pairs, encode_pairs

from ._bridge import HOSTCALL_PREFIX, callbacks

_STATE_NAMES = (
    "_vm_context",
    "_plugin_contexts",
    "_http_contexts",
    "_tcp_contexts",
    "_callouts",
    "_active_context_id",
)
_FAILED = 10  # INTERNAL_FAILURE: the bridge traps on any non-OK dispatch status
_OUT_SIZE = {"buf": 8, "u32": 4, "u64": 8}
_active_owner: PythonPlugin | None = None


def _fresh_state() -> dict[str, Any]:
    return {
        "_vm_context": entrypoint.VMContext(),
        "_plugin_contexts": {},
        "_http_contexts": {},
        "_tcp_contexts": {},
        "_callouts": {},
        "_active_context_id": 0,
    }


def _i32(value: int) -> int:
    """An int as the compiled module passes it to an i32 parameter (low 32 bits, signed)."""
    return ((value + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _i64(value: int) -> int:
    return ((value + 0x8000000000000000) & 0xFFFFFFFFFFFFFFFF) - 0x8000000000000000


class BridgeBinding:
    """``sdk.proxywasm``'s host over one bridge VM: every call goes to the real host function."""

    def __init__(self, vm: WasmVM) -> None:
        self.vm = vm
        exports = vm.instance.exports(vm.store)
        self._funcs: dict[str, wasmtime.Func] = {}
        for spec in SPECS.values():
            func = exports[HOSTCALL_PREFIX + spec.import_name]
            assert isinstance(func, wasmtime.Func)
            self._funcs[spec.import_name] = func

    def _put(self, data: bytes) -> int:
        ptr = self.vm.allocate(len(data))
        if ptr == 0 or not self.vm.memory.write(ptr, data):
            raise MemoryError("the bridge module could not allocate memory")
        return ptr

    def _read(self, ptr: int, size: int) -> bytes:
        data = self.vm.memory.read(ptr, size) if size else b""
        if data is None:
            raise MemoryError(f"the host returned an out-of-bounds buffer ({ptr}, {size})")
        return data

    def call(self, name: str, *values: Any) -> Any:
        """Marshal ``values`` per the compiler's spec for ``name``, call, check, unmarshal."""
        spec: HostcallSpec = SPECS[name]
        args: list[int] = []
        for (_, kind, _), value in zip(spec.params, values, strict=True):
            if kind == "i32":
                args.append(_i32(value))
            elif kind == "i64":
                args.append(_i64(value))
            else:
                data = encode_pairs(value) if kind == "pairs" else bytes(value)
                args += [self._put(data), len(data)]
        outs = self._put(bytes(16))
        addresses: list[int] = []
        offset = outs
        for out in spec.outs:
            addresses.append(offset)
            offset += _OUT_SIZE[out]
            args += [addresses[-1], addresses[-1] + 4] if out == "buf" else [addresses[-1]]
        status = self._funcs[spec.import_name](self.vm.store, *args)
        if status != 0:
            raise error_for_status(status & 0xFFFFFFFF, spec.import_name)
        results: list[Any] = []
        for out, address in zip(spec.outs, addresses, strict=True):
            if out == "buf":
                ptr, size = struct.unpack("<II", self._read(address, 8))
                results.append(self._read(ptr, size))
            elif out == "u32":
                results.append(struct.unpack("<I", self._read(address, 4))[0])
            else:
                results.append(struct.unpack("<q", self._read(address, 8))[0])
        if spec.result == PAIRS:
            pairs = decode_pairs(results[0], max_bytes=len(results[0]), max_count=len(results[0]))
            if pairs is None:
                raise ValueError(f"{spec.import_name} returned a malformed header map")
            return pairs
        if len(results) > 1:
            return tuple(results)
        return results[0] if results else None

    # -- HostBinding ------------------------------------------------------------------------
    def log(self, level: int, message: bytes) -> None:
        self.call("log", level, message)

    def get_log_level(self) -> int:
        result: int = self.call("get_log_level")
        return result

    def get_current_time_nanoseconds(self) -> int:
        result: int = self.call("get_current_time_nanoseconds")
        return result

    def set_tick_period_milliseconds(self, period_ms: int) -> None:
        self.call("set_tick_period_milliseconds", period_ms)

    def set_effective_context(self, context_id: int) -> None:
        self.call("set_effective_context", context_id)

    def done(self) -> None:
        self.call("done")

    def get_buffer_bytes(self, buffer_type: int, start: int, max_size: int) -> bytes:
        result: bytes = self.call("get_buffer_bytes", buffer_type, start, max_size)
        return result

    def get_buffer_status(self, buffer_type: int) -> tuple[int, int]:
        result: tuple[int, int] = self.call("get_buffer_status", buffer_type)
        return result

    def set_buffer_bytes(self, buffer_type: int, start: int, size: int, data: bytes) -> None:
        self.call("set_buffer_bytes", buffer_type, start, size, data)

    def get_header_map_pairs(self, map_type: int) -> list[tuple[bytes, bytes]]:
        result: list[tuple[bytes, bytes]] = self.call("get_header_map_pairs", map_type)
        return result

    def set_header_map_pairs(self, map_type: int, pairs: list[tuple[bytes, bytes]]) -> None:
        self.call("set_header_map_pairs", map_type, pairs)

    def get_header_map_value(self, map_type: int, key: bytes) -> bytes:
        result: bytes = self.call("get_header_map_value", map_type, key)
        return result

    def add_header_map_value(self, map_type: int, key: bytes, value: bytes) -> None:
        self.call("add_header_map_value", map_type, key, value)

    def replace_header_map_value(self, map_type: int, key: bytes, value: bytes) -> None:
        self.call("replace_header_map_value", map_type, key, value)

    def remove_header_map_value(self, map_type: int, key: bytes) -> None:
        self.call("remove_header_map_value", map_type, key)

    def get_header_map_size(self, map_type: int) -> int:
        result: int = self.call("get_header_map_size", map_type)
        return result

    def continue_stream(self, stream_type: int) -> None:
        self.call("continue_stream", stream_type)

    def close_stream(self, stream_type: int) -> None:
        self.call("close_stream", stream_type)

    def send_local_response(
        self, status_code: int, details: bytes, body: bytes, headers: list[tuple[bytes, bytes]], grpc_status: int
    ) -> None:
        self.call("send_local_response", status_code, details, body, headers, grpc_status)

    def http_call(
        self,
        upstream: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        trailers: list[tuple[bytes, bytes]],
        timeout_ms: int,
    ) -> int:
        result: int = self.call("http_call", upstream, headers, body, trailers, timeout_ms)
        return result

    def get_status(self) -> tuple[int, bytes]:
        result: tuple[int, bytes] = self.call("get_status")
        return result

    def get_property(self, path: bytes) -> bytes:
        result: bytes = self.call("get_property", path)
        return result

    def set_property(self, path: bytes, value: bytes) -> None:
        self.call("set_property", path, value)

    def get_shared_data(self, key: bytes) -> tuple[bytes, int]:
        result: tuple[bytes, int] = self.call("get_shared_data", key)
        return result

    def set_shared_data(self, key: bytes, value: bytes, cas: int) -> None:
        self.call("set_shared_data", key, value, cas)

    def register_shared_queue(self, name: bytes) -> int:
        result: int = self.call("register_shared_queue", name)
        return result

    def resolve_shared_queue(self, vm_id: bytes, name: bytes) -> int:
        result: int = self.call("resolve_shared_queue", vm_id, name)
        return result

    def enqueue_shared_queue(self, queue_id: int, value: bytes) -> None:
        self.call("enqueue_shared_queue", queue_id, value)

    def dequeue_shared_queue(self, queue_id: int) -> bytes:
        result: bytes = self.call("dequeue_shared_queue", queue_id)
        return result

    def define_metric(self, metric_type: int, name: bytes) -> int:
        result: int = self.call("define_metric", metric_type, name)
        return result

    def increment_metric(self, metric_id: int, offset: int) -> None:
        self.call("increment_metric", metric_id, offset)

    def record_metric(self, metric_id: int, value: int) -> None:
        self.call("record_metric", metric_id, value)

    def get_metric(self, metric_id: int) -> int:
        result: int = self.call("get_metric", metric_id)
        return result

    def call_foreign_function(self, name: bytes, argument: bytes) -> bytes:
        result: bytes = self.call("call_foreign_function", name, argument)
        return result


class PythonPlugin:
    """The plugin's Python source, loaded into this process and dispatched to from the bridge.

    ``vms`` is the emulator's VM table (``Plugin(shared_vms=...)``): the bridge instance that
    is calling is the one in it, also while the host is still starting it.
    """

    def __init__(self, source: str | Path, vms: dict[object, WasmVM]) -> None:
        self.source = Path(source)
        self.vms = vms
        self.errors: list[BaseException] = []
        self._state: dict[str, Any] = _fresh_state()
        self._vm: WasmVM | None = None
        self._binding: BridgeBinding | None = None
        self._load()  # import errors surface now, as real tracebacks

    def _load(self) -> None:
        self._activate()
        for name, value in _fresh_state().items():
            setattr(entrypoint, name, value)
        previous = _hostabi.set_host(None)
        try:
            entrypoint.load_plugin(str(self.source))
        finally:
            _hostabi.set_host(previous)

    def _activate(self) -> None:
        """Install this plugin's entrypoint state (saving the state of whoever had it)."""
        global _active_owner
        if _active_owner is self:
            return
        if _active_owner is not None:
            _active_owner._state = {name: getattr(entrypoint, name) for name in _STATE_NAMES}
        for name, value in self._state.items():
            setattr(entrypoint, name, value)
        _active_owner = self

    def close(self) -> None:
        """Forget this plugin's contexts (and let go of its VM) if it is the one installed."""
        global _active_owner
        if _active_owner is self:
            for name, value in _fresh_state().items():
                setattr(entrypoint, name, value)
            _active_owner = None
        self._state = _fresh_state()
        self._vm = self._binding = None

    def _current_vm(self) -> WasmVM:
        if len(self.vms) != 1:
            raise RuntimeError(f"expected one bridge VM, the host has {len(self.vms)}")
        return next(iter(self.vms.values()))

    def __call__(self, args: bytes) -> tuple[int, bytes]:
        """The foreign function: run one callback; a non-OK status makes the bridge trap."""
        vm = self._current_vm()
        if vm is not self._vm:
            if self._vm is not None:
                self._load()  # a rebuilt VM starts from a fresh import, like a new instance
            self._vm, self._binding = vm, BridgeBinding(vm)
        self._activate()
        binding = self._binding
        assert binding is not None
        previous = _hostabi.set_host(binding)
        try:
            return 0, self._run(binding, args)
        except Exception as error:  # noqa: BLE001 - the plugin's bug becomes a trap, as compiled
            self.errors.append(error)
            traceback.print_exception(error, file=sys.stderr)
            try:
                binding.log(4, f"uncaught exception {type(error).__name__}: {error}".encode())
            except Exception:  # noqa: BLE001 - the VM is failing anyway
                pass
            return _FAILED, b""
        finally:
            _hostabi.set_host(previous)

    @staticmethod
    def _run(binding: BridgeBinding, args: bytes) -> bytes:
        values = struct.unpack(f"<{len(args) // 4}I", args)
        callback = callbacks()[values[0]]
        converted = [bool(v) if flag else v for v, flag in zip(values[1:], callback.bool_params, strict=True)]
        result = callback.function(*converted)
        if not callback.has_result:
            return b""
        return struct.pack("<I", int(result) & 0xFFFFFFFF)
