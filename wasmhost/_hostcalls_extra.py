"""Host functions for shared data, shared queues, HTTP/gRPC callouts and call status.

Callouts are always issued on the root context of the effective context and answered on
that root by token (reference §2.6); tokens are unique per VM and numbered as cpp-host does:
one sequence per kind, stepping by 4, the kind in the low two bits (HTTP call 4, 8, …; gRPC
call 5, 9, …; gRPC stream 6, 10, …), so plugins see the same tokens as in Envoy. Dispatch
itself is a command the embedder carries out after the callback returns.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from ._abi import Status, decode_pairs
from ._commands import CancelGrpc, DispatchGrpcCall, DispatchHttpCall, NotifyQueueReady, SendGrpcMessage
from ._hostcalls_grpc import (
    DispatchGrpcServiceCall,
    GrpcTargetError,
    forget_stream,
    is_finished_stream,
    log_refusal,
    note_half_close,
    resolve_grpc_target,
    take_finished_stream,
)
from ._registry import hostcall

if TYPE_CHECKING:
    from ._context import RootContext
    from ._vm import WasmVM

OK = int(Status.OK)
NOT_FOUND = int(Status.NOT_FOUND)
BAD_ARGUMENT = int(Status.BAD_ARGUMENT)
PARSE_FAILURE = int(Status.PARSE_FAILURE)
INVALID_MEMORY_ACCESS = int(Status.INVALID_MEMORY_ACCESS)
INTERNAL_FAILURE = int(Status.INTERNAL_FAILURE)
_I32_MAX = 0x7FFFFFFF


_HTTP_CALL, _GRPC_CALL, _GRPC_STREAM = 0, 1, 2
_last_tokens: weakref.WeakKeyDictionary[WasmVM, list[int]] = weakref.WeakKeyDictionary()


def _next_token(vm: WasmVM, kind: int) -> int:
    """cpp-host's ``nextHttpCallId``/``nextGrpcCallId``/``nextGrpcStreamId`` for this VM."""
    last = _last_tokens.get(vm)
    if last is None:
        last = _last_tokens[vm] = [_HTTP_CALL, _GRPC_CALL, _GRPC_STREAM]
    last[kind] = (last[kind] + 4) & 0xFFFFFFFF
    return last[kind]


def _root(vm: WasmVM) -> RootContext | None:
    ctx = vm.effective or vm.current
    return ctx.root if ctx is not None else None


# -- shared data -------------------------------------------------------------------------

@hostcall("proxy_get_shared_data", "iiiii")
def get_shared_data(vm: WasmVM, key_ptr: int, key_len: int, ret_ptr: int, ret_size: int, ret_cas: int) -> int:
    key = vm.read(key_ptr, key_len)
    if key is None or not vm.memory.fits(ret_cas, 4):
        return INVALID_MEMORY_ACCESS
    entry = vm.runtime.shared.data(vm.vm_id).get(key)
    if entry is None:
        return NOT_FOUND
    value, cas = entry
    status = vm.return_bytes(value, ret_ptr, ret_size)
    if status == OK:
        vm.memory.write_u32(ret_cas, cas)
    return status


@hostcall("proxy_set_shared_data", "iiiii")
def set_shared_data(vm: WasmVM, key_ptr: int, key_len: int, val_ptr: int, val_len: int, cas: int) -> int:
    key = vm.read(key_ptr, key_len)
    value = vm.read(val_ptr, val_len)
    if key is None or value is None:
        return INVALID_MEMORY_ACCESS
    return int(vm.runtime.shared.data(vm.vm_id).set(key, value, cas))


# -- shared queues -----------------------------------------------------------------------

@hostcall("proxy_register_shared_queue", "iii")
def register_shared_queue(vm: WasmVM, name_ptr: int, name_len: int, ret_id: int) -> int:
    name = vm.read(name_ptr, name_len)
    if name is None or not vm.memory.fits(ret_id, 4):
        return INVALID_MEMORY_ACCESS
    root = _root(vm)
    if root is None:
        return BAD_ARGUMENT
    qid = vm.runtime.shared.register_queue(vm.vm_id, name.decode("utf-8", "replace"), root)
    if qid == 0:
        return INTERNAL_FAILURE  # the cross-process queue table or heap is full
    vm.memory.write_u32(ret_id, qid)
    return OK


@hostcall("proxy_resolve_shared_queue", "iiiii")
def resolve_shared_queue(vm: WasmVM, vm_id_ptr: int, vm_id_len: int, name_ptr: int, name_len: int, ret_id: int) -> int:
    vm_id = vm.read(vm_id_ptr, vm_id_len)
    name = vm.read(name_ptr, name_len)
    if vm_id is None or name is None or not vm.memory.fits(ret_id, 4):
        return INVALID_MEMORY_ACCESS
    scope = vm_id.decode("utf-8", "replace") or vm.vm_id
    qid = vm.runtime.shared.resolve_queue(scope, name.decode("utf-8", "replace"))
    if qid is None:
        return NOT_FOUND
    vm.memory.write_u32(ret_id, qid)
    return OK


