"""HTTP/2 peers on raw sockets for back-pressure tests: a client and an h2c upstream built on ``h2``.

Each ``H2Endpoint`` is pumped by one thread: it sends queued body bytes as far as the peer's
windows allow and hands received bytes back to the peer, except on *held* streams, whose
stream window it keeps (an application that stops reading that stream). The connection window
is always handed back, as a real multiplexing peer does. Counters are ``Progress`` objects so a
test can wait until a sender stalls.
"""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from tests.e2e.test_sidecar_buffer_limits import Progress

DEADLINE_S = 60.0
_POLL_S = 0.05
_CHUNK = 64 * 1024
_FILL = b"z" * _CHUNK
#: each peer's receive windows: a held stream takes at most _WINDOW bytes
_WINDOW = 1 << 20
_FRAME = 1 << 20
_CONNECTION_WINDOW = 16 << 20


class H2Endpoint:
    """One end of an HTTP/2 connection on ``sock``; ``start()`` runs the pump, ``stop()`` ends it."""

    def __init__(self, sock: socket.socket, *, client_side: bool, keep_bodies: bool = False) -> None:
        self.sock = sock
        self.keep_bodies = keep_bodies
        self.bodies: defaultdict[int, bytearray] = defaultdict(bytearray)  # whole bodies, with ``keep_bodies``
        self.headed: defaultdict[int, threading.Event] = defaultdict(threading.Event)
        config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.local_settings = h2.settings.Settings(client=client_side, initial_values={
            h2.settings.SettingCodes.MAX_FRAME_SIZE: _FRAME, h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW})
        self.conn.max_inbound_frame_size = _FRAME  # settings given at construction are not "changes" to h2
        self.lock = threading.RLock()
        self.sent: defaultdict[int, Progress] = defaultdict(Progress)  # body bytes handed to h2 per stream
        self.received: defaultdict[int, int] = defaultdict(int)
        self.heads: dict[int, dict[bytes, bytes]] = {}
        self.head_lists: dict[int, list[tuple[bytes, bytes]]] = {}
        self.samples: dict[int, bytes] = {}  # the first body bytes of each stream
        self.ended: dict[int, threading.Event] = defaultdict(threading.Event)
        self.failure: BaseException | None = None
        self._outgoing: dict[int, int] = {}  # stream -> body bytes still to send (then END_STREAM)
        self._held: dict[int, int] = {}  # held stream -> received bytes not handed back
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        with self.lock:
            self.conn.initiate_connection()
            self.conn.increment_flow_control_window(_CONNECTION_WINDOW)

    def start(self) -> H2Endpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=DEADLINE_S)
        self.sock.close()

    # --- what tests and subclasses ask for ---------------------------------------------------------

    def send_body(self, stream_id: int, size: int) -> None:
        """Send ``size`` filler bytes on ``stream_id`` as the windows allow, then end the stream."""
        with self.lock:
            self._outgoing[stream_id] = size

    def send_bytes(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Send ``data`` on ``stream_id`` now (the peer's windows must have room: small messages)."""
        with self.lock:
            step = self.conn.max_outbound_frame_size
            for start in range(0, len(data), step):
                last = start + step >= len(data)
                self.conn.send_data(stream_id, data[start:start + step], end_stream=end_stream and last)
            if not data and end_stream:
                self.conn.end_stream(stream_id)

    def wait_head(self, stream_id: int) -> dict[bytes, bytes]:
        if not self.headed[stream_id].wait(DEADLINE_S):
            raise AssertionError(f"no response head on stream {stream_id} (failure {self.failure!r})")
        with self.lock:
            return dict(self.heads.get(stream_id, {}))

    def hold(self, stream_id: int) -> None:
        with self.lock:
            self._held.setdefault(stream_id, 0)

    def release(self, stream_id: int) -> None:
        """Start reading ``stream_id`` again: hand back everything held so far."""
        with self.lock:
            held = self._held.pop(stream_id, 0)
            if held:
                self._open_window(stream_id, held)

    def wait(self, stream_id: int, timeout: float = DEADLINE_S) -> tuple[bytes, int, bytes]:
        """Until ``stream_id`` ends: (status, body size, first body bytes)."""
        if not self.ended[stream_id].wait(timeout):
            raise AssertionError(f"stream {stream_id} did not end ({self.received[stream_id]} bytes, "
                                 f"failure {self.failure!r})")
        with self.lock:
            head = self.heads.get(stream_id, {})
            return head.get(b":status", b""), self.received[stream_id], self.samples.get(stream_id, b"")

    def on_headers(self, stream_id: int, headers: dict[bytes, bytes], ended: bool) -> None:
        """A request or response head arrived (called with the lock held)."""

    def on_ended(self, stream_id: int) -> None:
        """The peer ended ``stream_id`` (called with the lock held)."""

    # --- the pump ----------------------------------------------------------------------------------

    def _pump(self) -> None:
        try:
            while not self._stopping.is_set():
                with self.lock:
                    sent_any = self._send_bodies()
                    outgoing = self.conn.data_to_send()
                if outgoing:
                    self.sock.settimeout(DEADLINE_S)
                    self.sock.sendall(outgoing)
                self.sock.settimeout(0.001 if sent_any else _POLL_S)
                try:
                    data = self.sock.recv(1 << 20)
                except (TimeoutError, BlockingIOError):
                    continue
                if not data:
                    return
                with self.lock:
                    self._handle(self.conn.receive_data(data))
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.failure = error
        finally:
            for events in (self.ended, self.headed):
                for event in list(events.values()):
                    event.set()

    def _send_bodies(self) -> bool:
        sent_any = False
        for stream_id, remaining in list(self._outgoing.items()):
            try:
                window = self.conn.local_flow_control_window(stream_id)
            except h2.exceptions.StreamClosedError:
                del self._outgoing[stream_id]
                continue
            size = min(window, self.conn.max_outbound_frame_size, remaining, _CHUNK)
            if size <= 0:
                continue
            self.conn.send_data(stream_id, _FILL[:size], end_stream=size == remaining)
            self.sent[stream_id].count += size
            sent_any = True
            if size == remaining:
                del self._outgoing[stream_id]
            else:
                self._outgoing[stream_id] = remaining - size
        return sent_any

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, (h2.events.RequestReceived, h2.events.ResponseReceived)):
                head = dict(event.headers)
                self.heads[event.stream_id] = head
                self.head_lists[event.stream_id] = list(event.headers)
                self.on_headers(event.stream_id, head, event.stream_ended is not None)
                self.headed[event.stream_id].set()
            elif isinstance(event, h2.events.DataReceived):
                self._received(event)
            elif isinstance(event, h2.events.StreamEnded):
                self.on_ended(event.stream_id)
                self.ended[event.stream_id].set()
            elif isinstance(event, h2.events.StreamReset):
                self._outgoing.pop(event.stream_id, None)
                self.ended[event.stream_id].set()

    def _received(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        self.received[stream_id] += len(event.data)
        if stream_id not in self.samples:
            self.samples[stream_id] = event.data[:64]
        if self.keep_bodies:
            self.bodies[stream_id] += event.data
        size = event.flow_controlled_length
        if not size:
            return
        self.conn.increment_flow_control_window(size)  # the connection window: always
        if stream_id in self._held:
            self._held[stream_id] += size
        elif event.stream_ended is None:
            self._open_window(stream_id, size)

    def _open_window(self, stream_id: int, size: int) -> None:
        try:
            self.conn.increment_flow_control_window(size, stream_id)
        except (KeyError, h2.exceptions.StreamClosedError):
            pass  # the stream ended later in the same read


class H2Client(H2Endpoint):
    """A client connection to ``port`` with small socket buffers."""

    def __init__(self, port: int, socket_buffer: int = 256 * 1024, keep_bodies: bool = False) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, socket_buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, socket_buffer)
        sock.settimeout(DEADLINE_S)
        sock.connect(("127.0.0.1", port))
        super().__init__(sock, client_side=True, keep_bodies=keep_bodies)
        self.start()

    def request(self, method: str, path: str, body_size: int | None = None, hold: bool = False,
                extra: Sequence[tuple[bytes, bytes]] = (), open_ended: bool = False) -> int:
        """Start a request; ``hold`` keeps its response window closed (the client does not read it);
        ``open_ended`` leaves the stream open for ``send_bytes`` (a tunnel); ``extra`` may hold pseudo-headers."""
        headers = [(b":method", method.encode()), (b":scheme", b"http"), (b":authority", b"example.com"),
                   (b":path", path.encode())]
        headers += [header for header in extra if header[0].startswith(b":")]
        if body_size is not None:
            headers.append((b"content-length", str(body_size).encode()))
        headers += [header for header in extra if not header[0].startswith(b":")]
        with self.lock:
            stream_id = int(self.conn.get_next_available_stream_id())
            if hold:
                self.hold(stream_id)
            self.conn.send_headers(stream_id, headers, end_stream=body_size is None and not open_ended)
            if body_size is not None:
                self.send_body(stream_id, body_size)
        return stream_id

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class H2Upstream:
    """An h2c upstream: ``/big`` answers ``size`` bytes, ``/up`` is held (not read) until ``release``,
    then answered with the byte count it read; anything else is answered ``ok <path>``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.port = 0
        self.release = threading.Event()
        self.sent = Progress()  # body bytes of ``/big`` responses
        self.received = 0  # body bytes of the last ``/up`` request
        self.endpoints: list[H2Endpoint] = []

    def session(self, connection: socket.socket) -> None:
        upstream = self

        class Session(H2Endpoint):
            def on_headers(self, stream_id: int, headers: dict[bytes, bytes], ended: bool) -> None:
                path = headers.get(b":path", b"")
                if path == b"/up":
                    self.hold(stream_id)
                elif path == b"/big":
                    self.sent[stream_id] = upstream.sent
                    self.conn.send_headers(stream_id, [(b":status", b"200")])
                    self.send_body(stream_id, upstream.size)

            def on_ended(self, stream_id: int) -> None:
                path = self.heads.get(stream_id, {}).get(b":path", b"")
                if path == b"/up":
                    upstream.received = self.received[stream_id]
                    answer = str(self.received[stream_id]).encode()
                elif path != b"/big":
                    answer = b"ok " + path
                else:
                    return
                self.conn.send_headers(stream_id, [(b":status", b"200")])
                self.conn.send_data(stream_id, answer, end_stream=True)

            def _send_bodies(self) -> bool:
                if upstream.release.is_set():
                    for stream_id in list(self._held):
                        self.release(stream_id)
                return super()._send_bodies()

        endpoint = Session(connection, client_side=False)
        self.endpoints.append(endpoint)
        endpoint._pump()
        if endpoint.failure is not None and not isinstance(endpoint.failure, OSError):
            self.sent.failure = endpoint.failure

    def stop(self) -> None:
        self.release.set()
        for endpoint in self.endpoints:
            endpoint._stopping.set()
