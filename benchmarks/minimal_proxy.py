"""A minimal HTTP/1.1 reverse proxy on uvloop + httptools: the benchmark's Python ceiling.

Not product code. It does the least a correct keep-alive proxy must do and
nothing else: parse the request with httptools, forward method, path and headers
on a pooled keep-alive upstream connection, parse the response, and write it back
with its own framing. No routing, no header policy, no stats, no timeouts, no
filters, no error pages beyond a bare 502. ``sidecar_wrk.py`` runs it beside
nginx, Envoy and the sidecar so the table shows how close a Python design can get
on the same machine in the same run.

    python benchmarks/minimal_proxy.py --port 8080 --upstream 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from http import HTTPStatus
from typing import Any

import httptools
import uvloop

_STATUS_LINES = {status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode()) for status in HTTPStatus}
_SKIP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"proxy-connection", b"content-length"})


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream; carries one exchange at a time."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.ready: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        self.fail()

    def fail(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.transport is not None:
            client.transport.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            client.transport.close()
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.headers = []
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _SKIP:
            self.headers.append(name + b": " + value)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        status = self.parser.get_status_code()
        body = b"".join(self.body)
        line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
        head = b"%s%s\r\ncontent-length: %d\r\n\r\n" % (line, b"\r\n".join(self.headers), len(body))
        keep = self.parser.should_keep_alive()
        if keep:
            self.pool.append(self)
        elif self.transport is not None:
            self.transport.close()
        if client is not None and client.transport is not None:
            client.transport.write(head + body)
            client.resume()


class Client(asyncio.Protocol):
    """One downstream connection; requests are handled one at a time (pipelined ones wait)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def resume(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _SKIP:
            self.headers.append(name + b": " + value)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        request = b"%s %s HTTP/1.1\r\n%s\r\ncontent-length: %d\r\n\r\n%s" % (
            self.parser.get_method(), self.url, b"\r\n".join(self.headers), len(body), body)
        assert self.transport is not None
        self.transport.pause_reading()  # one exchange at a time per client connection
        self.proxy.forward(self, request)


class Proxy:
    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.pool: list[Upstream] = []

    def forward(self, client: Client, request: bytes) -> None:
        pool = self.pool
        while pool:
            upstream = pool.pop()
            if upstream.transport is not None and not upstream.transport.is_closing():
                upstream.client = client
                upstream.transport.write(request)
                return
        self.loop.create_task(self._connect(client, request))

    async def _connect(self, client: Client, request: bytes) -> None:
        try:
            _, upstream = await self.loop.create_connection(lambda: Upstream(self.pool), self.host, self.port)
        except OSError:
            if client.transport is not None:
                client.transport.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                client.transport.close()
            return
        upstream.client = client
        assert upstream.transport is not None
        upstream.transport.write(request)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    proxy = Proxy(loop, host, int(port))
    server: Any = loop.run_until_complete(
        loop.create_server(lambda: Client(proxy), "127.0.0.1", args.port, backlog=4096))
    try:
        loop.run_forever()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
