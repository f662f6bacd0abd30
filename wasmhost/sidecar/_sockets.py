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
