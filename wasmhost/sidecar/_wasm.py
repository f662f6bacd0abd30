"""``envoy.filters.http.wasm``: the thin adapter between the filter chain and the proxy-wasm core.

All VM and plugin logic lives in ``wasmhost`` (``Plugin``, ``HttpStream``); this module
only translates: Envoy filter callbacks in, proxy-wasm stream events out, and the core's
commands (local reply, resume, callouts, timers, queues) back into filter callbacks. The
per-process plugin pool is :mod:`._wasm_host`, the configuration and module loading
:mod:`._wasm_module`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as http_wasm_pb2
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import json_format

from .. import HttpStream as PluginHttpStream
from .. import (
    ModuleError,
    PluginStartError,
    SendLocalReply,
    StreamType,
)
from ._buffer import Buffer
from ._errors import ConfigError
from ._filter_api import (
    DataStatus,
    FilterCallbacks,
    HeadersStatus,
    HttpFilter,
    TrailersStatus,
)
from ._filter_registry import FilterBuildContext, register_http_filter
from ._headers import HeaderMap
from ._tracing import collect_plugin_span_tags
from ._wasm_host import PluginBinding, SidecarEnvironment, StreamOwner, WasmHost, wasm_host
from ._wasm_info import plugin_stream_info
from ._wasm_module import ModuleFetchFailed, _FetchFailedFilter, _PassFilter, plugin_spec_from_proto

_LOG = logging.getLogger("wasmesh.wasm")
_T = TypeVar("_T")


class WasmHttpFilter(HttpFilter, StreamOwner):
    """One stream through one plugin.

    As Envoy's filter: a stream whose request headers never reached this filter (an earlier
    filter answered locally) has no plugin context, so the response passes untouched; and
    once the VM has failed, the 503 it answered with passes this filter's encoder side.
    """

    __slots__ = ("callbacks", "stream", "host", "decoded", "logs", "held_request", "held_response")

    def __init__(self, callbacks: FilterCallbacks, binding: PluginBinding, host: WasmHost) -> None:
        self.callbacks = callbacks
        self.host = host
        self.stream = PluginHttpStream(binding.plugin, plugin_stream_info(callbacks.stream_info))
        self.decoded = False
        self.held_request = self.held_response = 0  # body bytes the plugin holds (the core buffers them)
        self.logs = binding.logs
        if not binding.encodes:
            self.encodes = False  # the module has no response callbacks: stay off the response path

    def _bypass_encoder(self) -> bool:
        """The filter never saw the request (an earlier filter answered): leave the response alone."""
        return not self.decoded

    # -- helpers ---------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Point the plugin's view at the chain's live maps (a filter may have replaced one);
        the stream facts need no refresh, the plugin reads them live."""
        stream = self.stream
        ctx = stream.ctx
        cb = self.callbacks
        if ctx is None:
            return
        ctx.embedder = self
        request, response = cb.request_headers, cb.response_headers
        if request is not None:
            ctx.request_headers = request.items()
        if response is not None:
            ctx.response_headers = response.items()
        trailers = cb.request_trailers
        if trailers is not None:
            ctx.request_trailers = trailers.items()
        trailers = cb.response_trailers
        if trailers is not None:
            ctx.response_trailers = trailers.items()

    def _after(self) -> None:
        ctx = self.stream.ctx
        if ctx is not None and ctx.embedder is None:
            ctx.embedder = self
        self.host.drain()

    # -- request ---------------------------------------------------------------------------------
    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        self.decoded = True
        stream = self.stream
        if stream.ctx is not None:
            self._sync()
        status = stream.on_request_headers(headers.items(), end_stream)
        self._after()
        return _HEADERS_STATUS[status]

    def decode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        held = self.held_request + len(data)
        if held > self.callbacks.buffer_limit:
            return self._payload_too_large(413, b"Payload Too Large", "request_payload_too_large")
        self._sync()
        verdict = self.stream.on_request_body(data.to_bytes(), end_stream)
        self._after()
        if verdict.forward is not None:
            self.held_request = 0
            data.replace(verdict.forward)
            return DataStatus.Continue
        self.held_request = held
        return DataStatus.StopIterationNoBuffer

    def decode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        self._sync()
        status = self.stream.on_request_trailers(trailers.items())
        self._after()
        return _TRAILERS_STATUS[status]

    # -- response --------------------------------------------------------------------------------
    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        if self._bypass_encoder():
            return HeadersStatus.Continue
        self._sync()
        status = self.stream.on_response_headers(headers.items(), end_stream)
        self._after()
        return _HEADERS_STATUS[status]

    def encode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        if self._bypass_encoder():
            return DataStatus.Continue
        held = self.held_response + len(data)
        if held > self.callbacks.buffer_limit:
            return self._payload_too_large(500, b"Internal Server Error", "response_payload_too_large")
        self._sync()
        verdict = self.stream.on_response_body(data.to_bytes(), end_stream)
        self._after()
        if verdict.forward is not None:
            self.held_response = 0
            data.replace(verdict.forward)
            return DataStatus.Continue
        self.held_response = held
        return DataStatus.StopIterationNoBuffer

    def _payload_too_large(self, status: int, body: bytes, details: str) -> DataStatus:
        """A body the plugin buffers outgrew the stream's buffer limit: Envoy's local reply (a reset once answered)."""
        self.callbacks.send_local_reply(status, body, (), details)
        return DataStatus.StopIterationNoBuffer

    def encode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        if self._bypass_encoder():
            return TrailersStatus.Continue
        self._sync()
        status = self.stream.on_response_trailers(trailers.items())
        self._after()
        return _TRAILERS_STATUS[status]

    # -- end -----------------------------------------------------------------------------------------
    def on_log(self) -> None:
        if not self.decoded:
            return
        stream = self.stream
        ctx = stream.ctx
        if ctx is not None:
            if self.logs:  # a log-time callback may read the maps and properties: refresh them
                self._sync()
            stream.finish()
            if ctx.filter_state:  # span tags are filter state the plugin set
                collect_plugin_span_tags(self.callbacks.stream_info, ctx.filter_state)
        self.host.drain()

    def on_destroy(self) -> None:
        stream = self.stream
        ctx = stream.ctx
        if ctx is not None:
            if not ctx.done:
                stream.finish()
            ctx.embedder = None
        self.host.drain()

    # -- commands aimed at this stream -------------------------------------------------------------
    def send_local_reply(self, reply: SendLocalReply) -> None:
        self.callbacks.send_local_reply(reply.status, reply.body, reply.headers, reply.details, reply.grpc_status)

    def resume(self, direction: StreamType) -> None:
        if direction == StreamType.HTTP_REQUEST:
            held = self.stream.resume_body(request=True)
            if held:
                self.callbacks.add_decoded_data(held)
            self.callbacks.continue_decoding()
        elif direction == StreamType.HTTP_RESPONSE:
            held = self.stream.resume_body(request=False)
            if held:
                self.callbacks.add_encoded_data(held)
            self.callbacks.continue_encoding()


