"""The emulator's host-side state, and how the plugin's commands change it.

:class:`HostState` is everything the host knows besides the plugin itself: the HTTP
streams a test opened, callouts and gRPC calls waiting for an answer, and when the next
tick is due. :func:`carry_out` applies one command the plugin queued (``wasmhost``'s
deferred effects) to that state, exactly once, after the callback that queued it. Any
driver of a plugin (the emulator, or a future binding that runs plugins from Python
source) can share this model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wasmhost import (
    CancelGrpc,
    ClearRouteCache,
    CloseStream,
    Command,
    DeleteRootContext,
    DispatchGrpcCall,
    DispatchGrpcServiceCall,
    DispatchHttpCall,
    HttpStream,
    NotifyQueueReady,
    Plugin,
    ResumeStream,
    Runtime,
    SendGrpcMessage,
    SendLocalReply,
    SetTickPeriod,
    StreamType,
)

from ._records import Callout, GrpcCall, Headers, LocalResponse

_MAX_COMMAND_ROUNDS = 10_000
UNAVAILABLE = 14
CLUSTER_NOT_AVAILABLE = b"Cluster not available"  # Envoy's async client's text

HeadersInput = Mapping[str, str] | Iterable[tuple[str, str]]


class EmulatorError(Exception):
    """The test asked for something the emulator cannot do (unknown id, plugin not started)."""


@dataclass(slots=True)
class StreamState:
    """One HTTP stream: the host's stream object and what the plugin did to it."""

    id: int
    stream: HttpStream
    request_forwarded: bytearray = field(default_factory=bytearray)
    response_forwarded: bytearray = field(default_factory=bytearray)
    local_response: LocalResponse | None = None
    reset: bool = False
    request_paused: bool = False
    response_paused: bool = False
    route_cache_clears: int = 0
    completed: bool = False


@dataclass(slots=True)
class HostState:
    """What the host tracks between calls; ``elapsed_ns`` is how far the test moved the clock."""

    streams: dict[int, StreamState] = field(default_factory=dict)
    callouts: dict[int, Callout] = field(default_factory=dict)
    grpc: dict[int, GrpcCall] = field(default_factory=dict)
    next_tick_ns: int | None = None
    elapsed_ns: int = 0

    def owner(self, ctx: object) -> StreamState | None:
        """The stream whose plugin context is ``ctx``."""
        if ctx is None:
            return None
        for stream in self.streams.values():
            if stream.stream.ctx is ctx:
                return stream
        return None


def drain(runtime: Runtime, plugin: Plugin, state: HostState) -> None:
    """Carry out everything the plugin queued, until nothing is left."""
    for _ in range(_MAX_COMMAND_ROUNDS):
        commands = runtime.take_commands()
        if not commands:
            return
        for command in commands:
            carry_out(command, plugin, state)
    raise EmulatorError(f"the plugin kept producing commands for {_MAX_COMMAND_ROUNDS} rounds")


def carry_out(command: Command, plugin: Plugin, state: HostState) -> None:
    """Apply one deferred effect (root events such as queue readiness run at once)."""
    if isinstance(command, SendLocalReply | ResumeStream | CloseStream | ClearRouteCache):
        stream = state.owner(command.stream)
        if stream is not None:
            _stream_command(stream, command)
    elif isinstance(command, DispatchHttpCall):
        state.callouts[command.token] = Callout(
            command.token, command.cluster, to_strings(command.headers), command.body,
            to_strings(command.trailers), command.timeout_ms,
        )
    elif isinstance(command, DispatchGrpcCall):
        _start_grpc(command, plugin, state)
    elif isinstance(command, SendGrpcMessage):
        if command.token in state.grpc:
            state.grpc[command.token].messages.append(command.message)
    elif isinstance(command, CancelGrpc):
        if command.half_close and command.token in state.grpc:
            state.grpc[command.token].half_closed = True
        else:
            state.grpc.pop(command.token, None)
    elif isinstance(command, SetTickPeriod):
        period = command.period_ms
        state.next_tick_ns = state.elapsed_ns + period * 1_000_000 if period else None
    elif isinstance(command, NotifyQueueReady):
        if command.root is plugin.root:
            plugin.on_queue_ready(command.queue_id)
    elif isinstance(command, DeleteRootContext):
        if command.root is plugin.root:
            plugin.delete_root()


def _stream_command(stream: StreamState, command: Command) -> None:
    if isinstance(command, SendLocalReply):
        if stream.local_response is None:
            stream.local_response = LocalResponse(
                command.status, to_strings(command.headers), command.body, command.details, command.grpc_status
            )
    elif isinstance(command, ResumeStream):
        if command.direction is StreamType.HTTP_REQUEST:
            stream.request_paused = False
            stream.request_forwarded += stream.stream.resume_body(request=True)
        elif command.direction is StreamType.HTTP_RESPONSE:
            stream.response_paused = False
            stream.response_forwarded += stream.stream.resume_body(request=False)
    elif isinstance(command, CloseStream):
        stream.reset = True
    else:
        stream.route_cache_clears += 1


def as_bytes(value: bytes | str) -> bytes:
    """Text arguments are UTF-8."""
    return value.encode() if isinstance(value, str) else value


def to_pairs(headers: HeadersInput) -> list[tuple[bytes, bytes]]:
    """A test's headers (mapping or pairs) as the host's byte pairs, names lower-cased."""
    items: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else headers
    return [(as_bytes(name).lower(), as_bytes(value)) for name, value in items]


def to_strings(pairs: Sequence[tuple[bytes, bytes]]) -> Headers:
    """The host's byte pairs as text pairs (invalid UTF-8 replaced)."""
    return [(k.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for k, v in pairs]


def _start_grpc(command: DispatchGrpcCall, plugin: Plugin, state: HostState) -> None:
    """Record the call for the test to answer; one naming an unknown cluster fails at once, as in Envoy."""
    if not plugin.runtime.environment.has_cluster(command.cluster):
        plugin.on_grpc_close(command.token, UNAVAILABLE, CLUSTER_NOT_AVAILABLE)
        return
    call = GrpcCall(
        command.token, command.cluster, command.service, command.method,
        to_strings(command.initial_metadata), is_stream=command.message is None,
    )
    if isinstance(command, DispatchGrpcServiceCall):  # a serialized GrpcService: its authority and metadata
        call.authority = command.authority
        call.service_metadata = to_strings(command.service_metadata)
    if command.message is not None:
        call.messages.append(command.message)
    state.grpc[command.token] = call
