"""Host calls a plugin makes, mirroring proxy-wasm-go-sdk's ``proxywasm`` package.

Headers and trailers are ``str`` (decoded as UTF-8, invalid bytes replaced); bodies,
configuration, properties, shared data and queue items are ``bytes``. A host call that
fails raises the ``sdk.errors`` exception named after its status (``NotFoundError``,
``CasMismatchError``, ...). Written in the compilable Python subset: the same code runs in
CPython (over a ``HostBinding`` installed with ``set_host``) and compiled to WebAssembly.
"""

from __future__ import annotations

from collections.abc import Callable

from sdk import _hostabi, entrypoint
from sdk._hostabi import HostBinding, set_host
from sdk.types import VMContext

# proxy_map_type_t
_REQUEST_HEADERS = 0
_REQUEST_TRAILERS = 1
_RESPONSE_HEADERS = 2
_RESPONSE_TRAILERS = 3
_HTTP_CALL_RESPONSE_HEADERS = 6
_HTTP_CALL_RESPONSE_TRAILERS = 7

# proxy_buffer_type_t
_REQUEST_BODY = 0
_RESPONSE_BODY = 1
_DOWNSTREAM_DATA = 2
_UPSTREAM_DATA = 3
_HTTP_CALL_RESPONSE_BODY = 4
_VM_CONFIGURATION = 6
_PLUGIN_CONFIGURATION = 7

# proxy_stream_type_t
_STREAM_REQUEST = 0
_STREAM_RESPONSE = 1
_STREAM_DOWNSTREAM = 2
_STREAM_UPSTREAM = 3

_WHOLE = 2147483647  # "to the end" for buffer offsets and sizes


def set_vm_context(vm_context: VMContext) -> None:
    """Register the plugin's VM context; call once at module level."""
    entrypoint.set_vm_context(vm_context)


# --- configuration --------------------------------------------------------------------


def get_vm_configuration() -> bytes:
    """The VM configuration (readable in ``on_vm_start``)."""
    return _hostabi.get_buffer_bytes(_VM_CONFIGURATION, 0, _WHOLE)


def get_plugin_configuration() -> bytes:
    """The plugin configuration (readable in ``on_plugin_start``)."""
    return _hostabi.get_buffer_bytes(_PLUGIN_CONFIGURATION, 0, _WHOLE)


# --- logging and time -----------------------------------------------------------------


def log_trace(message: str) -> None:
    _hostabi.log(0, message.encode())


def log_debug(message: str) -> None:
    _hostabi.log(1, message.encode())


def log_info(message: str) -> None:
    _hostabi.log(2, message.encode())


def log_warn(message: str) -> None:
    _hostabi.log(3, message.encode())


def log_error(message: str) -> None:
    _hostabi.log(4, message.encode())


def log_critical(message: str) -> None:
    _hostabi.log(5, message.encode())


def get_current_time_nanoseconds() -> int:
    """Wall-clock time in nanoseconds since the Unix epoch."""
    return _hostabi.get_current_time_nanoseconds()


def set_tick_period_milliseconds(period_ms: int) -> None:
    """Call the plugin context's ``on_tick`` every ``period_ms``; 0 stops the timer."""
    _hostabi.set_tick_period_milliseconds(period_ms)


def set_effective_context(context_id: int) -> None:
    """Make later host calls act on stream ``context_id`` (e.g. from an HTTP call callback)."""
    _hostabi.set_effective_context(context_id)


def plugin_done() -> None:
    """Tell the host a plugin whose ``on_plugin_done`` returned False has finished."""
    _hostabi.done()


# --- header maps ----------------------------------------------------------------------


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _get_map(map_type: int) -> list[tuple[str, str]]:
    result: list[tuple[str, str]] = []
    for key, value in _hostabi.get_header_map_pairs(map_type):
        result.append((_text(key), _text(value)))
    return result