_HEADERS_STATUS = tuple(HeadersStatus)  # indexed by the core's status: cheaper than the enum's constructor
_TRAILERS_STATUS = tuple(TrailersStatus)


def _call_on_loop(services: object, action: Callable[[], _T]) -> _T:
    """Run ``action`` on the worker's event loop thread and return its result (or raise its error).

    Plans are built in an executor thread on reload (and on start in single-process mode), while
    the loop thread keeps serving streams on the same VMs: a plugin with the same vm_id and module
    shares its VM with the running one, and a wasmtime store must never be entered from two
    threads. So module compilation stays on the build thread, and everything that runs guest code
    or uses worker services (plugin start, timers, callouts) is handed to the loop thread. The
    worker's ``loop`` attribute is used for the hand-over until the services offer a thread-safe call.
    """
    loop = getattr(services, "loop", None)
    if not _needs_hand_over(loop):
        return action()
    assert isinstance(loop, asyncio.AbstractEventLoop)
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(action())
        except BaseException as err:  # handed back to the build thread
            done.set_exception(err)

    loop.call_soon_threadsafe(run)
    return done.result()


def _needs_hand_over(loop: object) -> bool:
    """True on a thread other than the worker's running loop (nothing to hand over to otherwise)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running() and not loop.is_closed()
    return False


def build_wasm_filter(config: Any, context: FilterBuildContext) -> Callable[[FilterCallbacks], HttpFilter]:
    """Config factory for ``envoy.extensions.filters.http.wasm.v3.Wasm`` (runs off the request path)."""
    if not isinstance(config, http_wasm_pb2.Wasm):
        raise ConfigError("", f"expected envoy.extensions.filters.http.wasm.v3.Wasm, got {type(config).__name__}")
    try:
        spec, wasm = plugin_spec_from_proto(config.config, "config", context.cluster_plan)
    except ModuleFetchFailed as err:
        _LOG.error("wasm plugin %s: %s", config.config.name, err)
        fail_open = config.config.fail_open or config.config.failure_policy == wasm_pb2.FailurePolicy.FAIL_OPEN
        if fail_open:
            return lambda callbacks: _PassFilter()
        return _FetchFailedFilter
    host = wasm_host()
    try:
        compiled = host.runtime.compile(wasm)
    except ModuleError as err:
        raise ConfigError("config.vm_config.code", f"module {hashlib.sha256(wasm).hexdigest()[:12]}: {err}") from None
    node = json_format.MessageToDict(context.node, preserving_proto_field_name=True) \
        if context.node is not None and context.node.ByteSize() else None

    def start() -> PluginBinding:
        if context.services is not None:
            host.services = context.services
        host.environment.clusters = context.cluster_names
        if node is not None:
            host.environment.node = node
        binding = host.acquire(compiled, spec)
        host.activate()
        return binding

    try:
        binding = _call_on_loop(context.services, start)
    except PluginStartError as err:
        raise ConfigError("config", str(err)) from None
    context.on_retire(lambda: host.release(binding))

    def create(callbacks: FilterCallbacks) -> HttpFilter:
        return WasmHttpFilter(callbacks, binding, host)

    create.filter_class = WasmHttpFilter  # type: ignore[attr-defined]
    return create


register_http_filter("envoy.extensions.filters.http.wasm.v3.Wasm", build_wasm_filter)

__all__ = ["SidecarEnvironment", "WasmHost", "WasmHttpFilter", "build_wasm_filter", "wasm_host"]
