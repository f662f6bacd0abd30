"""Commands: what the host asks its embedder to do after a callback returns.

The host core is sans-io. A callback into a plugin never performs I/O or re-enters
stream processing; every side effect that Envoy defers until the VM call returns is
queued here as a command, and the embedder (the sidecar's filter adapter, ``wasmesh
plugin run``, the SDK's emulator) drains :meth:`wasmhost.Runtime.take_commands` and
carries them out. Names are imperative; each has a one-line docstring.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._abi import Pairs, StreamType

if TYPE_CHECKING:
    from ._context import HttpContext, RootContext, TcpContext


@dataclass(slots=True)
class Command:
    """Base class of every deferred effect."""


@dataclass(slots=True)
class SendLocalReply(Command):
    """Answer the stream's client with a synthetic response instead of the upstream's."""

    stream: HttpContext
    status: int
    body: bytes
    headers: Pairs
    details: str
    grpc_status: int | None


@dataclass(slots=True)
class ResumeStream(Command):
    """Continue a paused request or response (``proxy_continue_stream``)."""

    stream: HttpContext | TcpContext
    direction: StreamType


@dataclass(slots=True)
class CloseStream(Command):
    """Reset the HTTP stream, or close the connection after flushing (``proxy_close_stream``)."""

    stream: HttpContext | TcpContext
    direction: StreamType


@dataclass(slots=True)
class ClearRouteCache(Command):
    """Re-run route selection for the stream because a plugin changed its headers."""

    stream: HttpContext


@dataclass(slots=True)
class DispatchHttpCall(Command):
    """Send an HTTP request to a named cluster; deliver the answer to the root by token."""

    root: RootContext
    token: int
    cluster: str
    headers: Pairs
    body: bytes
    trailers: Pairs
    timeout_ms: int


@dataclass(slots=True)
class DispatchGrpcCall(Command):
    """Start a unary gRPC call or open a stream (``message`` is None for streams)."""

    root: RootContext
    token: int
    cluster: str
    service: str
    method: str
    initial_metadata: Pairs
    message: bytes | None
    timeout_ms: int


@dataclass(slots=True)
class SendGrpcMessage(Command):
    """Send one message on an open gRPC stream."""

    root: RootContext
    token: int
    message: bytes
    end_stream: bool


@dataclass(slots=True)
class CancelGrpc(Command):
    """Cancel a gRPC call/stream (no further callbacks) or half-close it (``close``)."""

    root: RootContext
    token: int
    half_close: bool


@dataclass(slots=True)
class SetTickPeriod(Command):
    """(Re)arm the root context's timer; 0 disables it."""

    root: RootContext
    period_ms: int


@dataclass(slots=True)
class NotifyQueueReady(Command):
    """Call ``proxy_on_queue_ready`` on the root that registered the queue."""

    root: RootContext
    queue_id: int


@dataclass(slots=True)
class DeleteRootContext(Command):
    """A root context that deferred its shutdown called ``proxy_done``; finish deleting it."""

    root: RootContext


class CommandQueue:
    """FIFO of commands produced by every VM of one runtime.

    A plan may start plugins on a build thread while the event loop drains the queue,
    so push and take are safe across threads (deque operations are atomic).
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque[Command] = deque()

    def push(self, command: Command) -> None:
        self._items.append(command)

    def take(self) -> list[Command]:
        items = self._items
        out: list[Command] = []
        while items:
            out.append(items.popleft())
        return out

    def __len__(self) -> int:
        return len(self._items)
