"""Tiny HTTP/1.1 servers on 127.0.0.1 that play the peers of a proxy under test.

A proxy test needs to see exactly what left the proxy: which headers, in which order, with which
body. Real servers (nginx, http.server) add, merge or reorder headers, so these servers parse the
request bytes themselves, record them verbatim, and answer with a response the test scripted.

- `ScriptedUpstream` answers every request with one configurable response (the route's upstream).
- `CalloutServer` listens on one port per cluster name and answers with that cluster's configured
  status and body (the targets of a plugin's `proxy_http_call`).

Both run an asyncio loop in a daemon thread so synchronous tests and fixtures can drive them;
they bind port 0 and are stopped by the fixture that started them.
"""

from __future__ import annotations

import asyncio
import http
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
_T = TypeVar("_T")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived on the wire: header names keep their case and order."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header_map(self) -> list[list[str]]:
        """The request as a proxy-wasm header map: pseudo-headers first, then the rest in order.

        HTTP/1.1 carries `:authority` as the `host` header and cannot carry `:scheme`, so the map
        starts with `:authority` (when a host header arrived), `:path`, `:method` (the order in
        which Envoy shows them to a plugin) and continues with the other headers, lower-cased.
        """
        authority: list[list[str]] = []
        rest: list[list[str]] = []
        for name, value in self.headers:
            if name.lower() == "host" and not authority:
                authority.append([":authority", value])
            else:
                rest.append([name.lower(), value])
        return authority + [[":path", self.path], [":method", self.method]] + rest


@dataclass(frozen=True)
class ScriptedResponse:
    """What a server answers; `content-length` is added unless the headers frame the body."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass
class _Listener:
    key: str
    server: asyncio.Server
    port: int
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class BadRequest(Exception):
    """The peer sent bytes that are not an HTTP/1.1 request this server understands."""


async def read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    """Read one request; None on a clean end of stream before any byte of a new request."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise BadRequest("connection closed inside the request head") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadRequest(f"request head exceeds {MAX_HEAD_BYTES} bytes") from exc
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"request line {lines[0]!r} is not 'METHOD target HTTP/1.x'")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"header line {line!r} has no 'name: value' form")
        headers.append((name, value.strip(" \t")))
    body = await _read_body(reader, headers)
    return RecordedRequest(parts[0], parts[1], tuple(headers), body)


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    values = {name.lower(): value for name, value in headers}
    if "chunked" in values.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = (await reader.readuntil(b"\r\n")).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError as exc:
                raise BadRequest(f"chunk size {size_line!r} is not hexadecimal") from exc
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest(f"chunked body exceeds {MAX_BODY_BYTES} bytes")
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers are not recorded
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length_text = values.get("content-length", "0")
    if not length_text.isdigit() or int(length_text) > MAX_BODY_BYTES:
        raise BadRequest(f"content-length {length_text!r} is not a size up to {MAX_BODY_BYTES}")
    return await reader.readexactly(int(length_text))


