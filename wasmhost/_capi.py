"""The per-request path into and out of the guest, through wasmtime's C API.

wasmtime-py's idiomatic layer costs 10-40 us per call into the guest and ~12 us per host
function; per request that is most of the budget. This module talks to the C library the
package ships (`wasmtime_func_call_unchecked`, `wasmtime_linker_define_func_unchecked`)
through ctypes, and reads guest memory through one cached memoryview:

* The engine is configured with ``memory_may_move = False`` so a linear memory's base
  address is fixed for the life of the instance. The view spans the whole reservation;
  every access is bounds-checked against the committed size, which is refreshed only
  when a check fails (memory never shrinks, so a stale size is always a safe size).
* Host functions receive their arguments as one raw ``wasmtime_val_raw_t`` array
  (16 bytes a slot), unpacked with one precompiled ``struct`` per signature.
* A Python exception never unwinds through C: the trampoline records it and returns a
  trap; :meth:`Caller.call` re-raises it on the host side.

Setup (compiling, linking, instantiating) uses the idiomatic API; only the hot path is
here. When ``make native`` has built ``_fastcall`` (``_fastcall.c``), the guest call and the
host trampoline run in C with the same contract; the ctypes code here is then the fallback
(``WASMESH_PURE_PYTHON=1``) and the reference.
"""

from __future__ import annotations

import ctypes
import importlib
import struct
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

# A private handle: setting restype/argtypes here must not change the function objects
# wasmtime-py itself calls through ``ffi.dll``.
_dll = ctypes.CDLL(ffi.dll._name)

_call_unchecked = _dll.wasmtime_func_call_unchecked
_call_unchecked.restype = ctypes.c_void_p
_call_unchecked.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]

_define_unchecked = _dll.wasmtime_linker_define_func_unchecked
_define_unchecked.restype = ctypes.c_void_p
_HOST_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_NO_FINALIZER = _FINALIZER()
_define_unchecked.argtypes = [
    ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
    ctypes.c_void_p, _HOST_CALLBACK, ctypes.c_void_p, _FINALIZER,
]

_trap_new = _dll.wasmtime_trap_new
_trap_new.restype = ctypes.c_void_p
_trap_new.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

_memory_data = _dll.wasmtime_memory_data
_memory_data.restype = ctypes.c_void_p
_memory_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_memory_data_size = _dll.wasmtime_memory_data_size
_memory_data_size.restype = ctypes.c_size_t
_memory_data_size.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

_set_epoch_deadline = _dll.wasmtime_context_set_epoch_deadline
_set_epoch_deadline.restype = None
_set_epoch_deadline.argtypes = [ctypes.c_void_p, ctypes.c_uint64]


def _load_fastcall() -> Any:
    """The C versions of :meth:`Caller.export` and the trampoline, when ``make native`` built them."""
    try:
        module = importlib.import_module(f"{__package__}._fastcall")
    except ImportError:
        return None
    module.init(ctypes.cast(_call_unchecked, ctypes.c_void_p).value, ctypes.cast(_trap_new, ctypes.c_void_p).value)
    return module


#: None: the ctypes path below (the reference) serves every call
FASTCALL: Any = _load_fastcall()
#: the C trampoline every host function registers with when FASTCALL is loaded (its env says which)
_FAST_TRAMPOLINE = ctypes.cast(FASTCALL.host_callback_address(), _HOST_CALLBACK) if FASTCALL is not None else None

VAL_SLOT = 16  # sizeof(wasmtime_val_raw_t)
_RESERVATION = 1 << 32  # 32-bit linear memories never need more address space

_VALTYPES = {"i": wasmtime.ValType.i32, "I": wasmtime.ValType.i64}


def func_type(params: str, results: str) -> wasmtime.FuncType:
    """A FuncType from a compact signature: ``i`` = i32, ``I`` = i64."""
    return wasmtime.FuncType([_VALTYPES[c]() for c in params], [_VALTYPES[c]() for c in results])


def args_struct(params: str) -> struct.Struct:
    """Unpacks the raw argument slots of a signature as unsigned integers."""
    fmt = "<" + "".join("I12x" if c == "i" else "Q8x" for c in params)
    return struct.Struct(fmt)


