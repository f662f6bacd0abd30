"""Inbound and outbound mTLS connections for asyncio, with Istio's PeerAuthentication modes.

STRICT: TLS with a client certificate is required; plaintext fails the handshake.
PERMISSIVE: the first bytes decide (a TLS handshake record, or anything else = plaintext,
also when the client sends nothing within ``sniff_timeout``, as Envoy's TLS inspector does);
TLS connections may present a client certificate (identity known) or not (none).
DISABLE: plaintext only.

Bytes are peeked (MSG_PEEK), never consumed, so the connection is handed untouched to
``loop.connect_accepted_socket`` with or without TLS. The protocol factory receives the
verified ``PeerInfo`` once the handshake is done.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass

from ._peer import PeerVerificationError
from ._spiffe import SpiffeId
from ._tls import TlsContexts, peer_identity

log = logging.getLogger(__name__)
TLS_RECORD_PREFIX = 3


class PeerAuthenticationMode(enum.Enum):
    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"
    DISABLE = "DISABLE"


@dataclass(frozen=True)
class PeerInfo:
    """What the listener learnt about the client before the first application byte."""

    tls: bool
    identity: SpiffeId | None
    address: tuple[str, int]


def looks_like_tls(prefix: bytes) -> bool | None:
    """Is this the start of a TLS handshake record? None: not enough bytes to tell yet.

    A TLS record begins with content type 22 (handshake) and major version 3; minor 0..4.
    """
    checks = (lambda b: b == 0x16, lambda b: b == 0x03, lambda b: b <= 0x04)
    for byte, check in zip(prefix, checks, strict=False):
        if not check(byte):
            return False
    return True if len(prefix) >= TLS_RECORD_PREFIX else None


async def _wait_readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def sniff_tls(sock: socket.socket, timeout: float) -> bool:
    """Peek at a new connection's first bytes; True if they start a TLS handshake."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(_wait_readable(loop, sock), remaining)
        except TimeoutError:
            return False
        try:
            prefix = sock.recv(TLS_RECORD_PREFIX, socket.MSG_PEEK)
        except BlockingIOError:
            continue
        if not prefix:
            return False
        verdict = looks_like_tls(prefix)
        if verdict is not None:
            return verdict
        await asyncio.sleep(0.001)  # part of the record header arrived; wait for the rest


ProtocolFactory = Callable[[PeerInfo], asyncio.Protocol]


class _PeerGate(asyncio.Protocol):
    """Checks the peer right after the handshake, then hands the transport to the real protocol."""

    def __init__(self, factory: ProtocolFactory, tls: bool, expected: Collection[SpiffeId] | None,
                 on_refused: Callable[[str], None]) -> None:
        self._factory, self._tls, self._expected, self._on_refused = factory, tls, expected, on_refused
        self._inner: asyncio.Protocol | None = None
        self.peer: PeerInfo | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = transport.get_extra_info("peername") or ("", 0)
        identity = None
        if self._tls:
            try:
                identity = peer_identity(transport.get_extra_info("ssl_object"), self._expected)
            except PeerVerificationError as exc:
                self._on_refused(str(exc))
                transport.abort()  # type: ignore[attr-defined]
                return
        self.peer = PeerInfo(self._tls, identity, (address[0], address[1]))
        self._inner = self._factory(self.peer)
        self._inner.connection_made(transport)

    @property
    def inner(self) -> asyncio.Protocol | None:
        return self._inner

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class SecureListener:
    """Accepts on 127.0.0.1 (or ``host``) and applies a PeerAuthentication mode per connection."""

    def __init__(
        self,
        contexts: TlsContexts,
        factory: ProtocolFactory,
        *,
        mode: PeerAuthenticationMode = PeerAuthenticationMode.STRICT,
        allowed_peers: Collection[SpiffeId] | None = None,
        sniff_timeout: float = 1.0,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.contexts, self.factory, self.mode = contexts, factory, mode
        self.allowed_peers = allowed_peers
        self.sniff_timeout, self.handshake_timeout = sniff_timeout, handshake_timeout
        self.refused: list[str] = []
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SecureListener:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
        self._sock, self.port = sock, sock.getsockname()[1]
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop())
        return self

    async def close(self) -> None:
        for task in [self._accepting, *self._pending]:
            if task is not None:
                task.cancel()
        for task in [self._accepting, *self._pending]:
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                    pass
        if self._sock is not None:
            self._sock.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            task = loop.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _refuse(self, reason: str) -> None:
        self.refused.append(reason)
        log.info("inbound connection refused: %s", reason)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.mode is PeerAuthenticationMode.DISABLE:
            use_tls = False
        elif self.mode is PeerAuthenticationMode.STRICT:
            use_tls = True
        else:
            use_tls = await sniff_tls(conn, self.sniff_timeout)
        context: ssl.SSLContext | None = None
        if use_tls:
            context = self.contexts.server_context(require_client_cert=self.mode is PeerAuthenticationMode.STRICT)
        gate = _PeerGate(self.factory, use_tls, self.allowed_peers, self._refuse)
        try:
            await loop.connect_accepted_socket(
                lambda: gate, conn, ssl=context, ssl_handshake_timeout=self.handshake_timeout if context else None
            )
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            self._refuse(f"TLS handshake failed: {exc}")
            conn.close()


async def open_mtls_connection(
    factory: ProtocolFactory,
    host: str,
    port: int,
    contexts: TlsContexts,
    *,
    expected: Collection[SpiffeId],
    timeout: float = 10.0,
) -> tuple[asyncio.BaseTransport, asyncio.Protocol, SpiffeId]:
    """An outbound mTLS connection whose server must be one of ``expected`` (Istio's SAN check).

    The identity is checked before ``factory`` is called, so the protocol never writes to a
    wrong peer; a refused server raises PeerVerificationError.
    """
    loop = asyncio.get_running_loop()
    refusals: list[str] = []
    gate = _PeerGate(factory, True, expected, refusals.append)
    transport, _ = await asyncio.wait_for(
        loop.create_connection(lambda: gate, host, port, ssl=contexts.client_context(), server_hostname=""), timeout
    )
    if refusals or gate.inner is None or gate.peer is None or gate.peer.identity is None:
        transport.abort()
        raise PeerVerificationError(refusals[0] if refusals else "the server presented no identity")
    return transport, gate.inner, gate.peer.identity