def encode_response(response: ScriptedResponse, *, head_only: bool = False) -> bytes:
    """Serialise a scripted response exactly as configured, framing it with content-length."""
    try:
        reason = http.HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    framed = {name.lower() for name, _ in response.headers} & {"content-length", "transfer-encoding"}
    no_body = response.status in (204, 304) or 100 <= response.status < 200
    if not framed and not no_body:
        lines.append(f"content-length: {len(response.body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only or no_body else head + response.body


class _LoopServer:
    """An asyncio loop in a daemon thread serving several listening sockets with one handler."""

    def __init__(self, handler: Callable[[str, RecordedRequest], ScriptedResponse]) -> None:
        self._handler = handler
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._listeners: dict[str, _Listener] = {}
        self._lock = threading.Lock()
        self._started = False

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if not self._started:
            self._thread.start()
            self._started = True
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def listen(self, key: str) -> int:
        """Open a listener on 127.0.0.1 port 0 for `key` and return its port."""
        with self._lock:
            if key in self._listeners:
                return self._listeners[key].port
        listener = self._run(self._open(key))
        with self._lock:
            self._listeners[key] = listener
        return listener.port

    async def _open(self, key: str) -> _Listener:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        holder: list[_Listener] = []

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None and holder:
                holder[0].tasks.add(task)
            try:
                await self._serve_connection(key, reader, writer)
            finally:
                if task is not None and holder:
                    holder[0].tasks.discard(task)

        server = await asyncio.start_server(on_connection, sock=sock, limit=MAX_HEAD_BYTES)
        holder.append(_Listener(key, server, sock.getsockname()[1]))
        return holder[0]

    async def _serve_connection(
        self, key: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    request = await read_request(reader)
                except (BadRequest, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    writer.write(encode_response(ScriptedResponse(400, (), str(exc).encode()[:200])))
                    await writer.drain()
                    return
                if request is None:
                    return
                response = self._handler(key, request)
                writer.write(encode_response(response, head_only=request.method == "HEAD"))
                await writer.drain()
                if any(n.lower() == "connection" and v.lower() == "close" for n, v in request.headers):
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    def ports(self) -> dict[str, int]:
        with self._lock:
            return {key: listener.port for key, listener in self._listeners.items()}

    def stop(self) -> None:
        """Close every listener and open connection, then end the loop thread."""
        if not self._started:
            return
        self._run(self._close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._started = False

    async def _close_all(self) -> None:
        for listener in self._listeners.values():
            listener.server.close()
            for task in list(listener.tasks):
                task.cancel()
            await listener.server.wait_closed()
        self._listeners.clear()


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


class ScriptedUpstream:
    """An upstream that answers every request with the configured response and records it."""

    def __init__(
        self, status: int = 200, headers: Iterable[tuple[str, str]] = (), body: str | bytes = b""
    ) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._response = ScriptedResponse(status, tuple(headers), _as_bytes(body))
        self._server = _LoopServer(self._handle)
        self.port = 0

    def start(self) -> ScriptedUpstream:
        self.port = self._server.listen("upstream")
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_response(
        self, status: int = 200, headers: Iterable[tuple[str, str]] = (), body: str | bytes = b""
    ) -> None:
        """Script the response for the following requests."""
        with self._lock:
            self._response = ScriptedResponse(status, tuple(headers), _as_bytes(body))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def _handle(self, key: str, request: RecordedRequest) -> ScriptedResponse:
        with self._lock:
            self._requests.append(request)
            return self._response


@dataclass(frozen=True)
class RecordedCallout:
    """A request that arrived at the callout server, with the cluster whose port it hit."""

    cluster: str
    request: RecordedRequest


class CalloutServer:
    """Targets for `proxy_http_call`: one port per cluster name, each with its own answer.

    A cluster without a configured answer gets 404 so a plugin calling the wrong cluster is
    visible in the test rather than hanging.
    """

    def __init__(self, responses: dict[str, tuple[int, str | bytes]] | None = None) -> None:
        self._lock = threading.Lock()
        self._responses: dict[str, ScriptedResponse] = {}
        self._requests: list[RecordedCallout] = []
        self._server = _LoopServer(self._handle)
        self._pending_clusters = list(responses or {})
        self.set_responses(responses or {})

    def start(self) -> CalloutServer:
        for cluster in self._pending_clusters:
            self._server.listen(cluster)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> CalloutServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_cluster(self, cluster: str, status: int = 200, body: str | bytes = b"") -> int:
        """Listen for `cluster` (if not yet) with the given answer and return its port."""
        self.set_responses({cluster: (status, body)})
        return self._server.listen(cluster)

    def port_for(self, cluster: str) -> int:
        ports = self._server.ports()
        if cluster not in ports:
            raise KeyError(f"callout server has no listener for cluster {cluster!r}")
        return ports[cluster]

    @property
    def ports(self) -> dict[str, int]:
        return self._server.ports()

    def set_responses(self, responses: dict[str, tuple[int, str | bytes]]) -> None:
        """Script (status, body) answers per cluster for the following requests."""
        with self._lock:
            for cluster, (status, body) in responses.items():
                self._responses[cluster] = ScriptedResponse(status, (), _as_bytes(body))

    @property
    def requests(self) -> list[RecordedCallout]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def _handle(self, cluster: str, request: RecordedRequest) -> ScriptedResponse:
        with self._lock:
            self._requests.append(RecordedCallout(cluster, request))
            return self._responses.get(cluster, ScriptedResponse(404, (), b"no answer scripted"))
