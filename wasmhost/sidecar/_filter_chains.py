"""Filter chain selection per connection: ``filter_chain_match`` and the TLS inspector.

Istio's inbound listeners carry several chains: under PERMISSIVE an mTLS chain matched on
``transport_protocol: tls`` and the mesh ALPN, next to a plaintext chain; under STRICT only the
mTLS chain, so a plaintext connection matches nothing and is closed. Envoy decides with the
``envoy.filters.listener.tls_inspector`` listener filter, which reads the ClientHello before any
chain runs. Here the first bytes are peeked (``MSG_PEEK``, so the TLS handshake still reads
them), parsed by ``client_hello`` (sans-io), the chain is chosen by ``select_chain`` with
Envoy's most-specific-criterion rules, and the socket is handed to asyncio with that chain's
TLS context and connection manager.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2 as _inspector_pb2  # noqa: F401

from ._errors import ConfigError

if TYPE_CHECKING:
    from ._context import ListenerContext, PlanRuntime
    from ._plan import ListenerPlan
    from ._worker import ListenerState, Worker

TLS_INSPECTOR_TYPE = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
MAX_CLIENT_HELLO = 64 * 1024
DEFAULT_INSPECT_TIMEOUT = 15.0  # Envoy's listener_filters_timeout default


@dataclass(frozen=True)
class ChainMatch:
    """The ``filter_chain_match`` criteria this sidecar implements (empty: any)."""

    destination_port: int | None = None
    server_names: tuple[str, ...] = ()
    transport_protocol: str = ""
    application_protocols: tuple[str, ...] = ()

    @property
    def needs_inspection(self) -> bool:
        return bool(self.server_names or self.transport_protocol or self.application_protocols)


@dataclass(frozen=True)
class FilterChain:
    """One chain of a listener: its match and a listener plan carrying its HCM and TLS context."""

    name: str
    match: ChainMatch
    listener: ListenerPlan


_SUPPORTED_MATCH = frozenset({"destination_port", "server_names", "transport_protocol", "application_protocols"})


def parse_chain_match(message: Any, path: str) -> ChainMatch:
    for field, _ in message.ListFields():
        if field.name not in _SUPPORTED_MATCH:
            raise ConfigError(f"{path}.{field.name}", "filter_chain_match field not supported by the wasmesh sidecar")
    if message.transport_protocol not in ("", "tls", "raw_buffer"):
        raise ConfigError(f"{path}.transport_protocol", "must be tls or raw_buffer")
    return ChainMatch(message.destination_port.value if message.HasField("destination_port") else None,
                      tuple(n.lower() for n in message.server_names), message.transport_protocol,
                      tuple(message.application_protocols))


def check_listener_filters(filters: Sequence[Any], path: str) -> bool:
    """Accept the TLS inspector (the only listener filter implemented); True if it is present."""
    present = False
    for index, item in enumerate(filters):
        type_name = item.typed_config.type_url.rsplit("/", 1)[-1] if item.HasField("typed_config") else ""
        if type_name != TLS_INSPECTOR_TYPE and item.name != "envoy.filters.listener.tls_inspector":
            raise ConfigError(f"{path}[{index}]", f"listener filter {item.name or type_name!r} is not supported "
                                                  "(only envoy.filters.listener.tls_inspector)")
        present = True
    return present


# ---- the ClientHello (sans-io) --------------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    tls: bool
    server_name: str = ""
    alpn: tuple[str, ...] = ()


def client_hello(data: bytes) -> Hello | None:
    """What the first bytes say: not TLS, a ClientHello (SNI, ALPN), or None when more are needed."""
    if not data:
        return None
    if data[0] != 0x16:
        return Hello(False)
    if len(data) < 5:
        return None
    if data[1] != 3:
        return Hello(False)
    length = struct.unpack("!H", data[3:5])[0]
    if len(data) < 5 + length:
        return None if 5 + length <= MAX_CLIENT_HELLO else Hello(True)
    body = data[5:5 + length]
    try:
        return _parse_hello(body)
    except (IndexError, struct.error, UnicodeDecodeError):
        return Hello(True)  # TLS, but not a ClientHello we can read: the handshake will fail it


def _parse_hello(body: bytes) -> Hello:
    if body[0] != 1:  # handshake type ClientHello
        return Hello(True)
    at = 4 + 2 + 32  # handshake header, version, random
    at += 1 + body[at]  # session id
    at += 2 + struct.unpack("!H", body[at:at + 2])[0]  # cipher suites
    at += 1 + body[at]  # compression methods
    if at + 2 > len(body):
        return Hello(True)
    end = at + 2 + struct.unpack("!H", body[at:at + 2])[0]
    at += 2
    server_name = ""
    alpn: tuple[str, ...] = ()
    while at + 4 <= end:
        kind, size = struct.unpack("!HH", body[at:at + 4])
        value = body[at + 4:at + 4 + size]
        at += 4 + size
        if kind == 0 and len(value) > 5 and value[2] == 0:  # server_name, host_name entry
            name_length = struct.unpack("!H", value[3:5])[0]
            server_name = value[5:5 + name_length].decode("ascii").lower()
        elif kind == 16:  # application_layer_protocol_negotiation
            items, inner = [], 2
            while inner < len(value):
                item_length = value[inner]
                items.append(value[inner + 1:inner + 1 + item_length].decode("ascii"))
                inner += 1 + item_length
            alpn = tuple(items)
    return Hello(True, server_name, alpn)


# ---- selection ----------------------------------------------------------------------------------

def _server_name_rank(names: tuple[str, ...], wanted: str) -> int:
    """2 exact, 1 wildcard suffix, 0 no match."""
    if wanted in names:
        return 2
    return 1 if any(n.startswith("*.") and wanted.endswith(n[1:]) for n in names) else 0


def select_chain(chains: Sequence[FilterChain], port: int, hello: Hello) -> FilterChain | None:
    """Envoy's order: destination port, server names, transport protocol, application protocols;
    at each step the chains that name a matching value win over those that leave it empty."""
    transport = "tls" if hello.tls else "raw_buffer"
    steps: list[tuple[Callable[[ChainMatch], bool], Callable[[ChainMatch], bool]]] = [
        (lambda m: m.destination_port is None, lambda m: m.destination_port == port),
        (lambda m: not m.server_names, lambda m: bool(hello.server_name) and
         _server_name_rank(m.server_names, hello.server_name) > 0),
        (lambda m: not m.transport_protocol, lambda m: m.transport_protocol == transport),
        (lambda m: not m.application_protocols, lambda m: any(p in m.application_protocols for p in hello.alpn)),
    ]
    candidates = list(chains)
    for empty, matches in steps:
        specific = [c for c in candidates if not empty(c.match) and matches(c.match)]
        candidates = specific or [c for c in candidates if empty(c.match)]
        if not candidates:
            return None
    if hello.server_name and len(candidates) > 1:
        candidates.sort(key=lambda c: -_server_name_rank(c.match.server_names, hello.server_name))
    return candidates[0]


# ---- the I/O edge -------------------------------------------------------------------------------

def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


async def _peek_hello(loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float) -> Hello | None:
    deadline = loop.time() + timeout
    while True:
        try:
            data = sock.recv(MAX_CLIENT_HELLO, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        except OSError:
            return None
        if data is not None:
            if not data:
                return None  # closed before sending anything
            hello = client_hello(data)
            if hello is not None:
                return hello
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Hello(False)  # Envoy: on timeout the connection goes on as plaintext
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), _wake, ready)
        try:
            await asyncio.wait_for(ready, remaining)
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(sock.fileno())


class ChainAcceptor:
    """Accepts on a bound socket and serves each connection with the chain its first bytes select."""

    def __init__(self, worker: Worker, state: ListenerState, sock: socket.socket,
                 make_connection: Callable[[Worker, ListenerState], asyncio.Protocol]) -> None:
        self.worker = worker
        self.state = state
        self.sock = sock
        self.make_connection = make_connection
        self.loop = worker.loop
        self._contexts: tuple[PlanRuntime | None, dict[int, ListenerContext]] = (None, {})
        sock.listen(4096)  # listening before apply() returns, as with create_server
        self._task = worker.spawn(self._accept())
        self._closed = False

    def close(self) -> None:
        self._closed = True
        self._task.cancel()
        self.sock.close()

    async def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = await self.loop.sock_accept(self.sock)
            except (OSError, asyncio.CancelledError):
                return
            client.setblocking(False)
            self.worker.spawn(self._serve(client))

    def _context_for(self, chain: FilterChain) -> ListenerContext:
        from ._context import ListenerContext

        runtime = self.state.ctx.runtime
        cached_runtime, contexts = self._contexts
        if cached_runtime is not runtime:
            contexts = {}
            self._contexts = (runtime, contexts)
        ctx = contexts.get(id(chain))
        if ctx is None:
            ctx = contexts[id(chain)] = ListenerContext(runtime, chain.listener)
            ctx.bind_listener_stats(self.state.port)
        return ctx

    async def _serve(self, client: socket.socket) -> None:
        from ._worker import ListenerState

        plan = self.state.plan
        hello = await _peek_hello(self.loop, client, plan.inspect_timeout)
        chain = select_chain(plan.chains, plan.port or self.state.port, hello) if hello is not None else None
        if chain is None:
            client.close()  # Envoy: no matching filter chain, the connection is closed
            return
        chain_state = ListenerState(chain.listener, self._context_for(chain))
        chain_state.port = self.state.port
        tls = chain.listener.tls
        try:
            await self.loop.connect_accepted_socket(
                lambda: self.make_connection(self.worker, chain_state), client,
                ssl=tls.context if tls is not None else None)
        except (OSError, ValueError):
            client.close()


def chain_fingerprint(chains: Sequence[Any]) -> bytes:
    """What identifies a listener's chains for rebinding decisions (the serialized chain messages)."""
    return b"|".join(chain.SerializeToString(deterministic=True) for chain in chains)