@hostcall("proxy_enqueue_shared_queue", "iii")
def enqueue_shared_queue(vm: WasmVM, queue_id: int, val_ptr: int, val_len: int) -> int:
    value = vm.read(val_ptr, val_len)
    if value is None:
        return INVALID_MEMORY_ACCESS
    if len(value) > vm.limits.max_shared_value_bytes:
        return BAD_ARGUMENT
    queue = vm.runtime.shared.enqueue(queue_id, value)
    if queue is None:
        return NOT_FOUND
    if queue.owner is not None and not queue.owner.deleted:
        vm.runtime.commands.push(NotifyQueueReady(queue.owner, queue_id))
    return OK


@hostcall("proxy_dequeue_shared_queue", "iii")
def dequeue_shared_queue(vm: WasmVM, queue_id: int, ret_ptr: int, ret_size: int) -> int:
    if not vm.memory.fits(ret_ptr, 4) or not vm.memory.fits(ret_size, 4):
        return INVALID_MEMORY_ACCESS
    status, value = vm.runtime.shared.dequeue(queue_id)
    if status != Status.OK:
        return int(status)
    return vm.return_bytes(value, ret_ptr, ret_size)


# -- HTTP callouts ---------------------------------------------------------------------------

@hostcall("proxy_http_call", "iiiiiiiiii")
def http_call(
    vm: WasmVM, upstream_ptr: int, upstream_len: int, headers_ptr: int, headers_len: int,
    body_ptr: int, body_len: int, trailers_ptr: int, trailers_len: int, timeout_ms: int, ret_token: int,
) -> int:
    upstream = vm.read(upstream_ptr, upstream_len)
    raw_headers = vm.read(headers_ptr, headers_len)
    body = vm.read(body_ptr, body_len)
    raw_trailers = vm.read(trailers_ptr, trailers_len)
    if upstream is None or raw_headers is None or body is None or raw_trailers is None:
        return INVALID_MEMORY_ACCESS
    if not vm.memory.fits(ret_token, 4):
        return INVALID_MEMORY_ACCESS
    root = _root(vm)
    if root is None or timeout_ms > _I32_MAX:
        return BAD_ARGUMENT
    cluster = upstream.decode("utf-8", "replace")
    if not vm.environment.has_cluster(cluster):
        return BAD_ARGUMENT
    limits = vm.limits
    headers = decode_pairs(raw_headers, max_bytes=limits.max_pairs_bytes, max_count=limits.max_pairs_count)
    trailers = decode_pairs(raw_trailers, max_bytes=limits.max_pairs_bytes, max_count=limits.max_pairs_count)
    if headers is None or trailers is None:
        return BAD_ARGUMENT
    names = {k.lower() for k, _ in headers}
    if not {b":method", b":path", b":authority"} <= names:
        return BAD_ARGUMENT
    if len(root.http_calls) >= limits.max_pending_callouts:
        return INTERNAL_FAILURE
    token = _next_token(vm, _HTTP_CALL)
    root.http_calls[token] = cluster
    vm.memory.write_u32(ret_token, token)
    vm.runtime.commands.push(
        DispatchHttpCall(root, token, cluster, [(k.lower(), v) for k, v in headers], body, trailers, timeout_ms)
    )
    return OK


# -- gRPC callouts ---------------------------------------------------------------------------------

def _grpc_start(
    vm: WasmVM, upstream_ptr: int, upstream_len: int, service_ptr: int, service_len: int,
    method_ptr: int, method_len: int, md_ptr: int, md_len: int, message: bytes | None,
    timeout_ms: int, ret_token: int,
) -> int:
    upstream = vm.read(upstream_ptr, upstream_len)
    service = vm.read(service_ptr, service_len)
    method = vm.read(method_ptr, method_len)
    raw_md = vm.read(md_ptr, md_len)
    if upstream is None or service is None or method is None or raw_md is None:
        return INVALID_MEMORY_ACCESS
    if not vm.memory.fits(ret_token, 4):
        return INVALID_MEMORY_ACCESS
    root = _root(vm)
    if root is None:
        return BAD_ARGUMENT
    target = resolve_grpc_target(upstream, vm.environment.has_cluster)
    if isinstance(target, GrpcTargetError) and target.status == "parse_failure":
        return PARSE_FAILURE
    metadata = decode_pairs(raw_md, max_bytes=vm.limits.max_pairs_bytes, max_count=vm.limits.max_pairs_count)
    if metadata is None:
        return BAD_ARGUMENT
    if len(root.grpc_calls) >= vm.limits.max_pending_callouts:
        return INTERNAL_FAILURE
    token = _next_token(vm, _GRPC_STREAM if message is None else _GRPC_CALL)  # Envoy numbers before it fails
    if isinstance(target, GrpcTargetError):
        log_refusal(root.spec.name, target)
        return BAD_ARGUMENT
    names = (service.decode("utf-8", "replace"), method.decode("utf-8", "replace"))
    timeout = min(timeout_ms, _I32_MAX)
    command: DispatchGrpcCall
    if target.authority or target.metadata or target.cluster_missing:
        command = DispatchGrpcServiceCall(root, token, target.cluster, *names, metadata, message, timeout,
                                          target.authority, list(target.metadata))
    else:
        command = DispatchGrpcCall(root, token, target.cluster, *names, metadata, message, timeout)
    root.grpc_calls[token] = message is None
    vm.runtime.commands.push(command)
    if target.cluster_missing:
        return INTERNAL_FAILURE  # the embedder still closes the token with UNAVAILABLE after the callback
    vm.memory.write_u32(ret_token, token)
    return OK


