"""Host functions for maps, buffers, logging, time and stream control (ABI marshalling layer).

Each function bounds-checks every guest pointer (→ INVALID_MEMORY_ACCESS), validates
enums (→ BAD_ARGUMENT), then acts on the effective context's state. Statuses follow
Envoy, and where Envoy would make a well-known SDK panic (reference §1.6) we pick the
status that SDK tolerates and say so.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING

from ._abi import (
    AbiVersion,
    BufferType,
    LogLevel,
    MapType,
    Pairs,
    Status,
    StreamType,
    decode_pairs,
    encode_pairs,
)
from ._capi import GuestTrap
from ._commands import (
    ClearRouteCache,
    CloseStream,
    DeleteRootContext,
    ResumeStream,
    SendLocalReply,
    SetTickPeriod,
)
from ._context import HttpContext, RootContext, TcpContext
from ._registry import hostcall

if TYPE_CHECKING:
    from ._vm import WasmVM

OK = int(Status.OK)
NOT_FOUND = int(Status.NOT_FOUND)
BAD_ARGUMENT = int(Status.BAD_ARGUMENT)
INVALID_MEMORY_ACCESS = int(Status.INVALID_MEMORY_ACCESS)
_U32_MAX = 0xFFFFFFFF
_name_of = itemgetter(0)


def _ctx(vm: WasmVM) -> RootContext | HttpContext | TcpContext | None:
    return vm.effective or vm.current


# -- header maps -------------------------------------------------------------------------
#
# Edits follow Envoy's HeaderMapImpl (1.40, measured): a header Envoy stores inline gets a
# second value appended to the first with "," (addCopy); any other header gets a new entry,
# pseudo-headers at the end of the leading pseudo-header block; replace removes every
# occurrence and adds the new value (setCopy); set_header_map_pairs removes everything and
# adds each pair in turn.

_INLINE_REQUEST_AND_RESPONSE = frozenset(
    b"connection content-type x-envoy-decorator-operation keep-alive proxy-connection proxy-status"
    b" x-request-id transfer-encoding upgrade via content-length"
    # registered by extensions linked into the Envoy build (observed on 1.40)
    b" cache-control".split()
)
_INLINE_REQUEST_CUSTOM = frozenset(
    b"authorization accept accept-encoding referer origin pragma if-none-match if-match if-modified-since"
    b" if-unmodified-since if-range grpc-accept-encoding access-control-request-method"
    b" access-control-request-headers access-control-request-private-network".split()
)
_INLINE_RESPONSE_CUSTOM = frozenset(
    b"vary etag content-encoding expires last-modified age grpc-status grpc-message"
    b" access-control-allow-origin access-control-allow-headers access-control-allow-methods"
    b" access-control-allow-credentials access-control-max-age access-control-expose-headers"
    b" access-control-allow-private-network".split()
)
_INLINE_HEADERS: dict[int, frozenset[bytes]] = {
    int(MapType.HTTP_REQUEST_HEADERS): _INLINE_REQUEST_AND_RESPONSE | frozenset(
        b":authority :method :path :protocol :scheme te user-agent expect grpc-timeout x-client-trace-id"
        b" x-envoy-downstream-service-cluster x-envoy-downstream-service-node x-envoy-external-address"
        b" x-envoy-force-trace x-envoy-hedge-on-per-try-timeout x-envoy-internal x-envoy-ip-tags"
        b" x-envoy-original-url x-envoy-retry-on x-envoy-retry-grpc-on x-envoy-retriable-status-codes"
        b" x-envoy-retriable-header-names x-envoy-is-timeout-retry x-envoy-original-path"
        b" x-envoy-upstream-alt-stat-name x-envoy-upstream-rq-timeout-alt-response"
        b" x-forwarded-client-cert x-forwarded-for x-forwarded-host x-forwarded-proto"
        b" x-envoy-expected-rq-timeout-ms x-envoy-max-retries x-envoy-upstream-rq-timeout-ms"
        b" x-envoy-upstream-rq-per-try-timeout-ms x-envoy-upstream-stream-duration-ms".split()
    ) | _INLINE_REQUEST_CUSTOM,
    int(MapType.HTTP_RESPONSE_HEADERS): _INLINE_REQUEST_AND_RESPONSE | frozenset(
        b":status date location server x-envoy-degraded x-envoy-immediate-health-check-fail"
        b" x-envoy-ratelimited x-envoy-upstream-canary x-envoy-upstream-healthchecked-cluster"
        b" x-envoy-upstream-service-time x-envoy-overloaded".split()
    ) | _INLINE_RESPONSE_CUSTOM,
    int(MapType.HTTP_RESPONSE_TRAILERS): frozenset((b"grpc-status", b"grpc-message")),
}


def _add_header(target: Pairs, map_type: int, key: bytes, value: bytes) -> None:
    """Envoy's ``addCopy``: join an inline header's values, else add an entry in place."""
    if key in _INLINE_HEADERS.get(map_type, ()):
        for i, (name, existing) in enumerate(target):
            if name == key:
                target[i] = (name, existing + b"," + value if existing else value)
                return
    if key.startswith(b":"):
        end = 0
        while end < len(target) and target[end][0].startswith(b":"):
            end += 1
        target.insert(end, (key, value))
        return
    target.append((key, value))


_REQUEST_HEADERS = int(MapType.HTTP_REQUEST_HEADERS)
_RESPONSE_HEADERS = int(MapType.HTTP_RESPONSE_HEADERS)
_REQUEST_TRAILERS = int(MapType.HTTP_REQUEST_TRAILERS)


def _get_map(vm: WasmVM, map_type: int) -> Pairs | None:
    """The map the effective context can see now, or None when it is not available.

    A stream's map is open from its callback until it is forwarded (the ``*_writable``
    flags, kept by :class:`wasmhost.HttpStream`) and readable again at log time, as Envoy's
    ``getConstMap``."""
    ctx = vm.effective or vm.current
    if ctx is None:
        return None
    if map_type <= 3:
        if not isinstance(ctx, HttpContext):
            return None
        if map_type == _REQUEST_HEADERS:
            return ctx.request_headers if ctx.request_headers_writable or ctx.in_log else None
        if map_type == _RESPONSE_HEADERS:
            return ctx.response_headers if ctx.response_headers_writable or ctx.in_log else None
        if map_type == _REQUEST_TRAILERS:
            if ctx.request_trailers_writable:
                if ctx.request_trailers is None:
                    ctx.request_trailers = []
                return ctx.request_trailers
            return ctx.request_trailers if ctx.in_log else None
        if ctx.response_trailers_writable:
            if ctx.response_trailers is None:
                ctx.response_trailers = []
            return ctx.response_trailers
        return ctx.response_trailers if ctx.in_log else None
    root = ctx.root
    if map_type in (MapType.GRPC_CALL_INITIAL_METADATA, MapType.GRPC_CALL_TRAILING_METADATA):
        return root.grpc_metadata
    if root.callout is None:
        return None
    if map_type == MapType.HTTP_CALL_RESPONSE_HEADERS:
        return root.callout.headers
    return root.callout.trailers


def _writable_map(vm: WasmVM, map_type: int) -> Pairs | None:
    """The stream map a write (or Envoy's size query) may touch now: an open one, never at log time."""
    if map_type > 3:
        return None  # callout and gRPC maps are read-only
    ctx = vm.effective or vm.current
    if not isinstance(ctx, HttpContext) or ctx.in_log:
        return None
    if map_type == _REQUEST_HEADERS:
        return ctx.request_headers if ctx.request_headers_writable else None
    if map_type == _RESPONSE_HEADERS:
        return ctx.response_headers if ctx.response_headers_writable else None
    return _get_map(vm, map_type)  # trailers: created by the first write where allowed


@hostcall("proxy_get_header_map_pairs", "iii")
def get_header_map_pairs(vm: WasmVM, map_type: int, ret_ptr: int, ret_size: int) -> int:
    if map_type > 7:
        return BAD_ARGUMENT
    pairs = _get_map(vm, map_type)
    return vm.return_bytes(encode_pairs(pairs) if pairs else b"", ret_ptr, ret_size)


@hostcall("proxy_get_header_map_size", "ii")
def get_header_map_size(vm: WasmVM, map_type: int, ret_size: int) -> int:
    if map_type > 7:
        return BAD_ARGUMENT
    pairs = _writable_map(vm, map_type)  # Envoy sizes only the maps a write could reach
    if pairs is None:
        return BAD_ARGUMENT
    size = sum(len(k) + len(v) for k, v in pairs)
    return OK if vm.memory.write_u32(ret_size, size) else INVALID_MEMORY_ACCESS


@hostcall("proxy_set_header_map_pairs", "iii")
def set_header_map_pairs(vm: WasmVM, map_type: int, data_ptr: int, data_len: int) -> int:
    if map_type > 7:
        return BAD_ARGUMENT
    data = vm.read(data_ptr, data_len)
    if data is None:
        return INVALID_MEMORY_ACCESS
    target = _writable_map(vm, map_type)
    if target is None:
        return BAD_ARGUMENT
    pairs = decode_pairs(data, max_bytes=vm.limits.max_pairs_bytes, max_count=vm.limits.max_pairs_count)
    if pairs is None:
        return BAD_ARGUMENT
    target.clear()
    for k, v in pairs:
        _add_header(target, map_type, k.lower(), v)
    return OK


@hostcall("proxy_get_header_map_value", "iiiii")
def get_header_map_value(vm: WasmVM, map_type: int, key_ptr: int, key_len: int, ret_ptr: int, ret_size: int) -> int:
    if map_type > 7:
        return BAD_ARGUMENT
    key = vm.memory.read(key_ptr, key_len)
    if key is None:
        return INVALID_MEMORY_ACCESS
    pairs = _get_map(vm, map_type)
    if pairs:
        key = key.lower()
        if key in map(_name_of, pairs):  # a scan in C: a plugin often asks for a header that is not there
            for name, value in pairs:
                if name == key:
                    return vm.return_bytes(value, ret_ptr, ret_size)
    elif pairs is None and not _in_log(vm):
        return BAD_ARGUMENT  # Envoy: the map is not available now (forwarded, or not this callback's)
    if vm.abi is AbiVersion.V0_1_0:
        return vm.return_bytes(b"", ret_ptr, ret_size)
    return NOT_FOUND


def _in_log(vm: WasmVM) -> bool:
    ctx = vm.effective or vm.current
    return isinstance(ctx, HttpContext) and ctx.in_log


def _check_value(vm: WasmVM, target: Pairs, extra: int) -> bool:
    return sum(map(len, chain.from_iterable(target))) + extra <= vm.limits.max_header_map_bytes


def _set_value(
    vm: WasmVM, map_type: int, key_ptr: int, key_len: int, val_ptr: int, val_len: int, *, replace: bool
) -> int:
    """add (keep existing values) or replace (Envoy's setCopy: remove every value, then add)."""
    if map_type > 7:
        return BAD_ARGUMENT
    memory = vm.memory
    key = memory.read(key_ptr, key_len)
    value = memory.read(val_ptr, val_len)
    if key is None or value is None:
        return INVALID_MEMORY_ACCESS
    target = _writable_map(vm, map_type)
    if target is None or not _check_value(vm, target, len(key) + len(value)):
        return BAD_ARGUMENT
    key = key.lower()
    if replace and key in map(_name_of, target):  # the scan runs in C; most replaced headers are new
        target[:] = [p for p in target if p[0] != key]
    _add_header(target, map_type, key, value)
    return OK


@hostcall("proxy_add_header_map_value", "iiiii")
def add_header_map_value(vm: WasmVM, map_type: int, key_ptr: int, key_len: int, val_ptr: int, val_len: int) -> int:
    return _set_value(vm, map_type, key_ptr, key_len, val_ptr, val_len, replace=False)


@hostcall("proxy_replace_header_map_value", "iiiii")
def replace_header_map_value(vm: WasmVM, map_type: int, key_ptr: int, key_len: int, val_ptr: int, val_len: int) -> int:
    return _set_value(vm, map_type, key_ptr, key_len, val_ptr, val_len, replace=True)


@hostcall("proxy_remove_header_map_value", "iii")
def remove_header_map_value(vm: WasmVM, map_type: int, key_ptr: int, key_len: int) -> int:
    if map_type > 7:
        return BAD_ARGUMENT
    key = vm.read(key_ptr, key_len)
    if key is None:
        return INVALID_MEMORY_ACCESS
    target = _writable_map(vm, map_type)
    if target is None:
        return BAD_ARGUMENT
    key = key.lower()
    target[:] = [p for p in target if p[0] != key]
    return OK


# -- buffers -----------------------------------------------------------------------------

def _get_buffer(vm: WasmVM, buffer_type: int) -> bytes | bytearray | None:
    """The buffer as Envoy's ``Context::getBuffer`` resolves it: body, data and gRPC message
    buffers always exist (empty when nothing is held now); callout body, plugin configuration
    and foreign arguments only inside their callbacks (None → NOT_FOUND)."""
    ctx = _ctx(vm)
    if buffer_type == BufferType.VM_CONFIGURATION:
        return vm.vm_configuration
    if ctx is None:
        return None
    held: bytearray | None = None
    if buffer_type == BufferType.HTTP_REQUEST_BODY:
        held = ctx.request_body if isinstance(ctx, HttpContext) else None
        return b"" if held is None else held
    if buffer_type == BufferType.HTTP_RESPONSE_BODY:
        held = ctx.response_body if isinstance(ctx, HttpContext) else None
        return b"" if held is None else held
    if buffer_type == BufferType.DOWNSTREAM_DATA:
        held = ctx.downstream_data if isinstance(ctx, TcpContext) else None
        return b"" if held is None else held
    if buffer_type == BufferType.UPSTREAM_DATA:
        held = ctx.upstream_data if isinstance(ctx, TcpContext) else None
        return b"" if held is None else held
    root = ctx.root
    if buffer_type == BufferType.HTTP_CALL_RESPONSE_BODY:
        return root.callout.body if root.callout is not None else None
    if buffer_type == BufferType.GRPC_CALL_MESSAGE:
        return b"" if root.grpc_message is None else root.grpc_message
    if buffer_type == BufferType.PLUGIN_CONFIGURATION:
        return root.spec.configuration if root.configuring else None
    if buffer_type == BufferType.FOREIGN_FUNCTION_ARGUMENTS:
        return root.foreign_args
    return None


@hostcall("proxy_get_buffer_bytes", "iiiii")
def get_buffer_bytes(vm: WasmVM, buffer_type: int, start: int, max_size: int, ret_ptr: int, ret_size: int) -> int:
    if buffer_type > 8 or start + max_size > _U32_MAX:
        return BAD_ARGUMENT
    buffer = _get_buffer(vm, buffer_type)
    if buffer is None:
        return NOT_FOUND
    chunk = bytes(buffer[start : start + max_size]) if start < len(buffer) else b""
    return vm.return_bytes(chunk, ret_ptr, ret_size)


@hostcall("proxy_get_buffer_status", "iii")
def get_buffer_status(vm: WasmVM, buffer_type: int, ret_size: int, ret_flags: int) -> int:
    if buffer_type > 8:
        return BAD_ARGUMENT
    buffer = _get_buffer(vm, buffer_type)
    if buffer is None:
        return NOT_FOUND
    memory = vm.memory
    if not memory.fits(ret_size, 4) or not memory.fits(ret_flags, 4):
        return INVALID_MEMORY_ACCESS
    memory.write_u32(ret_size, len(buffer))
    memory.write_u32(ret_flags, 0)
    return OK


@hostcall("proxy_set_buffer_bytes", "iiiii")
def set_buffer_bytes(vm: WasmVM, buffer_type: int, start: int, size: int, data_ptr: int, data_len: int) -> int:
    if buffer_type > 8:
        return BAD_ARGUMENT
    data = vm.read(data_ptr, data_len)
    if data is None:
        return INVALID_MEMORY_ACCESS
    if buffer_type > BufferType.UPSTREAM_DATA:
        return BAD_ARGUMENT  # call responses, messages and configuration are immutable
    buffer = _get_buffer(vm, buffer_type)
    if not isinstance(buffer, bytearray):
        return NOT_FOUND
    if start == 0:
        del buffer[: min(size, len(buffer))]
        buffer[0:0] = data
    elif start >= len(buffer):
        buffer += data
    else:
        return BAD_ARGUMENT
    if len(buffer) > vm.limits.max_body_bytes:
        del buffer[vm.limits.max_body_bytes :]
        return BAD_ARGUMENT
    return OK


# -- logging, time, configuration ------------------------------------------------------------

@hostcall("proxy_log", "iii", during_start=True, during_alloc=True)
def log(vm: WasmVM, level: int, msg_ptr: int, msg_len: int) -> int:
    if level > LogLevel.CRITICAL:
        return BAD_ARGUMENT
    if msg_len > vm.limits.max_log_message:
        msg_len = vm.limits.max_log_message
    data = vm.memory.read(msg_ptr, msg_len)
    if data is None:
        return INVALID_MEMORY_ACCESS
    if level >= vm.environment.log_level:
        spec = vm.spec_for_current()
        message = data.decode("utf-8", "replace")
        if spec is None:
            vm.log(LogLevel(level), message)
        else:
            vm.environment.log(spec, LogLevel(level), message)
    return OK


@hostcall("proxy_get_log_level", "i")
def get_log_level(vm: WasmVM, ret_level: int) -> int:
    return OK if vm.memory.write_u32(ret_level, int(vm.environment.log_level)) else INVALID_MEMORY_ACCESS


@hostcall("proxy_get_current_time_nanoseconds", "i")
def get_current_time_nanoseconds(vm: WasmVM, ret_time: int) -> int:
    return OK if vm.memory.write_u64(ret_time, vm.environment.now_ns()) else INVALID_MEMORY_ACCESS


@hostcall("proxy_set_tick_period_milliseconds", "i")
def set_tick_period_milliseconds(vm: WasmVM, period_ms: int) -> int:
    ctx = _ctx(vm)
    if ctx is None:
        return BAD_ARGUMENT
    root = ctx.root
    root.tick_period_ms = period_ms
    vm.runtime.commands.push(SetTickPeriod(root, period_ms))
    return OK


@hostcall("proxy_get_configuration", "ii")
def get_configuration(vm: WasmVM, ret_ptr: int, ret_size: int) -> int:
    """ABI 0.1.0: plugin configuration inside on_configure, VM configuration otherwise."""
    ctx = _ctx(vm)
    if ctx is not None and ctx.root.configuring:
        return vm.return_bytes(ctx.root.spec.configuration, ret_ptr, ret_size)
    return vm.return_bytes(vm.vm_configuration, ret_ptr, ret_size)


# -- stream control -------------------------------------------------------------------------------

def _stream(vm: WasmVM) -> HttpContext | TcpContext | None:
    ctx = _ctx(vm)
    return ctx if isinstance(ctx, HttpContext | TcpContext) else None


@hostcall("proxy_continue_stream", "i")
def continue_stream(vm: WasmVM, stream_type: int) -> int:
    if stream_type > StreamType.UPSTREAM:
        return BAD_ARGUMENT
    stream = _stream(vm)
    if stream is None or stream_type == StreamType.UPSTREAM:
        return OK  # Envoy says UNIMPLEMENTED for UPSTREAM, which panics Rust plugins
    vm.runtime.commands.push(ResumeStream(stream, StreamType(stream_type)))
    return OK


@hostcall("proxy_close_stream", "i")
def close_stream(vm: WasmVM, stream_type: int) -> int:
    if stream_type > StreamType.UPSTREAM:
        return BAD_ARGUMENT
    stream = _stream(vm)
    if stream is None:
        return OK
    vm.runtime.commands.push(CloseStream(stream, StreamType(stream_type)))
    return OK


@hostcall("proxy_continue_request", "")
def continue_request(vm: WasmVM) -> int:
    return continue_stream(vm, StreamType.HTTP_REQUEST)


@hostcall("proxy_continue_response", "")
def continue_response(vm: WasmVM) -> int:
    return continue_stream(vm, StreamType.HTTP_RESPONSE)


@hostcall("proxy_clear_route_cache", "")
def clear_route_cache(vm: WasmVM) -> int:
    stream = _stream(vm)
    if isinstance(stream, HttpContext):
        vm.runtime.commands.push(ClearRouteCache(stream))
    return OK


@hostcall("proxy_send_local_response", "iiiiiiii")
def send_local_response(
    vm: WasmVM, status: int, details_ptr: int, details_len: int, body_ptr: int, body_len: int,
    headers_ptr: int, headers_len: int, grpc_status: int,
) -> int:
    details = vm.read(details_ptr, details_len)
    body = vm.read(body_ptr, body_len)
    raw_headers = vm.read(headers_ptr, headers_len)
    if details is None or body is None or raw_headers is None:
        return INVALID_MEMORY_ACCESS
    stream = _stream(vm)
    if not isinstance(stream, HttpContext):
        return BAD_ARGUMENT
    headers = decode_pairs(raw_headers, max_bytes=vm.limits.max_pairs_bytes, max_count=vm.limits.max_pairs_count)
    if headers is None:
        headers = []  # cpp-host treats a malformed blob as no headers
    if stream.local_reply_sent:
        return OK
    if not 100 <= status <= 999:
        status = 500
    text = "_".join(details.decode("utf-8", "replace").split())
    grpc = grpc_status if grpc_status <= 16 else None
    stream.local_reply_sent = True
    vm.runtime.commands.push(
        SendLocalReply(stream, status, body, [(k.lower(), v) for k, v in headers], text, grpc)
    )
    return OK


# -- contexts -----------------------------------------------------------------------------------

@hostcall("proxy_set_effective_context", "i")
def set_effective_context(vm: WasmVM, context_id: int) -> int:
    ctx = vm.contexts.get(context_id)
    if ctx is None:
        return BAD_ARGUMENT
    vm.effective = ctx
    return OK


@hostcall("proxy_done", "")
def done(vm: WasmVM) -> int:
    ctx = _ctx(vm)
    if ctx is None or not ctx.root.pending_done:
        return NOT_FOUND
    vm.runtime.commands.push(DeleteRootContext(ctx.root))
    return OK


# -- toolchain odds and ends -------------------------------------------------------------------

@hostcall("emscripten_notify_memory_growth", "i", "", during_start=True, during_alloc=True)
def emscripten_notify_memory_growth(vm: WasmVM, _index: int) -> None:
    vm.memory.refresh()


@hostcall("pthread_equal", "ii", during_start=True, during_alloc=True)
def pthread_equal(vm: WasmVM, a: int, b: int) -> int:
    return int(a == b)


@hostcall("abort", "iiii", "", during_start=True, during_alloc=True)
def abort(vm: WasmVM, msg_ptr: int, file_ptr: int, line: int, column: int) -> None:
    """AssemblyScript's default abort: read its UTF-16 message if we can, then trap."""
    raise GuestTrap(f"abort: {_as_string(vm, msg_ptr)} at {_as_string(vm, file_ptr)}:{line}:{column}")


def _as_string(vm: WasmVM, ptr: int) -> str:
    if ptr < 4:
        return "?"
    size = vm.memory.read_u32(ptr - 4)
    if size is None or size > 4096:
        return "?"
    raw = vm.read(ptr, size)
    return raw.decode("utf-16-le", "replace") if raw is not None else "?"


