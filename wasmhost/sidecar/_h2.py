"""HTTP/2 codec over the ``h2`` package, both sides, without I/O.

``Http2Codec`` wraps one ``h2`` connection: ``feed(bytes)`` turns frames into
per-stream events for a sink (headers, data, trailers, reset), and the
``send_*`` methods queue frames, honouring the peer's flow-control windows:
body bytes that do not fit wait per stream until a WINDOW_UPDATE. The edge
writes ``data_to_send()`` to the socket after each batch.

Received bytes are handed back to the peer in two parts, as Envoy does: the
connection window at once (the bytes left the connection, so one stalled stream
never starves the others), a stream's window only while that stream is not
``pause_reading`` (its consumer keeps up). A paused stream can therefore hold at
most one stream window; ``queued(stream)`` tells the edge how much waits to be
sent so it can pause whoever feeds that stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream

from ._headers import HeaderMap

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PEER_SENDING = frozenset({h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_LOCAL})
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding",
                                  b"upgrade", b"host"})


class StreamSink(Protocol):
    def on_headers(self, stream_id: int, headers: HeaderMap, end_stream: bool) -> None: ...

    def on_data(self, stream_id: int, data: bytes, end_stream: bool) -> None: ...

    def on_trailers(self, stream_id: int, trailers: HeaderMap) -> None: ...

    def on_reset(self, stream_id: int, reason: str) -> None: ...

    def on_connection_error(self, reason: str) -> None: ...


class Http2Codec:
    """One HTTP/2 connection endpoint (server for clients, client for upstreams)."""

    def __init__(self, sink: StreamSink, client_side: bool, max_concurrent_streams: int = 2147483647,
                 initial_stream_window: int = 65535, initial_connection_window: int = 65535,
                 on_settings: Callable[[], None] | None = None, enable_connect: bool = False) -> None:
        self.sink = sink
        self.client_side = client_side
        config = h2.config.H2Configuration(client_side=client_side, header_encoding=None,
                                           validate_inbound_headers=True, normalize_inbound_headers=True)
        self.conn = h2.connection.H2Connection(config=config)
        self._pending: dict[int, deque[Any]] = {}  # stream -> queued ("data", bytes, end) / ("trailers", headers)
        self._queued: dict[int, int] = {}  # stream -> body bytes in ``_pending``
        self._stream_window = initial_stream_window
        self._connection_window = max(initial_connection_window, 65535)
        self._connection_unacked = 0  # received bytes not yet handed back on the connection window
        self._stream_unacked: dict[int, int] = {}  # received bytes a stream has not handed back yet
        self._read_paused: set[int] = set()
        self._on_settings = on_settings
        self.closed = False
        self.conn.local_settings = h2.settings.Settings(client=client_side, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_stream_window,
            **({h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1} if enable_connect else {}),
        })
        self.conn.initiate_connection()
        extra = initial_connection_window - 65535
        if extra > 0:
            self.conn.increment_flow_control_window(extra)

    # --- input ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            self.closed = True
            self.sink.on_connection_error(f"http2 protocol error: {err}")
            return
        sink = self.sink
        for event in events:
            if isinstance(event, (h2.events.RequestReceived, h2.events.ResponseReceived)):
                headers = HeaderMap.adopt(list(event.headers))
                sink.on_headers(event.stream_id, headers, event.stream_ended is not None)
            elif isinstance(event, h2.events.DataReceived):
                ended = event.stream_ended is not None
                if event.flow_controlled_length:
                    self._received(event.stream_id, event.flow_controlled_length, ended)
                sink.on_data(event.stream_id, event.data, ended)
            elif isinstance(event, h2.events.TrailersReceived):
                sink.on_trailers(event.stream_id, HeaderMap.adopt(list(event.headers)))
            elif isinstance(event, h2.events.StreamEnded):
                # delivered with the headers/data/trailers event that carried END_STREAM; the peer
                # sends no more on it, so its window needs no more care
                self._stream_unacked.pop(event.stream_id, None)
                self._read_paused.discard(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._forget(event.stream_id)
                sink.on_reset(event.stream_id, f"remote reset ({h2.errors.ErrorCodes(event.error_code).name})"
                              if event.error_code in h2.errors.ErrorCodes._value2member_map_ else "remote reset")
            elif isinstance(event, h2.events.WindowUpdated):
                self._flush_pending(event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._flush_pending(0)
                if self._on_settings is not None:
                    self._on_settings()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True
                sink.on_connection_error("goaway")
            elif isinstance(event, h2.events.InformationalResponseReceived):
                pass  # 1xx responses are not forwarded

    # --- inbound flow control ------------------------------------------------------------------

    def _received(self, stream_id: int, size: int, ended: bool) -> None:
        """Return the connection window at half use; keep the stream's for ``_hand_back``."""
        self._connection_unacked += size
        if self._connection_unacked >= self._connection_window // 2:
            increment, self._connection_unacked = self._connection_unacked, 0
            try:
                self.conn.increment_flow_control_window(increment)
            except (h2.exceptions.ProtocolError, ValueError):
                pass
        if ended:
            self._stream_unacked.pop(stream_id, None)  # the peer sends no more on it
            self._read_paused.discard(stream_id)
            return
        unacked = self._stream_unacked.get(stream_id, 0) + size
        self._stream_unacked[stream_id] = unacked
        if stream_id not in self._read_paused and unacked >= self._stream_window // 2:
            self._hand_back(stream_id)

    def _hand_back(self, stream_id: int) -> None:
        increment = self._stream_unacked.pop(stream_id, 0)
        if increment <= 0:
            return
        try:
            self.conn.increment_flow_control_window(increment, stream_id)
        except (KeyError, h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, ValueError):
            pass  # the stream is gone: nothing to hand back

    def pause_reading(self, stream_id: int, paused: bool) -> None:
        """Whoever consumes ``stream_id``'s body is full (or has room again): hold (or return) its window."""
        if paused:
            stream = self.conn.streams.get(stream_id)
            if stream is not None and stream.state_machine.state in _PEER_SENDING:
                self._read_paused.add(stream_id)
        elif stream_id in self._read_paused:
            self._read_paused.discard(stream_id)
            self._hand_back(stream_id)

    def reading_paused(self, stream_id: int) -> bool:
        return stream_id in self._read_paused

    def queued(self, stream_id: int) -> int:
        """Body bytes of ``stream_id`` waiting for the peer's window."""
        return self._queued.get(stream_id, 0)

    def _forget(self, stream_id: int) -> None:
        self._pending.pop(stream_id, None)
        self._queued.pop(stream_id, None)
        self._stream_unacked.pop(stream_id, None)
        self._read_paused.discard(stream_id)

    # --- output ---------------------------------------------------------------------------------

    def next_stream_id(self) -> int:
        return int(self.conn.get_next_available_stream_id())

    @property
    def remote_max_concurrent_streams(self) -> int:
        return int(self.conn.remote_settings.max_concurrent_streams)

    @property
    def open_streams(self) -> int:
        if self.client_side:
            return int(self.conn.open_outbound_streams)
        return int(self.conn.open_inbound_streams)

    def send_headers(self, stream_id: int, headers: HeaderMap, end_stream: bool) -> None:
        pairs = [(k, v) for k, v in headers.items() if k not in _CONNECTION_SPECIFIC
                 and not (k == b"te" and v.lower() != b"trailers")]
        try:
            self.conn.send_headers(stream_id, pairs, end_stream=end_stream)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            pass

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        queue = self._pending.get(stream_id)
        if queue:
            queue.append(("data", data, end_stream))
            self._queued[stream_id] = self._queued.get(stream_id, 0) + len(data)
            return
        self._send_data(stream_id, data, end_stream)

    def send_trailers(self, stream_id: int, trailers: HeaderMap) -> None:
        queue = self._pending.get(stream_id)
        if queue:
            queue.append(("trailers", trailers, True))
            return
        self._send_trailers(stream_id, trailers)

    def _send_trailers(self, stream_id: int, trailers: HeaderMap) -> None:
        pairs = [(k, v) for k, v in trailers.items() if k[:1] != b":"]
        try:
            self.conn.send_headers(stream_id, pairs, end_stream=True)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            pass

    def _send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        conn = self.conn
        try:
            while True:
                window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                if len(data) <= window:
                    conn.send_data(stream_id, data, end_stream=end_stream)
                    return
                if window > 0:
                    conn.send_data(stream_id, data[:window])
                    data = data[window:]
                else:
                    self._pending.setdefault(stream_id, deque()).append(("data", data, end_stream))
                    self._queued[stream_id] = self._queued.get(stream_id, 0) + len(data)
                    return
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            self._pending.pop(stream_id, None)
            self._queued.pop(stream_id, None)

    def _flush_pending(self, stream_id: int) -> None:
        targets = list(self._pending) if stream_id == 0 else [stream_id]
        for target in targets:
            queue = self._pending.pop(target, None)
            self._queued.pop(target, None)
            if not queue:
                continue
            while queue:
                kind, payload, end_stream = queue.popleft()
                if kind == "trailers":
                    self._send_trailers(target, payload)
                    continue
                self._send_data(target, payload, end_stream)
                if target in self._pending:  # blocked again: keep the rest behind what was re-queued
                    self._pending[target].extend(queue)
                    self._queued[target] += sum(len(item[1]) for item in queue if item[0] == "data")
                    break

    def reset_stream(self, stream_id: int, cancel: bool = True,
                     code: h2.errors.ErrorCodes | None = None) -> None:
        self._forget(stream_id)
        if code is None:
            code = h2.errors.ErrorCodes.CANCEL if cancel else h2.errors.ErrorCodes.INTERNAL_ERROR
        try:
            self.conn.reset_stream(stream_id, error_code=code)
        except (h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            pass

    def goaway(self) -> None:
        try:
            self.conn.close_connection()
        except h2.exceptions.ProtocolError:
            pass

    def data_to_send(self) -> bytes:
        return bytes(self.conn.data_to_send())


class SendBacklog:
    """Which streams of one connection hold back whoever feeds them: a stream whose body waits for
    the peer's window beyond ``limit`` (until half of it is sent), and every stream while the
    socket is full. ``pause(owner, paused)`` is called on each change, and a stream that ends
    while paused is resumed, so its feeder (say a keep-alive HTTP/1.1 client) is never left paused."""

    def __init__(self, codec: Http2Codec, limit: int, pause: Callable[[Any, bool], None]) -> None:
        self.codec = codec
        self.limit = limit
        self.pause = pause
        self.blocked: set[int] = set()  # over the limit
        self.paused: set[int] = set()  # told to pause, for either reason
        self.socket_full = False

    def sent(self, stream_id: int, owner: Any) -> None:
        """Body bytes were queued on ``stream_id``."""
        if stream_id not in self.blocked and self.codec.queued(stream_id) > self.limit:
            self.blocked.add(stream_id)
        if stream_id not in self.paused and (self.socket_full or stream_id in self.blocked):
            self.paused.add(stream_id)
            self.pause(owner, True)

    def windows_opened(self, owners: Mapping[int, Any]) -> None:
        """The peer sent window updates: resume the feeders of streams that drained to half the limit."""
        for stream_id in list(self.blocked):
            owner = owners.get(stream_id)
            if owner is None:
                self.blocked.discard(stream_id)
            elif self.codec.queued(stream_id) <= self.limit // 2:
                self.blocked.discard(stream_id)
                if not self.socket_full:
                    self._resume(stream_id, owner)

    def socket(self, full: bool, owners: Mapping[int, Any]) -> None:
        """The socket's write buffer passed its high (``full``) or low watermark."""
        self.socket_full = full
        for stream_id, owner in list(owners.items()):
            if full and stream_id not in self.paused:
                self.paused.add(stream_id)
                self.pause(owner, True)
            elif not full and stream_id not in self.blocked:
                self._resume(stream_id, owner)

    def forget(self, stream_id: int, owner: Any) -> None:
        """``stream_id`` ended or was reset."""
        self.blocked.discard(stream_id)
        self._resume(stream_id, owner)

    def _resume(self, stream_id: int, owner: Any) -> None:
        if stream_id in self.paused:
            self.paused.discard(stream_id)
            self.pause(owner, False)