@hostcall("proxy_grpc_call", "iiiiiiiiiiii")
def grpc_call(
    vm: WasmVM, upstream_ptr: int, upstream_len: int, service_ptr: int, service_len: int,
    method_ptr: int, method_len: int, md_ptr: int, md_len: int, msg_ptr: int, msg_len: int,
    timeout_ms: int, ret_token: int,
) -> int:
    message = vm.read(msg_ptr, msg_len)
    if message is None:
        return INVALID_MEMORY_ACCESS
    return _grpc_start(vm, upstream_ptr, upstream_len, service_ptr, service_len, method_ptr, method_len,
                       md_ptr, md_len, message, timeout_ms, ret_token)


@hostcall("proxy_grpc_stream", "iiiiiiiii")
def grpc_stream(
    vm: WasmVM, upstream_ptr: int, upstream_len: int, service_ptr: int, service_len: int,
    method_ptr: int, method_len: int, md_ptr: int, md_len: int, ret_token: int,
) -> int:
    return _grpc_start(vm, upstream_ptr, upstream_len, service_ptr, service_len, method_ptr, method_len,
                       md_ptr, md_len, None, 0, ret_token)


def _grpc_kind(token: int) -> int:
    """Which sequence a token belongs to (low two bits): a call, a stream, or neither."""
    return token & 3


@hostcall("proxy_grpc_send", "iiii")
def grpc_send(vm: WasmVM, token: int, msg_ptr: int, msg_len: int, end_stream: int) -> int:
    message = vm.read(msg_ptr, msg_len)
    if message is None:
        return INVALID_MEMORY_ACCESS
    if _grpc_kind(token) != _GRPC_STREAM:
        return BAD_ARGUMENT  # Envoy: only a stream token can send, open or not
    root = _root(vm)
    if root is None:
        return NOT_FOUND
    if token not in root.grpc_calls:
        return OK if is_finished_stream(root, token) else NOT_FOUND  # Envoy sends into the finished stream
    vm.runtime.commands.push(SendGrpcMessage(root, token, message, bool(end_stream)))
    return OK


@hostcall("proxy_grpc_cancel", "i")
def grpc_cancel(vm: WasmVM, token: int) -> int:
    if _grpc_kind(token) not in (_GRPC_CALL, _GRPC_STREAM):
        return BAD_ARGUMENT
    root = _root(vm)
    if root is None:
        return NOT_FOUND
    if token not in root.grpc_calls:
        return OK if take_finished_stream(root, token) else NOT_FOUND
    del root.grpc_calls[token]
    forget_stream(root, token)
    vm.runtime.commands.push(CancelGrpc(root, token, half_close=False))
    return OK


@hostcall("proxy_grpc_close", "i")
def grpc_close(vm: WasmVM, token: int) -> int:
    if _grpc_kind(token) not in (_GRPC_CALL, _GRPC_STREAM):
        return BAD_ARGUMENT
    root = _root(vm)
    if root is None:
        return NOT_FOUND
    if token not in root.grpc_calls:
        return OK if take_finished_stream(root, token) else NOT_FOUND
    is_stream = root.grpc_calls[token]
    if is_stream:
        note_half_close(root, token)
    else:
        del root.grpc_calls[token]  # closing a unary call cancels it
    vm.runtime.commands.push(CancelGrpc(root, token, half_close=is_stream))
    return OK


@hostcall("proxy_get_status", "iii")
def get_status(vm: WasmVM, ret_code: int, ret_msg_ptr: int, ret_msg_size: int) -> int:
    root = _root(vm)
    code, message = root.status if root is not None else (0, b"")
    if not vm.memory.write_u32(ret_code, code):
        return INVALID_MEMORY_ACCESS
    return vm.return_bytes(message, ret_msg_ptr, ret_msg_size)
