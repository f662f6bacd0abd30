"""The host calls of proxy-wasm ABI 0.2.1 in bytes and ints: the seam between SDK and host.

Everything above this module (``sdk.proxywasm``, ``sdk.entrypoint``) is ordinary Python in
the compilable subset. Below it there are two implementations of the same functions:

* in CPython, each function forwards to the ``HostBinding`` installed with ``set_host``
  (the host emulator in ``sdk.testing`` provides one);
* in a compiled module, the compiler replaces each function by the matching ``env.proxy_*``
  import, marshalling arguments through linear memory (its bodies here are never compiled).

A binding method returns the call's result and raises the ``sdk.errors`` exception for any
status other than OK (``NotFoundError`` for NOT_FOUND, ...), exactly as the compiled module
raises it from the status code. Header maps are lists of ``(name, value)`` byte pairs in
order; property paths are the ABI's NUL-joined bytes.
"""

from __future__ import annotations

from typing import Protocol


class HostBinding(Protocol):
    """One method per ABI host call; non-OK statuses are raised as ``sdk.errors`` exceptions."""

    def log(self, level: int, message: bytes) -> None:
        """``proxy_log``: level 0 (trace) .. 5 (critical)."""

    def get_log_level(self) -> int:
        """``proxy_get_log_level``."""

    def get_current_time_nanoseconds(self) -> int:
        """``proxy_get_current_time_nanoseconds``: wall clock, ns since the epoch."""

    def set_tick_period_milliseconds(self, period_ms: int) -> None:
        """``proxy_set_tick_period_milliseconds`` for the current root context; 0 disables."""

    def set_effective_context(self, context_id: int) -> None:
        """``proxy_set_effective_context``."""

    def done(self) -> None:
        """``proxy_done``: a root context finished what ``on_plugin_done`` deferred."""

    def get_buffer_bytes(self, buffer_type: int, start: int, max_size: int) -> bytes:
        """``proxy_get_buffer_bytes``: up to ``max_size`` bytes from ``start``."""

    def get_buffer_status(self, buffer_type: int) -> tuple[int, int]:
        """``proxy_get_buffer_status``: (size, flags)."""

    def set_buffer_bytes(self, buffer_type: int, start: int, size: int, data: bytes) -> None:
        """``proxy_set_buffer_bytes``: replace ``size`` bytes at ``start`` with ``data``."""

    def get_header_map_pairs(self, map_type: int) -> list[tuple[bytes, bytes]]:
        """``proxy_get_header_map_pairs``: every (name, value) in order."""

    def set_header_map_pairs(self, map_type: int, pairs: list[tuple[bytes, bytes]]) -> None:
        """``proxy_set_header_map_pairs``: replace the whole map."""

    def get_header_map_value(self, map_type: int, key: bytes) -> bytes:
        """``proxy_get_header_map_value``: first value of ``key``; NotFoundError if absent."""

    def add_header_map_value(self, map_type: int, key: bytes, value: bytes) -> None:
        """``proxy_add_header_map_value``: append a value, keeping existing ones."""

    def replace_header_map_value(self, map_type: int, key: bytes, value: bytes) -> None:
        """``proxy_replace_header_map_value``: set (add if absent)."""

    def remove_header_map_value(self, map_type: int, key: bytes) -> None:
        """``proxy_remove_header_map_value``: remove every value of ``key``."""

    def get_header_map_size(self, map_type: int) -> int:
        """``proxy_get_header_map_size``."""

    def continue_stream(self, stream_type: int) -> None:
        """``proxy_continue_stream``: resume a paused request (0), response (1), downstream (2)."""

    def close_stream(self, stream_type: int) -> None:
        """``proxy_close_stream``."""

    def send_local_response(
        self,
        status_code: int,
        details: bytes,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        grpc_status: int,
    ) -> None:
        """``proxy_send_local_response``; grpc_status -1 means no grpc-status."""

    def http_call(
        self,
        upstream: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        trailers: list[tuple[bytes, bytes]],
        timeout_ms: int,
    ) -> int:
        """``proxy_http_call``: returns the call's token."""

    def get_status(self) -> tuple[int, bytes]:
        """``proxy_get_status``: (code, message) of the last HTTP call."""

    def get_property(self, path: bytes) -> bytes:
        """``proxy_get_property``: ``path`` is the components joined by NUL bytes."""

    def set_property(self, path: bytes, value: bytes) -> None:
        """``proxy_set_property``."""

    def get_shared_data(self, key: bytes) -> tuple[bytes, int]:
        """``proxy_get_shared_data``: (value, cas)."""

    def set_shared_data(self, key: bytes, value: bytes, cas: int) -> None:
        """``proxy_set_shared_data``: CasMismatchError if ``cas`` is stale (0 = unconditional)."""

    def register_shared_queue(self, name: bytes) -> int:
        """``proxy_register_shared_queue``: returns the queue id."""

    def resolve_shared_queue(self, vm_id: bytes, name: bytes) -> int:
        """``proxy_resolve_shared_queue``: returns the queue id."""

    def enqueue_shared_queue(self, queue_id: int, value: bytes) -> None:
        """``proxy_enqueue_shared_queue``."""

    def dequeue_shared_queue(self, queue_id: int) -> bytes:
        """``proxy_dequeue_shared_queue``: EmptyError when there is nothing queued."""

    def define_metric(self, metric_type: int, name: bytes) -> int:
        """``proxy_define_metric``: 0 counter, 1 gauge, 2 histogram; returns the metric id."""

    def increment_metric(self, metric_id: int, offset: int) -> None:
        """``proxy_increment_metric``."""

    def record_metric(self, metric_id: int, value: int) -> None:
        """``proxy_record_metric``."""

    def get_metric(self, metric_id: int) -> int:
        """``proxy_get_metric``."""

    def call_foreign_function(self, name: bytes, argument: bytes) -> bytes:
        """``proxy_call_foreign_function``."""