def _encode_pairs(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    result: list[tuple[bytes, bytes]] = []
    for key, value in pairs:
        result.append((key.encode(), value.encode()))
    return result


def _get_value(map_type: int, key: str) -> str:
    return _text(_hostabi.get_header_map_value(map_type, key.encode()))


def get_http_request_headers() -> list[tuple[str, str]]:
    return _get_map(_REQUEST_HEADERS)


def replace_http_request_headers(headers: list[tuple[str, str]]) -> None:
    _hostabi.set_header_map_pairs(_REQUEST_HEADERS, _encode_pairs(headers))


def get_http_request_header(key: str) -> str:
    """The first value of request header ``key``; NotFoundError when absent."""
    return _get_value(_REQUEST_HEADERS, key)


def add_http_request_header(key: str, value: str) -> None:
    _hostabi.add_header_map_value(_REQUEST_HEADERS, key.encode(), value.encode())


def replace_http_request_header(key: str, value: str) -> None:
    _hostabi.replace_header_map_value(_REQUEST_HEADERS, key.encode(), value.encode())


def remove_http_request_header(key: str) -> None:
    _hostabi.remove_header_map_value(_REQUEST_HEADERS, key.encode())


def get_http_request_trailers() -> list[tuple[str, str]]:
    return _get_map(_REQUEST_TRAILERS)


def replace_http_request_trailers(trailers: list[tuple[str, str]]) -> None:
    _hostabi.set_header_map_pairs(_REQUEST_TRAILERS, _encode_pairs(trailers))


def get_http_request_trailer(key: str) -> str:
    return _get_value(_REQUEST_TRAILERS, key)


def add_http_request_trailer(key: str, value: str) -> None:
    _hostabi.add_header_map_value(_REQUEST_TRAILERS, key.encode(), value.encode())


def replace_http_request_trailer(key: str, value: str) -> None:
    _hostabi.replace_header_map_value(_REQUEST_TRAILERS, key.encode(), value.encode())


def remove_http_request_trailer(key: str) -> None:
    _hostabi.remove_header_map_value(_REQUEST_TRAILERS, key.encode())


def get_http_response_headers() -> list[tuple[str, str]]:
    return _get_map(_RESPONSE_HEADERS)


def replace_http_response_headers(headers: list[tuple[str, str]]) -> None:
    _hostabi.set_header_map_pairs(_RESPONSE_HEADERS, _encode_pairs(headers))


def get_http_response_header(key: str) -> str:
    return _get_value(_RESPONSE_HEADERS, key)


def add_http_response_header(key: str, value: str) -> None:
    _hostabi.add_header_map_value(_RESPONSE_HEADERS, key.encode(), value.encode())


def replace_http_response_header(key: str, value: str) -> None:
    _hostabi.replace_header_map_value(_RESPONSE_HEADERS, key.encode(), value.encode())


def remove_http_response_header(key: str) -> None:
    _hostabi.remove_header_map_value(_RESPONSE_HEADERS, key.encode())


def get_http_response_trailers() -> list[tuple[str, str]]:
    return _get_map(_RESPONSE_TRAILERS)


def replace_http_response_trailers(trailers: list[tuple[str, str]]) -> None:
    _hostabi.set_header_map_pairs(_RESPONSE_TRAILERS, _encode_pairs(trailers))


def get_http_response_trailer(key: str) -> str:
    return _get_value(_RESPONSE_TRAILERS, key)


def add_http_response_trailer(key: str, value: str) -> None:
    _hostabi.add_header_map_value(_RESPONSE_TRAILERS, key.encode(), value.encode())


def replace_http_response_trailer(key: str, value: str) -> None:
    _hostabi.replace_header_map_value(_RESPONSE_TRAILERS, key.encode(), value.encode())


def remove_http_response_trailer(key: str) -> None:
    _hostabi.remove_header_map_value(_RESPONSE_TRAILERS, key.encode())


# --- bodies ---------------------------------------------------------------------------


def get_http_request_body(start: int, max_size: int) -> bytes:
    """Up to ``max_size`` bytes of the request body readable now, from ``start``."""
    return _hostabi.get_buffer_bytes(_REQUEST_BODY, start, max_size)


def replace_http_request_body(body: bytes) -> None:
    _hostabi.set_buffer_bytes(_REQUEST_BODY, 0, _WHOLE, body)


def append_http_request_body(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_REQUEST_BODY, _WHOLE, 0, data)


def prepend_http_request_body(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_REQUEST_BODY, 0, 0, data)


def get_http_response_body(start: int, max_size: int) -> bytes:
    """Up to ``max_size`` bytes of the response body readable now, from ``start``."""
    return _hostabi.get_buffer_bytes(_RESPONSE_BODY, start, max_size)


def replace_http_response_body(body: bytes) -> None:
    _hostabi.set_buffer_bytes(_RESPONSE_BODY, 0, _WHOLE, body)


def append_http_response_body(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_RESPONSE_BODY, _WHOLE, 0, data)


def prepend_http_response_body(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_RESPONSE_BODY, 0, 0, data)


# --- stream control -------------------------------------------------------------------


def resume_http_request() -> None:
    """Resume a request paused by returning ``Action.PAUSE``."""
    _hostabi.continue_stream(_STREAM_REQUEST)


def resume_http_response() -> None:
    """Resume a response paused by returning ``Action.PAUSE``."""
    _hostabi.continue_stream(_STREAM_RESPONSE)


def send_http_response(
    status_code: int, headers: list[tuple[str, str]], body: bytes, grpc_status: int = -1
) -> None:
    """Answer the request locally; the usual pattern is to return ``Action.PAUSE`` next."""
    _hostabi.send_local_response(status_code, b"", body, _encode_pairs(headers), grpc_status)


# --- TCP ------------------------------------------------------------------------------


def get_downstream_data(start: int, max_size: int) -> bytes:
    return _hostabi.get_buffer_bytes(_DOWNSTREAM_DATA, start, max_size)


def replace_downstream_data(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_DOWNSTREAM_DATA, 0, _WHOLE, data)


def append_downstream_data(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_DOWNSTREAM_DATA, _WHOLE, 0, data)


def prepend_downstream_data(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_DOWNSTREAM_DATA, 0, 0, data)


def get_upstream_data(start: int, max_size: int) -> bytes:
    return _hostabi.get_buffer_bytes(_UPSTREAM_DATA, start, max_size)


def replace_upstream_data(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_UPSTREAM_DATA, 0, _WHOLE, data)


def append_upstream_data(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_UPSTREAM_DATA, _WHOLE, 0, data)


def prepend_upstream_data(data: bytes) -> None:
    _hostabi.set_buffer_bytes(_UPSTREAM_DATA, 0, 0, data)


def continue_tcp_stream() -> None:
    """Resume a connection paused by returning ``Action.PAUSE``."""
    _hostabi.continue_stream(_STREAM_DOWNSTREAM)


def close_downstream() -> None:
    _hostabi.close_stream(_STREAM_DOWNSTREAM)


def close_upstream() -> None:
    _hostabi.close_stream(_STREAM_UPSTREAM)


# --- HTTP calls -----------------------------------------------------------------------


def dispatch_http_call(
    cluster: str,
    headers: list[tuple[str, str]],
    body: bytes,
    trailers: list[tuple[str, str]],
    timeout_ms: int,
    callback: Callable[[int, int, int], None],
) -> int:
    """Send an HTTP request to ``cluster``; ``callback(num_headers, body_size,
    num_trailers)`` runs when the response arrives (num_headers 0: the call failed).
    Returns the call's token."""
    token = _hostabi.http_call(
        cluster.encode(), _encode_pairs(headers), body, _encode_pairs(trailers), timeout_ms
    )
    entrypoint.register_callout(token, callback)
    return token


def get_http_call_response_headers() -> list[tuple[str, str]]:
    return _get_map(_HTTP_CALL_RESPONSE_HEADERS)


def get_http_call_response_body(start: int, max_size: int) -> bytes:
    return _hostabi.get_buffer_bytes(_HTTP_CALL_RESPONSE_BODY, start, max_size)


def get_http_call_response_trailers() -> list[tuple[str, str]]:
    return _get_map(_HTTP_CALL_RESPONSE_TRAILERS)


# --- properties, shared data, queues, foreign functions ------------------------------


def _property_path(path: list[str]) -> bytes:
    joined = b""
    first = True
    for part in path:
        if not first:
            joined = joined + b"\x00"
        joined = joined + part.encode()
        first = False
    return joined


def get_property(path: list[str]) -> bytes:
    """A host property, e.g. ``["request", "path"]``, in the host's value encoding."""
    return _hostabi.get_property(_property_path(path))


def set_property(path: list[str], value: bytes) -> None:
    _hostabi.set_property(_property_path(path), value)


def get_shared_data(key: str) -> tuple[bytes, int]:
    """(value, cas) of VM-wide shared ``key``; NotFoundError when absent."""
    return _hostabi.get_shared_data(key.encode())


def set_shared_data(key: str, value: bytes, cas: int) -> None:
    """Store ``value``; CasMismatchError when ``cas`` is not the current one (0: always)."""
    _hostabi.set_shared_data(key.encode(), value, cas)


def register_shared_queue(name: str) -> int:
    return _hostabi.register_shared_queue(name.encode())


def resolve_shared_queue(vm_id: str, queue_name: str) -> int:
    return _hostabi.resolve_shared_queue(vm_id.encode(), queue_name.encode())


def enqueue_shared_queue(queue_id: int, data: bytes) -> None:
    _hostabi.enqueue_shared_queue(queue_id, data)


def dequeue_shared_queue(queue_id: int) -> bytes:
    """The oldest item; EmptyError when the queue is empty."""
    return _hostabi.dequeue_shared_queue(queue_id)


def call_foreign_function(name: str, argument: bytes) -> bytes:
    return _hostabi.call_foreign_function(name.encode(), argument)


# --- metrics --------------------------------------------------------------------------


class MetricCounter:
    """A monotonically increasing host metric."""

    def __init__(self, metric_id: int) -> None:
        self.metric_id = metric_id

    def increment(self, offset: int) -> None:
        _hostabi.increment_metric(self.metric_id, offset)

    def value(self) -> int:
        return _hostabi.get_metric(self.metric_id)


class MetricGauge:
    """A host metric that goes up and down."""

    def __init__(self, metric_id: int) -> None:
        self.metric_id = metric_id

    def add(self, offset: int) -> None:
        _hostabi.increment_metric(self.metric_id, offset)

    def value(self) -> int:
        return _hostabi.get_metric(self.metric_id)


class MetricHistogram:
    """A host metric recording a distribution of values."""

    def __init__(self, metric_id: int) -> None:
        self.metric_id = metric_id

    def record(self, value: int) -> None:
        _hostabi.record_metric(self.metric_id, value)


def define_counter_metric(name: str) -> MetricCounter:
    return MetricCounter(_hostabi.define_metric(0, name.encode()))


def define_gauge_metric(name: str) -> MetricGauge:
    return MetricGauge(_hostabi.define_metric(1, name.encode()))


def define_histogram_metric(name: str) -> MetricHistogram:
    return MetricHistogram(_hostabi.define_metric(2, name.encode()))


__all__ = [
    "HostBinding",
    "MetricCounter",
    "MetricGauge",
    "MetricHistogram",
    "add_http_request_header",
    "add_http_request_trailer",
    "add_http_response_header",
    "add_http_response_trailer",
    "append_downstream_data",
    "append_http_request_body",
    "append_http_response_body",
    "append_upstream_data",
    "call_foreign_function",
    "close_downstream",
    "close_upstream",
    "continue_tcp_stream",
    "define_counter_metric",
    "define_gauge_metric",
    "define_histogram_metric",
    "dequeue_shared_queue",
    "dispatch_http_call",
    "enqueue_shared_queue",
    "get_current_time_nanoseconds",
    "get_downstream_data",
    "get_http_call_response_body",
    "get_http_call_response_headers",
    "get_http_call_response_trailers",
    "get_http_request_body",
    "get_http_request_header",
    "get_http_request_headers",
    "get_http_request_trailer",
    "get_http_request_trailers",
    "get_http_response_body",
    "get_http_response_header",
    "get_http_response_headers",
    "get_http_response_trailer",
    "get_http_response_trailers",
    "get_plugin_configuration",
    "get_property",
    "get_shared_data",
    "get_upstream_data",
    "get_vm_configuration",
    "log_critical",
    "log_debug",
    "log_error",
    "log_info",
    "log_trace",
    "log_warn",
    "plugin_done",
    "prepend_downstream_data",
    "prepend_http_request_body",
    "prepend_http_response_body",
    "prepend_upstream_data",
    "register_shared_queue",
    "remove_http_request_header",
    "remove_http_request_trailer",
    "remove_http_response_header",
    "remove_http_response_trailer",
    "replace_downstream_data",
    "replace_http_request_body",
    "replace_http_request_header",
    "replace_http_request_headers",
    "replace_http_request_trailer",
    "replace_http_request_trailers",
    "replace_http_response_body",
    "replace_http_response_header",
    "replace_http_response_headers",
    "replace_http_response_trailer",
    "replace_http_response_trailers",
    "replace_upstream_data",
    "resolve_shared_queue",
    "resume_http_request",
    "resume_http_response",
    "send_http_response",
    "set_effective_context",
    "set_host",
    "set_property",
    "set_shared_data",
    "set_tick_period_milliseconds",
    "set_vm_context",
]
