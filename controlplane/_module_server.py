"""The module endpoint: `GET /modules/sha256/<hex>` serves verified modules to proxies.

It lives on the control plane's monitoring port (plain HTTP on loopback) and, once the mesh
has identity, on an HTTPS port of its own (`_module_tls`). Responses are content-addressed, so they never
change: a strong ETag (the digest), immutable cache headers, `If-None-Match` answered with 304,
one byte range per request (`bytes=a-b`, `a-`, `-n`, with `If-Range`) answered with 206 and
an unsatisfiable one with 416, HEAD without a body. Only modules the control plane has
published to proxies are served; every module is held in memory once, however many proxies
fetch it at the same time. `respond` decides (sans-io); `write_reply` does the I/O.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane._module_cache import is_digest_hex
from controlplane._module_placement import MODULE_PATH
from controlplane._module_tls import ModuleTls
from controlplane._security import SERVER_NAMES

if TYPE_CHECKING:
    from controlplane._security import MeshSecurity

_REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
            405: "Method Not Allowed", 416: "Range Not Satisfiable"}
CACHE_CONTROL = "public, max-age=31536000, immutable"
Lookup = Callable[[str], bytes | None]


@dataclass(frozen=True)
class ModuleReply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes | memoryview = b""


def is_module_path(target: str) -> bool:
    return target.startswith("/modules/")


def _text(status: int, message: str, *extra: tuple[str, str]) -> ModuleReply:
    body = (message + "\n").encode()
    return ModuleReply(status, (("content-type", "text/plain"), ("content-length", str(len(body))), *extra), body)


def respond(method: str, target: str, headers: Mapping[str, str], lookup: Lookup) -> ModuleReply:
    """The reply to one request; `headers` have lower-case names, `lookup(hex)` gives module bytes."""
    path = target.split("?", 1)[0]
    if not path.startswith(MODULE_PATH):
        return _text(404, f"no route {path}; modules are at {MODULE_PATH}<hex>")
    sha256 = path[len(MODULE_PATH):]
    if not is_digest_hex(sha256):
        return _text(400, "expected /modules/sha256/ followed by 64 lower-case hex digits")
    if method not in ("GET", "HEAD"):
        return _text(405, f"{method} is not allowed", ("allow", "GET, HEAD"))
    data = lookup(sha256)
    if data is None:
        return _text(404, f"no published module sha256:{sha256}")
    etag = f'"{sha256}"'
    common = (("etag", etag), ("cache-control", CACHE_CONTROL), ("accept-ranges", "bytes"))
    if _etag_matches(headers.get("if-none-match"), etag):
        return ModuleReply(304, common)
    size = len(data)
    wanted = headers.get("range")
    if_range = headers.get("if-range")
    if wanted is not None and (if_range is None or if_range.strip() == etag):
        try:
            span = parse_range(wanted, size)
        except ValueError:
            return _text(416, f"range {wanted!r} is outside the module's {size} bytes",
                         ("content-range", f"bytes */{size}"), *common)
        if span is not None:
            start, end = span
            return ModuleReply(206, (("content-type", "application/wasm"), ("content-length", str(end - start + 1)),
                                     ("content-range", f"bytes {start}-{end}/{size}"), *common),
                               memoryview(data)[start:end + 1])
    return ModuleReply(200, (("content-type", "application/wasm"), ("content-length", str(size)), *common), data)


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    candidates = [c.strip().removeprefix("W/") for c in header.split(",")]
    return "*" in candidates or etag in candidates


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as inclusive (start, end); None when the header is to be ignored
    (malformed, another unit, several ranges — RFC 9110 lets a server answer those in full);
    ValueError when it cannot be satisfied."""
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) \
            or (last and not last.isdigit()):
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise ValueError("range starts past the end")
    return start, min(end, size - 1)


async def write_reply(writer: asyncio.StreamWriter, reply: ModuleReply, head_only: bool = False) -> None:
    head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'X')}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in reply.headers) + "connection: close\r\n\r\n"
    writer.write(head.encode("latin-1"))
    if not head_only and reply.body:
        writer.write(reply.body)
    await writer.drain()


class ModuleTlsEndpoint:
    """The HTTPS listener serving `lookup`'s modules with a certificate from the mesh CA."""

    def __init__(self, security: MeshSecurity, lookup: Lookup, *, lifetime: dt.timedelta | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.security = security
        self.lookup = lookup
        self.lifetime = lifetime or security.settings.serving_lifetime
        self.clock = clock
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        self.renewals = 0
        self._bundle = ""
        self._renew_at = 0.0
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def tls(self) -> ModuleTls:
        return ModuleTls(self._bundle)

    def renew_if_due(self) -> bool:
        """Reissue the certificate at half its lifetime or on a new trust bundle; True when it was."""
        ca = self.security.ca
        bundle = ca.trust_bundle_pem()
        if bundle == self._bundle and self.clock() < self._renew_at:
            return False
        key, chain = ca.issue_server_certificate(self.security.identity, list(SERVER_NAMES), lifetime=self.lifetime)
        _load_chain(self.context, key, chain)  # later handshakes present the new certificate
        self._bundle = ca.trust_bundle_pem()
        self._renew_at = self.clock() + self.lifetime.total_seconds() / 2
        self.renewals += 1
        return True

    async def start(self, host: str, port: int) -> int:
        self.renew_if_due()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await serve_connection(reader, writer, self.lookup)

        self._server = await asyncio.start_server(on_connection, host, port, ssl=self.context,
                                                  ssl_handshake_timeout=10.0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _load_chain(context: ssl.SSLContext, key: bytes, chain: bytes) -> None:
    """`load_cert_chain` reads files only: hand it a private directory that is gone right after."""
    with tempfile.TemporaryDirectory(prefix="wasmesh-module-tls-") as folder:
        key_path, chain_path = Path(folder) / "key.pem", Path(folder) / "chain.pem"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        chain_path.write_bytes(chain)
        context.load_cert_chain(chain_path, key_path)


MAX_HEAD = 16 * 1024


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lookup: Lookup) -> None:
    """One request on a connection of the module endpoint's own listener (`_module_tls`), then close."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30.0)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or len(head) > MAX_HEAD:
            reply = _text(400, "bad request line")
            method = "GET"
        else:
            method, target = parts[0], parts[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            reply = respond(method, target, headers, lookup)
        await write_reply(writer, reply, head_only=method == "HEAD")
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
        pass
    finally:
        writer.close()


__all__ = ["Lookup", "ModuleReply", "ModuleTlsEndpoint", "is_module_path", "parse_range", "respond", "serve_connection", "write_reply"]
