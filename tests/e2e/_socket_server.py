"""A loopback TCP server for e2e peers that must speak bytes no HTTP library would (trailers, upgrades).

Each accepted connection is handed to ``session(connection)`` on its own thread, with a read
timeout; ``stop()`` ends the accept loop (it wakes up every 0.1 s) and waits for it, so a test's
fixture can always stop what it started.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

SESSION_TIMEOUT_S = 10.0


class SocketServer:
    def __init__(self, session: Callable[[socket.socket], None], *, receive_buffer: int = 0) -> None:
        self._session = session
        self.listener = socket.socket()
        if receive_buffer:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, receive_buffer)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.1)  # accept() wakes up to notice stop()
        self.port = int(self.listener.getsockname()[1])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._run, args=(connection,), daemon=True).start()

    def _run(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(SESSION_TIMEOUT_S)
            try:
                self._session(connection)
            except OSError:
                pass  # the peer went away; the test sees it on its own side

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=SESSION_TIMEOUT_S)
        self.listener.close()


class Peer(Protocol):
    """A scripted peer: its ``session`` serves one connection; ``port`` is filled in when it listens."""

    port: int

    def session(self, connection: socket.socket) -> None: ...


_P = TypeVar("_P", bound=Peer)


@contextmanager
def serving(peer: _P, **options: int) -> Iterator[_P]:
    """Listen for ``peer`` on a loopback port for the duration of the ``with``."""
    server = SocketServer(peer.session, **options)
    peer.port = server.port
    try:
        yield peer
    finally:
        server.stop()