_binding: HostBinding | None = None


def set_host(binding: HostBinding | None) -> HostBinding | None:
    """Install the host that SDK calls reach when running in CPython; returns the previous one."""
    global _binding
    previous = _binding
    _binding = binding
    return previous


def current_host() -> HostBinding:
    """The installed host binding; a clear error when a plugin runs without one."""
    if _binding is None:
        raise RuntimeError(
            "no proxy-wasm host is bound: run the plugin under sdk.testing "
            "or call sdk.proxywasm.set_host(binding) first"
        )
    return _binding


# Forwarders. The compiler replaces each of these by an ABI import call; keep the names and
# signatures identical to HostBinding (tests/sdk/compiler checks that they match).


def log(level: int, message: bytes) -> None:
    current_host().log(level, message)


def get_log_level() -> int:
    return current_host().get_log_level()


def get_current_time_nanoseconds() -> int:
    return current_host().get_current_time_nanoseconds()


def set_tick_period_milliseconds(period_ms: int) -> None:
    current_host().set_tick_period_milliseconds(period_ms)


def set_effective_context(context_id: int) -> None:
    current_host().set_effective_context(context_id)


def done() -> None:
    current_host().done()


def get_buffer_bytes(buffer_type: int, start: int, max_size: int) -> bytes:
    return current_host().get_buffer_bytes(buffer_type, start, max_size)


def get_buffer_status(buffer_type: int) -> tuple[int, int]:
    return current_host().get_buffer_status(buffer_type)


def set_buffer_bytes(buffer_type: int, start: int, size: int, data: bytes) -> None:
    current_host().set_buffer_bytes(buffer_type, start, size, data)


def get_header_map_pairs(map_type: int) -> list[tuple[bytes, bytes]]:
    return current_host().get_header_map_pairs(map_type)


def set_header_map_pairs(map_type: int, pairs: list[tuple[bytes, bytes]]) -> None:
    current_host().set_header_map_pairs(map_type, pairs)


def get_header_map_value(map_type: int, key: bytes) -> bytes:
    return current_host().get_header_map_value(map_type, key)


def add_header_map_value(map_type: int, key: bytes, value: bytes) -> None:
    current_host().add_header_map_value(map_type, key, value)


def replace_header_map_value(map_type: int, key: bytes, value: bytes) -> None:
    current_host().replace_header_map_value(map_type, key, value)


def remove_header_map_value(map_type: int, key: bytes) -> None:
    current_host().remove_header_map_value(map_type, key)


def get_header_map_size(map_type: int) -> int:
    return current_host().get_header_map_size(map_type)


def continue_stream(stream_type: int) -> None:
    current_host().continue_stream(stream_type)


def close_stream(stream_type: int) -> None:
    current_host().close_stream(stream_type)


def send_local_response(
    status_code: int,
    details: bytes,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    grpc_status: int,
) -> None:
    current_host().send_local_response(status_code, details, body, headers, grpc_status)


def http_call(
    upstream: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    trailers: list[tuple[bytes, bytes]],
    timeout_ms: int,
) -> int:
    return current_host().http_call(upstream, headers, body, trailers, timeout_ms)


def get_status() -> tuple[int, bytes]:
    return current_host().get_status()


def get_property(path: bytes) -> bytes:
    return current_host().get_property(path)


def set_property(path: bytes, value: bytes) -> None:
    current_host().set_property(path, value)


def get_shared_data(key: bytes) -> tuple[bytes, int]:
    return current_host().get_shared_data(key)


def set_shared_data(key: bytes, value: bytes, cas: int) -> None:
    current_host().set_shared_data(key, value, cas)


def register_shared_queue(name: bytes) -> int:
    return current_host().register_shared_queue(name)


def resolve_shared_queue(vm_id: bytes, name: bytes) -> int:
    return current_host().resolve_shared_queue(vm_id, name)


def enqueue_shared_queue(queue_id: int, value: bytes) -> None:
    current_host().enqueue_shared_queue(queue_id, value)


def dequeue_shared_queue(queue_id: int) -> bytes:
    return current_host().dequeue_shared_queue(queue_id)


def define_metric(metric_type: int, name: bytes) -> int:
    return current_host().define_metric(metric_type, name)


def increment_metric(metric_id: int, offset: int) -> None:
    current_host().increment_metric(metric_id, offset)


def record_metric(metric_id: int, value: int) -> None:
    current_host().record_metric(metric_id, value)


def get_metric(metric_id: int) -> int:
    return current_host().get_metric(metric_id)


def call_foreign_function(name: bytes, argument: bytes) -> bytes:
    return current_host().call_foreign_function(name, argument)