class GuestTrap(Exception):
    """The guest trapped, or a host function asked to trap it (message says which)."""

    def __init__(self, message: str, *, interrupted: bool = False, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.interrupted = interrupted
        self.exit_code = exit_code


class ExitRequested(Exception):
    """Raised by a host function (WASI ``proc_exit``) to unwind the guest as a trap."""

    def __init__(self, code: int) -> None:
        super().__init__(f"guest called proc_exit({code})")
        self.code = code


class GuestMemory:
    """Bounds-checked access to one instance's linear memory."""

    __slots__ = ("_ctx", "_mem", "_mem_ref", "base", "size", "view")

    def __init__(self, store: wasmtime.Store, memory: wasmtime.Memory) -> None:
        self._ctx = ctypes.cast(store._context(), ctypes.c_void_p).value
        self._mem = memory._memory
        self._mem_ref = ctypes.addressof(self._mem)
        self.base = _memory_data(self._ctx, self._mem_ref)
        self.size = _memory_data_size(self._ctx, self._mem_ref)
        self.view = memoryview((ctypes.c_ubyte * _RESERVATION).from_address(self.base)).cast("B")

    def refresh(self) -> int:
        """Re-read the committed size after the guest may have grown its memory."""
        base = _memory_data(self._ctx, self._mem_ref)
        if base != self.base:  # pragma: no cover - impossible with memory_may_move=False
            raise GuestTrap("linear memory moved; the engine must disable memory_may_move")
        self.size = _memory_data_size(self._ctx, self._mem_ref)
        return self.size

    def fits(self, ptr: int, length: int) -> bool:
        end = ptr + length
        return end <= self.size or end <= self.refresh()

    def read(self, ptr: int, length: int) -> bytes | None:
        end = ptr + length
        if end > self.size and end > self.refresh():
            return None
        return self.view[ptr:end].tobytes()

    def write(self, ptr: int, data: bytes) -> bool:
        end = ptr + len(data)
        if end > self.size and end > self.refresh():
            return False
        self.view[ptr:end] = data
        return True

    def read_u32(self, ptr: int) -> int | None:
        if ptr + 4 > self.size and ptr + 4 > self.refresh():
            return None
        return int.from_bytes(self.view[ptr : ptr + 4], "little")

    def write_u32(self, ptr: int, value: int) -> bool:
        if ptr + 4 > self.size and ptr + 4 > self.refresh():
            return False
        self.view[ptr : ptr + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
        return True

    def write_u64(self, ptr: int, value: int) -> bool:
        if ptr + 8 > self.size and ptr + 8 > self.refresh():
            return False
        self.view[ptr : ptr + 8] = (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
        return True


class Caller:
    """Calls guest exports through ``wasmtime_func_call_unchecked``.

    Each export gets a preallocated argument/result array; re-entrant calls (the host
    calling the guest's allocator from inside a host function) use their own export's
    array, so an outer call's slots are never clobbered.
    """

    __slots__ = ("_ctx", "_store", "_trap_out", "_trap_ref", "on_trap_exception")

    def __init__(self, store: wasmtime.Store) -> None:
        self._store = store
        self._ctx = ctypes.cast(store._context(), ctypes.c_void_p).value
        self._trap_out = ctypes.c_void_p()
        self._trap_ref = ctypes.addressof(self._trap_out)
        #: Set by the trampoline when a host function raised; re-raised after the call.
        self.on_trap_exception: BaseException | None = None

    def set_deadline(self, ticks: int) -> None:
        _set_epoch_deadline(self._ctx, ticks)

    def export(self, func: wasmtime.Func, nparams: int, nresults: int) -> Callable[..., int]:
        """A fast callable for one export; returns the first i32 result (or 0)."""
        if FASTCALL is not None:
            return FASTCALL.GuestFunc(self._ctx, ctypes.addressof(func._func), nparams, nresults, self._trap_ref,
                                      self._fail)
        slots = max(nparams, nresults, 1)
        buf = (ctypes.c_ubyte * (slots * VAL_SLOT))()
        view = memoryview(buf).cast("B")
        buf_ref = ctypes.addressof(buf)
        func_ref = ctypes.addressof(func._func)
        pack = struct.Struct("<" + "I12x" * nparams).pack_into if nparams else None
        ctx = self._ctx
        trap_ref = self._trap_ref
        fail = self._fail

        def call(*args: int) -> int:
            if pack is not None:
                try:
                    pack(view, 0, *args)
                except struct.error:  # a negative or oversized argument: wrap like the guest would
                    pack(view, 0, *[a & 0xFFFFFFFF for a in args])
            err = _call_unchecked(ctx, func_ref, buf_ref, slots, trap_ref)
            if err or self._trap_out.value:
                fail(err)
            if nresults:
                return int.from_bytes(view[0:4], "little", signed=True)
            return 0

        # ``view`` holds the buffer export, so the closure keeps ``buf`` alive
        return call

    def _fail(self, err: int | None) -> None:
        pending = self.on_trap_exception
        self.on_trap_exception = None
        if err:
            error = wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))
            message = str(error)
            trap: Any = None
        else:
            trap = wasmtime.Trap._from_ptr(ctypes.cast(self._trap_out, ctypes.POINTER(ffi.wasm_trap_t)))
            self._trap_out.value = None
            message = trap.message
        if isinstance(pending, ExitRequested):
            raise GuestTrap(str(pending), exit_code=pending.code) from None
        if pending is not None:
            raise GuestTrap(f"host function failed: {pending!r}") from pending
        interrupted = False
        if trap is not None:
            code = trap.trap_code
            interrupted = code is not None and code == wasmtime.TrapCode.INTERRUPT
        raise GuestTrap(_summarize(message), interrupted=interrupted)


def _summarize(message: str) -> str:
    """One line: the trap's cause, then the innermost guest frame when there is one."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    cause = next((line for line in lines if line.startswith("wasm trap:")), None)
    frame = next((line for line in lines if line[:1].isdigit() and " - " in line), None)
    if cause is None:
        return lines[-1] if lines else "trap"
    cause = cause.removeprefix("wasm trap: ")
    if frame is not None:
        return f"{cause} (in {frame.split(' - ', 1)[1]})"
    return cause


HostImpl = Callable[..., int | None]


def define_host_function(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    params: str,
    results: str,
    impl: HostImpl,
    caller: Caller,
    keepalive: list[Any],
    *,
    owner: Any,
    allowed: Callable[[Any], bool] | None = None,
    denied_result: int = 0,
) -> None:
    """Register ``impl(owner, *args) -> result`` as an unchecked host function.

    ``impl`` receives unsigned integers; a raised exception becomes a trap whose cause
    is re-raised by the :class:`Caller` that entered the guest. When ``allowed`` is given
    and ``owner.restricted`` is set, ``allowed(owner)`` decides whether the call runs or
    answers ``denied_result`` (cpp-host's restricted capability windows).
    """
    if FASTCALL is not None:
        binding = FASTCALL.HostBinding(impl, owner, params, results, allowed, denied_result, caller)
        keepalive.append(binding)
        _define(linker, module, name, params, results, _FAST_TRAMPOLINE, id(binding), keepalive)
        return
    unpack = args_struct(params).unpack_from if params else None
    slots_type = ctypes.c_ubyte * (len(params) * VAL_SLOT)
    from_address = slots_type.from_address
    has_result = bool(results)
    result_cell = (ctypes.c_uint64 if results == "I" else ctypes.c_uint32).from_address
    result_mask = 0xFFFFFFFFFFFFFFFF if results == "I" else 0xFFFFFFFF

    def trampoline(_env: int, _caller: int, args: int, _nargs: int) -> int:
        try:
            if allowed is not None and owner.restricted and not allowed(owner):
                result: Any = denied_result
            elif unpack is not None:
                result = impl(owner, *unpack(from_address(args)))
            else:
                result = impl(owner)
            if has_result:
                result_cell(args).value = int(result or 0) & result_mask
            return 0
        except BaseException as exc:  # noqa: BLE001 - nothing may unwind through C
            caller.on_trap_exception = exc
            message = str(exc).encode() or type(exc).__name__.encode()
            return _trap_new(message, len(message)) or 0

    callback = _HOST_CALLBACK(trampoline)
    keepalive.append(callback)
    _define(linker, module, name, params, results, callback, None, keepalive)


def _define(
    linker: wasmtime.Linker, module: str, name: str, params: str, results: str, callback: Any, env: int | None,
    keepalive: list[Any],
) -> None:
    functype = func_type(params, results)
    keepalive.append(functype)
    mod = module.encode()
    nm = name.encode()
    err = _define_unchecked(
        ctypes.cast(linker.ptr(), ctypes.c_void_p).value, mod, len(mod), nm, len(nm),
        ctypes.cast(functype.ptr(), ctypes.c_void_p).value, callback, env, _NO_FINALIZER,
    )
    if err:
        raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))

