"""One HTTP stream's filter chain: the sans-io core of the connection manager.

Events come in as method calls from the codec edge (``on_request_headers`` ...)
or from upstream sinks and timers; each call runs the filters synchronously and
appends commands (``SendHeaders``, ``StartUpstream``, ``Timer`` ...) to the
worker outbox. Iteration follows Envoy's filter manager: a filter that returns
a Stop status holds iteration at itself until it calls ``continue_decoding`` /
``continue_encoding``; StopAll statuses and buffering statuses park body data in
the stream's buffer; ``ContinueAndEndStream`` turns the rest into a header-only
message. The response direction runs the encoder filters in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._buffer import Buffer
from ._commands import (
    CloseAfterResponse,
    ResetDownstream,
    SendData,
    SendHeaders,
    SendTrailers,
    StreamEnded,
)
from ._context import ListenerContext
from ._filter_api import (
    DataStatus,
    HeadersStatus,
    HttpCallCallback,
    HttpFilter,
    ResponseFlag,
    StreamInfo,
    TrailersStatus,
    UnknownClusterError,
)
from ._hcm_headers import finalize_response, original_client, prepare_request
from ._headers import HeaderMap, Pair

CONTINUE = 0
STOP_SINGLE = 1
STOP_ALL_BUFFER = 2
STOP_ALL_WATERMARK = 3

# filter statuses as plain ints: comparing with an int is cheaper than with an enum member
_H_CONTINUE = int(HeadersStatus.Continue)
_H_CONTINUE_AND_END = int(HeadersStatus.ContinueAndEndStream)
_H_STOP = int(HeadersStatus.StopIteration)
_H_STOP_ALL_BUFFER = int(HeadersStatus.StopAllIterationAndBuffer)
_D_CONTINUE = int(DataStatus.Continue)
_D_STOP_BUFFER = int(DataStatus.StopIterationAndBuffer)
_D_STOP_WATERMARK = int(DataStatus.StopIterationAndWatermark)
_T_CONTINUE = int(TrailersStatus.Continue)

_GRPC_STATUS_FOR_HTTP = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}


class _Dir:
    """Iteration state of one direction (decode = request, encode = response).

    Defaults live on the class (no ``__slots__``): a new stream only stores what differs.
    """

    headers: HeaderMap | None = None
    trailers: HeaderMap | None = None
    buffer: Buffer | None = None
    complete = False  # end of stream seen at the entry of this direction
    aborted = False
    started = False
    end_forced_at = -1
    trailers_at = -1
    is_decode = True
    slots: list[_DirSlot] | tuple[()] = ()
    buffer_limit: int


class _DecodeDir(_Dir):
    def __init__(self, buffer_limit: int) -> None:
        self.slots: list[_DirSlot] = []
        self.buffer_limit = buffer_limit


class _EncodeDir(_Dir):
    is_decode = False

    def __init__(self, buffer_limit: int) -> None:
        self.buffer_limit = buffer_limit  # ``slots`` stays the shared empty tuple without encoder filters


class _DirSlot:
    state = CONTINUE
    continued = False

    def __init__(self, flt: HttpFilter, callbacks: _Callbacks, index: int) -> None:
        self.filter = flt
        self.callbacks = callbacks
        self.index = index


class _Callbacks:
    """``FilterCallbacks`` for one filter of one stream."""

    __slots__ = ("stream", "dec", "enc")

    def __init__(self, stream: HttpStream) -> None:
        self.stream = stream
        self.dec: _DirSlot | None = None
        self.enc: _DirSlot | None = None

    @property
    def stream_info(self) -> StreamInfo:
        return self.stream.info

    @property
    def buffer_limit(self) -> int:
        return self.stream.dec.buffer_limit

    @property
    def request_headers(self) -> HeaderMap | None:
        return self.stream.dec.headers

    @property
    def request_trailers(self) -> HeaderMap | None:
        return self.stream.dec.trailers

    @property
    def response_headers(self) -> HeaderMap | None:
        return self.stream.enc.headers

    @property
    def response_trailers(self) -> HeaderMap | None:
        return self.stream.enc.trailers

    @property
    def context(self) -> ListenerContext:
        return self.stream.ctx

    def route(self) -> Any:
        return self.stream.route()

    def clear_route_cache(self) -> None:
        self.stream.clear_route_cache()

    def continue_decoding(self) -> None:
        if self.dec is not None:
            self.stream._continue(self.stream.dec, self.dec.index)

    def continue_encoding(self) -> None:
        if self.enc is not None:
            self.stream._continue(self.stream.enc, self.enc.index)

    def send_local_reply(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[Pair] = (),
        details: str = "",
        grpc_status: int | None = None,
        modify_headers: Callable[[HeaderMap], None] | None = None,
    ) -> None:
        self.stream.send_local_reply(status, body, headers, details, grpc_status, modify_headers)

    def reset_stream(self, reason: str = "filter_reset") -> None:
        self.stream.reset(reason, ResponseFlag.LOCAL_RESET)

    def decoding_buffer(self) -> Buffer | None:
        return self.stream.dec.buffer

    def encoding_buffer(self) -> Buffer | None:
        return self.stream.enc.buffer

    def add_decoded_data(self, data: bytes) -> None:
        self.stream._add_data(self.stream.dec, data)

    def add_encoded_data(self, data: bytes) -> None:
        self.stream._add_data(self.stream.enc, data)

    def add_decoded_trailers(self) -> HeaderMap:
        return self.stream._add_trailers(self.stream.dec)

    def add_encoded_trailers(self) -> HeaderMap:
        return self.stream._add_trailers(self.stream.enc)

    # used by the router (terminal decoder filter) to produce the response
    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        self.stream.encode_headers(headers, end_stream)

    def encode_data(self, data: Buffer, end_stream: bool) -> None:
        self.stream.encode_data(data, end_stream)

    def encode_trailers(self, trailers: HeaderMap) -> None:
        self.stream.encode_trailers(trailers)

    def dispatch_http_call(
        self,
        cluster: str,
        headers: Iterable[Pair],
        body: bytes,
        trailers: Iterable[Pair],
        timeout: float,
        on_result: HttpCallCallback,
    ) -> int:
        return self.stream.dispatch_http_call(cluster, headers, body, trailers, timeout, on_result)

    def cancel_http_call(self, token: int) -> None:
        self.stream.cancel_http_call(token)


class HttpStream:
    """One request/response exchange on a downstream connection."""

    # Defaults live on the class: a new stream stores only what differs.
    _route: Any = None
    _route_cached = False
    response_started = False
    response_complete = False
    done = False
    downstream: Any = None  # owned by the edge
    _callouts: dict[int, Any] | None = None
    request_id: bytes | None = None
    downstream_id: int | None = None  # HTTP/2 stream id on the client connection
    upgrade: list[tuple[bytes, bytes]] | None = None  # an allowed upgrade's connection/upgrade headers

    def __init__(
        self,
        ctx: ListenerContext,
        connection_id: int,
        remote: tuple[str, int],
        local: tuple[str, int],
        protocol: str = "HTTP/1.1",
    ) -> None:
        worker = ctx.worker
        now = worker.now
        self.ctx = ctx
        self.info = StreamInfo(now + worker.wall_offset, now, connection_id, remote, local, protocol,
                               ctx.listener.name)
        limit = ctx.listener.buffer_limit
        self.dec = dec = _DecodeDir(limit)
        self.enc = _EncodeDir(limit)
        self.random_value = worker.rng.getrandbits(63)
        ctx.runtime.active_streams += 1
        stats = ctx.stats
        stats.rq_total.value += 1
        stats.rq_active.value += 1
        filters: list[HttpFilter] = []
        callbacks_list: list[_Callbacks] = []
        self.filters = filters
        self.callbacks = callbacks_list
        dec_slots = dec.slots
        encoders: list[_DirSlot] | None = None
        for entry in ctx.hcm.filters:
            callbacks = _Callbacks(self)
            flt = entry.create(callbacks)
            filters.append(flt)
            callbacks_list.append(callbacks)
            if flt.decodes:
                slot = callbacks.dec = _DirSlot(flt, callbacks, len(dec_slots))
                dec_slots.append(slot)
            if flt.encodes:
                callbacks.enc = _DirSlot(flt, callbacks, 0)
                if encoders is None:
                    encoders = []
                encoders.append(callbacks.enc)
        if encoders is not None:
            encoders.reverse()
            for index, slot in enumerate(encoders):
                slot.index = index
            self.enc.slots = encoders

    # --- route ----------------------------------------------------------------------------------

    def route(self) -> Any:
        if not self._route_cached:
            self._route_cached = True
            headers = self.dec.headers
            route = self.ctx.hcm.route_table.route(headers, self.random_value) if headers is not None else None
            self._route = route
            if route is not None:
                self.info.route_name = route.name
                self.info.virtual_host_name = route.virtual_host.name
        return self._route

    def clear_route_cache(self) -> None:
        self._route_cached = False
        self._route = None

    # --- events from the downstream codec -------------------------------------------------------

    def on_request_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        dec = self.dec
        dec.headers = headers
        dec.complete = end_stream
        dec.started = True
        info = self.info
        ctx = self.ctx
        worker = ctx.worker
        if end_stream:
            info.request_complete_at = worker.now
        hcm = ctx.hcm
        http10 = info.protocol == "HTTP/1.0"
        if http10 and not hcm.accept_http_10:
            self.send_local_reply(426, details="low_version")
            return
        if not headers.get(b":authority"):
            if http10 and hcm.default_host_for_http_10:
                headers.set(b":authority", hcm.default_host_for_http_10)
            else:
                info.add_flag(ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR)
                self.send_local_reply(400, b"missing required header: :authority", details="missing_host_header")
                return
        use_remote_address = hcm.use_remote_address
        forwarded = headers.get(b"x-forwarded-for") if use_remote_address else None
        self.request_id, had_forwarded = prepare_request(
            headers, hcm, info.downstream_remote_address[0], info.downstream_local_address[1], worker.rng,
            worker.local_ip)
        if self.upgrade is not None:
            for name, value in self.upgrade:  # an allowed upgrade keeps its hop-by-hop headers (Envoy)
                headers.add(name, value)
        if forwarded is not None or (had_forwarded and not use_remote_address):
            client = original_client(headers, hcm, forwarded)
            if client is not None:
                info.downstream_remote_address = (client, 0)
        self._do_headers(dec, 0, end_stream)

    def on_request_data(self, data: bytes, end_stream: bool) -> None:
        if self.done:
            return
        dec = self.dec
        self.info.bytes_received += len(data)
        if end_stream:
            dec.complete = True
            self.info.request_complete_at = self.ctx.worker.now
        if dec.aborted:
            return
        self._do_data(dec, 0, Buffer(data), end_stream)

    def on_request_trailers(self, trailers: HeaderMap) -> None:
        if self.done:
            return
        dec = self.dec
        dec.complete = True
        dec.trailers = trailers
        self.info.request_complete_at = self.ctx.worker.now
        if dec.aborted:
            return
        self._do_trailers(dec, 0)

    def on_downstream_reset(self, reason: str = "downstream_remote_disconnect") -> None:
        """The client went away (or the codec failed) before the stream finished."""
        if self.done:
            return
        self.info.add_flag(ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION)
        if not self.info.response_code_details:
            self.info.response_code_details = reason
        self.ctx.stats.rq_rx_reset.value += 1
        self.dec.aborted = True
        self.enc.aborted = True
        self._finish()

    # --- the response, from the router or a filter ----------------------------------------------

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        enc = self.enc
        if self.done or enc.aborted:
            return
        enc.headers = headers
        enc.complete = end_stream
        enc.started = True
        if enc.slots:
            self._do_headers(enc, 0, end_stream)
        else:
            self._emit_headers(headers, end_stream)

    def encode_data(self, data: Buffer, end_stream: bool) -> None:
        enc = self.enc
        if self.done or enc.aborted:
            return
        if end_stream:
            enc.complete = True
        if enc.slots:
            self._do_data(enc, 0, data, end_stream)
        else:
            self._emit_bytes(data.to_bytes(), end_stream)

    def encode_bytes(self, data: bytes, end_stream: bool) -> None:
        """``encode_data`` for body bytes from upstream: without encoder filters no ``Buffer`` is made."""
        enc = self.enc
        if self.done or enc.aborted:
            return
        if end_stream:
            enc.complete = True
        if enc.slots:
            self._do_data(enc, 0, Buffer(data), end_stream)
        else:
            self._emit_bytes(data, end_stream)

    def encode_trailers(self, trailers: HeaderMap) -> None:
        enc = self.enc
        if self.done or enc.aborted:
            return
        enc.complete = True
        enc.trailers = trailers
        self._do_trailers(enc, 0)

    def send_local_reply(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[Pair] = (),
        details: str = "",
        grpc_status: int | None = None,
        modify_headers: Callable[[HeaderMap], None] | None = None,
    ) -> None:
        """Answer from the proxy (Envoy ``sendLocalReply``); resets instead once the response has started."""
        if self.done:
            return
        if self.response_started:
            self.reset("local_reply_after_response_started", ResponseFlag.LOCAL_RESET)
            return
        if details:
            self.info.response_code_details = details
        self.dec.aborted = True
        items: list[Pair] = [(b":status", str(status).encode())]
        extra = [(k.lower(), v) for k, v in headers]
        request = self.dec.headers
        content_type = request.get(b"content-type") if request is not None else None
        if content_type is not None and content_type.startswith(b"application/grpc"):
            code = grpc_status if grpc_status is not None else _GRPC_STATUS_FOR_HTTP.get(status, 2)
            items = [(b":status", b"200"), (b"content-type", b"application/grpc"),
                     (b"grpc-status", str(code).encode())]
            if body:
                items.append((b"grpc-message", body))
            items.extend(extra)
            body = b""
        else:
            if body:
                items.append((b"content-length", str(len(body)).encode()))
                if not any(k == b"content-type" for k, _ in extra):
                    items.append((b"content-type", b"text/plain"))
            elif status not in (204, 304):
                items.append((b"content-length", b"0"))
            items.extend(extra)
        reply = HeaderMap.adopt(items)
        if modify_headers is not None:
            modify_headers(reply)
        enc = self.enc
        if enc.started:
            # A reply while real response headers are inside the encoder chain replaces them directly.
            enc.aborted = True
            enc.headers = reply
            self._emit_headers(reply, not body)
            if body and not self.done:
                self._emit_data(Buffer(body), True)
            return
        enc.started = True
        enc.headers = reply
        enc.complete = True
        self._do_headers(enc, 0, not body)
        if body and not self.done and not enc.aborted:
            self._do_data(enc, 0, Buffer(body), True)

    def reset(self, reason: str, flag: ResponseFlag | None = None) -> None:
        """Abort the stream towards the client."""
        if self.done:
            return
        if flag is not None:
            self.info.add_flag(flag)
        if not self.info.response_code_details:
            self.info.response_code_details = reason
        self.ctx.stats.rq_tx_reset.value += 1
        self.dec.aborted = True
        self.enc.aborted = True
        self.ctx.out.append(ResetDownstream(self, reason))
        self._finish()

    # --- iteration ------------------------------------------------------------------------------

    def _do_headers(self, d: _Dir, start: int, end_stream: bool) -> None:
        slots = d.slots
        index = start
        count = len(slots)
        headers = d.headers
        assert headers is not None
        while index < count:
            slot = slots[index]
            if d.is_decode:
                status = slot.filter.decode_headers(headers, end_stream)
            else:
                status = slot.filter.encode_headers(headers, end_stream)
            if d.aborted or self.done:
                return
            if status == _H_CONTINUE:
                slot.continued = True
            elif status == _H_CONTINUE_AND_END:
                slot.continued = True
                end_stream = True
                d.end_forced_at = index
            elif status == _H_STOP:
                slot.state = STOP_SINGLE
                return
            elif status == _H_STOP_ALL_BUFFER:
                slot.state = STOP_ALL_BUFFER
                return
            else:
                slot.state = STOP_ALL_WATERMARK
                return
            index += 1
        if not d.is_decode:
            self._emit_headers(headers, end_stream)

    def _do_data(self, d: _Dir, start: int, data: Buffer, end_stream: bool) -> None:
        slots = d.slots
        index = start
        count = len(slots)
        while index < count:
            if 0 <= d.end_forced_at < index:
                return
            slot = slots[index]
            state = slot.state
            if state >= STOP_ALL_BUFFER:
                self._buffer(d, data, state == STOP_ALL_BUFFER)
                return
            if d.is_decode:
                status = slot.filter.decode_data(data, end_stream)
            else:
                status = slot.filter.encode_data(data, end_stream)
            if d.aborted or self.done:
                return
            if status == _D_CONTINUE:
                if state == STOP_SINGLE:
                    self._buffer(d, data, False)
                    self._continue(d, index)
                    return
                index += 1
                continue
            slot.state = STOP_SINGLE
            if status == _D_STOP_BUFFER or status == _D_STOP_WATERMARK:
                self._buffer(d, data, status == _D_STOP_BUFFER)
            elif end_stream and d.buffer is None and d.trailers is None:
                d.buffer = Buffer()
            return
        if not d.is_decode:
            self._emit_data(data, end_stream)

    def _do_trailers(self, d: _Dir, start: int) -> None:
        slots = d.slots
        trailers = d.trailers
        assert trailers is not None
        for index in range(start, len(slots)):
            if 0 <= d.end_forced_at < index:
                return
            slot = slots[index]
            if slot.state >= STOP_ALL_BUFFER:
                d.trailers_at = index
                return
            if d.is_decode:
                status = slot.filter.decode_trailers(trailers)
            else:
                status = slot.filter.encode_trailers(trailers)
            if d.aborted or self.done:
                return
            if status == _T_CONTINUE:
                if slot.state == STOP_SINGLE:
                    d.trailers_at = index
                    self._continue(d, index)
                    return
                continue
            slot.state = STOP_SINGLE
            d.trailers_at = index
            return
        d.trailers_at = len(slots)
        if not d.is_decode:
            self._emit_trailers(trailers)

    def _continue(self, d: _Dir, index: int) -> None:
        """Resume iteration after the filter at ``index`` (Envoy ``commonContinue``).

        A filter that stopped *all* iteration never saw the body and trailers parked behind
        it, so (as Envoy's ``iterate_from_current_filter_``) they start at that filter."""
        if self.done or d.aborted or index >= len(d.slots):
            return
        slot = d.slots[index]
        if slot.state == CONTINUE and slot.continued:
            return
        trailers_here = d.trailers is not None and d.trailers_at == index
        rest = index if slot.state >= STOP_ALL_BUFFER else index + 1
        if not slot.continued:
            slot.continued = True
            slot.state = CONTINUE
            self._do_headers(d, index + 1, d.complete and d.buffer is None and d.trailers is None)
            if self.done or d.aborted:
                return
        slot.state = CONTINUE
        if d.buffer is not None:
            buffered = d.buffer
            d.buffer = None
            self._do_data(d, rest, buffered, d.complete and d.trailers is None)
            if self.done or d.aborted:
                return
        if trailers_here:
            self._do_trailers(d, rest)

    def _buffer(self, d: _Dir, data: Buffer, enforce_limit: bool) -> None:
        if d.buffer is None:
            d.buffer = Buffer()
        d.buffer.move_from(data)
        if enforce_limit and len(d.buffer) > d.buffer_limit:
            if d.is_decode:
                self.send_local_reply(413, b"Payload Too Large", details="request_payload_too_large")
            elif not self.response_started:
                self.send_local_reply(500, b"Internal Server Error", details="response_payload_too_large")
            else:
                self.reset("response_payload_too_large")

    def _add_data(self, d: _Dir, data: bytes) -> None:
        if d.buffer is None:
            d.buffer = Buffer()
        d.buffer.append(data)

    def _add_trailers(self, d: _Dir) -> HeaderMap:
        if d.trailers is None:
            d.trailers = HeaderMap()
        return d.trailers

    # --- towards the client ---------------------------------------------------------------------

    def _emit_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        ctx = self.ctx
        info = self.info
        status_value = headers.get(b":status")
        status = int(status_value) if status_value is not None and status_value.isdigit() else 0
        if 100 <= status < 200 and status != 101:
            return  # 1xx informational responses are not forwarded
        if status == 101 and self.upgrade is not None:
            self._finalize_upgrade(headers)
        else:
            finalize_response(headers, ctx.hcm, ctx.worker.date.get(), self.request_id)
        self.response_started = True
        info.response_code = status
        if not info.response_code_details:
            info.response_code_details = "via_upstream"
        info.first_downstream_tx_at = ctx.worker.now
        ctx.stats.count_response(status)
        if not self.dec.complete:
            # HTTP/1: an answer before the whole request was read ends the connection (as Envoy does)
            ctx.out.append(CloseAfterResponse(self))
        ctx.out.append(SendHeaders(self, headers, end_stream))
        if end_stream:
            self._response_done()

    def _finalize_upgrade(self, headers: HeaderMap) -> None:
        """An accepted upgrade's 101 keeps its ``connection``/``upgrade`` headers, as in Envoy."""
        kept = [(k, v) for k, v in headers.items() if k == b"connection" or k == b"upgrade"]
        finalize_response(headers, self.ctx.hcm, self.ctx.worker.date.get(), self.request_id)
        for name, value in kept:
            headers.add(name, value)

    def _emit_data(self, data: Buffer, end_stream: bool) -> None:
        self._emit_bytes(data.to_bytes(), end_stream)

    def _emit_bytes(self, payload: bytes, end_stream: bool) -> None:
        info = self.info
        info.bytes_sent += len(payload)
        if payload or end_stream:
            self.ctx.out.append(SendData(self, payload, end_stream))
        if end_stream:
            self.response_complete = True
            info.last_downstream_tx_at = self.ctx.worker.now
            self._finish()

    def _emit_trailers(self, trailers: HeaderMap) -> None:
        self.ctx.out.append(SendTrailers(self, trailers))
        self._response_done()

    def _response_done(self) -> None:
        self.response_complete = True
        self.info.last_downstream_tx_at = self.ctx.worker.now
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        info = self.info
        if info.last_downstream_tx_at is None:
            info.last_downstream_tx_at = self.ctx.worker.now
        filters = self.filters
        complete_hooks, log_hooks = self.ctx.filter_hooks
        for index in complete_hooks:
            filters[index].on_stream_complete()
        for index in log_hooks:
            filters[index].on_log()
        for flt in filters:
            flt.on_destroy()
        if self._callouts:
            for call in list(self._callouts.values()):
                call.cancel()
            self._callouts = None
        stats = self.ctx.stats
        stats.rq_active.value -= 1
        stats.rq_completed.value += 1
        stats.rq_time.observe((info.last_downstream_tx_at - info.start_monotonic) * 1000.0)
        ctx = self.ctx
        ctx.out.append(StreamEnded(self))
        runtime = ctx.runtime
        if runtime.retired:
            runtime.stream_finished()  # may be the last stream of a retired plan: its cleanups run then
        else:
            runtime.active_streams -= 1

    def release(self) -> None:
        """Drop references to the filters once the stream is logged (breaks cycles for prompt freeing)."""
        if self.done:
            for callbacks in self.callbacks:
                callbacks.dec = callbacks.enc = None  # filter -> callbacks -> slot -> filter
            self.filters = []
            self.callbacks = []
            self.dec.slots = []
            self.enc.slots = []

    # --- callouts -------------------------------------------------------------------------------

    def dispatch_http_call(
        self,
        cluster: str,
        headers: Iterable[Pair],
        body: bytes,
        trailers: Iterable[Pair],
        timeout: float,
        on_result: HttpCallCallback,
    ) -> int:
        from ._callout import start_callout

        target = self.ctx.clusters.get(cluster)
        if target is None:
            raise UnknownClusterError(cluster)
        if self._callouts is None:
            self._callouts = {}
        callouts = self._callouts

        def deliver(token: int, result: Any) -> None:
            if callouts.pop(token, None) is not None and not self.done:
                on_result(result)

        call = start_callout(self.ctx.worker, target, headers, body, trailers, timeout, deliver)
        callouts[call.token] = call
        return int(call.token)

    def cancel_http_call(self, token: int) -> None:
        if self._callouts is None:
            return
        call = self._callouts.pop(token, None)
        if call is not None:
            call.cancel()

    def __repr__(self) -> str:
        return f"HttpStream({self.info.connection_id}, done={self.done})"

