"""The asyncio edge of the registry: HTTP/1.1 parsing (httptools), body spooling, streaming.

All protocol decisions are in ``RegistryApp``; handlers run in a thread pool because
they touch the disk. Request bodies are spooled to files (memory up to a few MiB), and
blob responses are streamed with ``sendfile`` where the transport allows it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import http
import logging
import ssl
import tempfile
from pathlib import Path
from typing import IO, Any

import httptools

from ._api import FileBody, RegistryApp, Request, Response, error_response
from ._errors import RegistryError

log = logging.getLogger("wasmesh.registry")
SPOOL_IN_MEMORY = 4 * 1024 * 1024
DEFAULT_MAX_BODY = 2 * 1024 * 1024 * 1024
STREAM_CHUNK = 256 * 1024


class _BodyTooLarge(Exception):
    pass


class _Collector:
    """httptools callbacks: assembles complete requests from the byte stream."""

    def __init__(self, writer: asyncio.StreamWriter, spool_dir: Path, max_body: int, scheme: str):
        self.writer = writer
        self.spool_dir = spool_dir
        self.max_body = max_body
        self.scheme = scheme
        self.parser = httptools.HttpRequestParser(self)
        self.ready: collections.deque[tuple[Request, bool]] = collections.deque()
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self._last_name = ""
        self.body: IO[bytes] | None = None
        self.length = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise _BodyTooLarge()
        if self.headers.get("expect", "").lower() == "100-continue":
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.body is None:
            self.body = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=str(self.spool_dir))
        self.length += len(chunk)
        if self.length > self.max_body:
            raise _BodyTooLarge()
        self.body.write(chunk)

    def on_message_complete(self) -> None:
        body = self.body
        if body is None:
            body = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=str(self.spool_dir))
        body.seek(0)
        method = self.parser.get_method().decode("ascii", "replace")
        request = Request(method, self.url.decode("latin-1"), self.headers, body, self.length, self.scheme)  # type: ignore[arg-type]
        self.ready.append((request, bool(self.parser.should_keep_alive())))
        self._reset()


class RegistryServer:
    """Serves a ``RegistryApp`` on ``host:port`` (port 0 picks a free one), optionally over TLS."""

    def __init__(self, app: RegistryApp, host: str = "127.0.0.1", port: int = 5000,
                 ssl_context: ssl.SSLContext | None = None, max_body: int = DEFAULT_MAX_BODY, workers: int = 32):
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_body = max_body
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="registry")
        self._server: asyncio.Server | None = None
        self._spool_dir = app.storage.root / "tmp"

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        scheme = "https" if self.ssl_context else "http"
        collector = _Collector(writer, self._spool_dir, self.max_body, scheme)
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(STREAM_CHUNK)
                if not data:
                    break
                try:
                    collector.parser.feed_data(data)
                except _BodyTooLarge:
                    too_large = RegistryError("PAYLOAD_TOO_LARGE", f"request body exceeds {self.max_body} bytes")
                    await self._write(writer, "POST", error_response(too_large), keep_alive=False)
                    break
                except httptools.HttpParserError as err:
                    bad = RegistryError("UNKNOWN", f"malformed HTTP request: {err}", status=400)
                    await self._write(writer, "GET", error_response(bad), keep_alive=False)
                    break
                keep_going = True
                while collector.ready:
                    request, keep_alive = collector.ready.popleft()
                    try:
                        response = await loop.run_in_executor(self._executor, self.app.handle, request)
                    finally:
                        request.body.close()
                    log.debug("%s %s -> %d", request.method, request.target, response.status)
                    if not await self._write(writer, request.method, response, keep_alive):
                        keep_going = False
                        break
                if not keep_going:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            if collector.body is not None:
                collector.body.close()  # a truncated upload: its partial body is dropped
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _write(self, writer: asyncio.StreamWriter, method: str, response: Response, keep_alive: bool) -> bool:
        """Send one response; False when the connection must close afterwards."""
        reason = http.HTTPStatus(response.status).phrase if response.status in http.HTTPStatus._value2member_map_ else ""
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        headers = dict(response.headers)
        if response.status not in (204, 304):
            headers["Content-Length"] = str(response.content_length)
        headers["Connection"] = "keep-alive" if keep_alive else "close"
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            body = response.body
            if isinstance(body, FileBody):
                if not await self._send_file(writer, body):
                    return False
            elif body:
                writer.write(body)
        await writer.drain()
        return keep_alive

    async def _send_file(self, writer: asyncio.StreamWriter, body: FileBody) -> bool:
        await writer.drain()
        loop = asyncio.get_running_loop()
        try:
            fileobj = body.path.open("rb")
        except FileNotFoundError:
            return False  # deleted between stat and send: the client sees a short body
        with fileobj:
            sent = 0
            try:
                sent = await loop.sendfile(writer.transport, fileobj, body.offset, body.length)
            except (NotImplementedError, RuntimeError):
                fileobj.seek(body.offset)
                remaining = body.length
                while remaining > 0:
                    chunk = fileobj.read(min(STREAM_CHUNK, remaining))
                    if not chunk:
                        break
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
                    remaining -= len(chunk)
        return sent == body.length


def serve(app: RegistryApp, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
          ready: Any = None) -> None:
    """Run a registry until interrupted (the CLI's entry); ``ready(server)`` is called once bound."""

    async def main() -> None:
        server = RegistryServer(app, host, port, ssl_context)
        await server.start()
        if ready is not None:
            ready(server)
        try:
            await server.serve_forever()
        finally:
            await server.close()

    asyncio.run(main())


def tls_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context
