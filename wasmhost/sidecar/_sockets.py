"""Socket options the proxy sets on every TCP connection it accepts or opens."""

from __future__ import annotations

import asyncio
import socket


def set_no_delay(transport: asyncio.BaseTransport) -> None:
    """Send small writes at once (no Nagle delay): a proxy's heads and short bodies are latency."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def close_transport(transport: asyncio.WriteTransport, graceful: bool, delay: float,
                    loop: asyncio.AbstractEventLoop) -> None:
    """Close a client connection: at once (abort), or half-closed and then closed after ``delay``.

    The graceful way is Envoy's ``delayed_close_timeout``: the client gets time to read what
    was written and to close first, so its last request is not met by a reset.
    """
    if not graceful:
        transport.abort()
        return
    if delay > 0 and transport.can_write_eof():
        transport.write_eof()
        loop.call_later(delay, transport.close)
    else:
        transport.close()
