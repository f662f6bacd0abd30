"""Drive the sans-io core directly: contexts with scripted filters, a fake clock, the outbox."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from tests.wasmhost.sidecar._bootstrap import bootstrap
from wasmhost.sidecar import (
    Buffer,
    DataStatus,
    HeaderMap,
    HeadersStatus,
    HttpFilter,
    TrailersStatus,
    load_plan,
)
from wasmhost.sidecar._context import ListenerContext, PlanRuntime, WorkerRuntime
from wasmhost.sidecar._plan import FilterEntry
from wasmhost.sidecar._stream import HttpStream


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_runtime(config: dict[str, Any] | None = None, filters: Sequence[FilterEntry] | None = None,
                 seed: int = 7) -> tuple[PlanRuntime, ListenerContext, FakeClock]:
    """A plan runtime for ``config`` (default: one route to cluster ``backend``), optionally with ``filters``."""
    plan = load_plan(yaml.safe_dump(config or bootstrap()), "test", 1)
    if filters is not None:
        listener = plan.listeners[0]
        hcm = dataclasses.replace(listener.hcm, filters=tuple(filters))
        plan.listeners = (dataclasses.replace(listener, hcm=hcm),)
    clock = FakeClock()
    worker = WorkerRuntime(clock=clock, wall=lambda: 1_700_000_000.0, rng=random.Random(seed))
    runtime = PlanRuntime(plan, worker)
    return runtime, runtime.listeners[plan.listeners[0].name], clock


def new_stream(ctx: ListenerContext) -> HttpStream:
    return HttpStream(ctx, 1, ("10.0.0.1", 5555), ("127.0.0.1", 8080))


def get_request(path: str = "/", authority: str = "example.com", method: str = "GET",
                extra: Sequence[tuple[bytes, bytes]] = ()) -> HeaderMap:
    return HeaderMap([(b":method", method.encode()), (b":scheme", b"http"), (b":path", path.encode()),
                      (b":authority", authority.encode()), *extra])


def take(ctx: ListenerContext) -> list[Any]:
    """The commands emitted so far (and forget them)."""
    out = list(ctx.out)
    ctx.out.clear()
    return out


Script = dict[str, Any]


class Recorder(HttpFilter):
    """A filter that logs every callback into a shared journal and returns scripted statuses.

    ``script`` maps a callback name to a status, or to a callable ``(filter, *args) -> status`` for
    behaviour (e.g. sending a local reply).
    """

    def __init__(self, name: str, journal: list[tuple[Any, ...]], callbacks: Any, script: Script) -> None:
        self.name = name
        self.journal = journal
        self.callbacks = callbacks
        self.script = script

    def _run(self, event: str, default: Any, *args: Any) -> Any:
        self.journal.append((self.name, event, *args))
        action = self.script.get(event, default)
        if callable(action) and not isinstance(action, int):
            return action(self, *args)
        return action

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        return self._run("decode_headers", HeadersStatus.Continue, end_stream)  # type: ignore[no-any-return]

    def decode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        return self._run("decode_data", DataStatus.Continue, data.to_bytes(), end_stream)  # type: ignore[no-any-return]

    def decode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        return self._run("decode_trailers", TrailersStatus.Continue)  # type: ignore[no-any-return]

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        status = headers.get(b":status")
        return self._run("encode_headers", HeadersStatus.Continue, status, end_stream)  # type: ignore[no-any-return]

    def encode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        return self._run("encode_data", DataStatus.Continue, data.to_bytes(), end_stream)  # type: ignore[no-any-return]

    def encode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        return self._run("encode_trailers", TrailersStatus.Continue)  # type: ignore[no-any-return]

    def on_log(self) -> None:
        self.journal.append((self.name, "on_log"))

    def on_destroy(self) -> None:
        self.journal.append((self.name, "on_destroy"))


class Responder(HttpFilter):
    """A terminal test filter: records what reaches the end of the chain; answers when asked to."""

    encodes = False

    def __init__(self, journal: list[tuple[Any, ...]], callbacks: Any) -> None:
        self.journal = journal
        self.callbacks = callbacks

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        self.journal.append(("terminal", "decode_headers", end_stream))
        return HeadersStatus.StopIteration

    def decode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        self.journal.append(("terminal", "decode_data", data.to_bytes(), end_stream))
        return DataStatus.StopIterationNoBuffer

    def decode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        self.journal.append(("terminal", "decode_trailers"))
        return TrailersStatus.StopIteration

    def respond(self, status: int = 200, body: bytes = b"", trailers: bool = False) -> None:
        headers = HeaderMap([(b":status", str(status).encode())])
        self.callbacks.encode_headers(headers, not body and not trailers)
        if body:
            self.callbacks.encode_data(Buffer(body), not trailers)
        if trailers:
            self.callbacks.encode_trailers(HeaderMap([(b"grpc-status", b"0")]))


def chain(journal: list[tuple[Any, ...]], scripts: Sequence[tuple[str, Script]],
          terminals: list[Responder]) -> list[FilterEntry]:
    """Filter entries: one ``Recorder`` per script, then a ``Responder`` (collected into ``terminals``)."""
    entries = []
    for name, script in scripts:
        def create(callbacks: Any, name: str = name, script: Script = script) -> HttpFilter:
            return Recorder(name, journal, callbacks, script)

        entries.append(FilterEntry(name, "test.Recorder", create, False))

    def create_terminal(callbacks: Any) -> HttpFilter:
        terminal = Responder(journal, callbacks)
        terminals.append(terminal)
        return terminal

    entries.append(FilterEntry("terminal", "test.Responder", create_terminal, True))
    return entries


_DOWNSTREAM = ("SendHeaders", "SendData", "SendTrailers", "StreamEnded", "CloseAfterResponse", "ResetDownstream")


def commands_summary(commands: list[Any], downstream_only: bool = True) -> list[tuple[Any, ...]]:
    """Commands as comparable tuples: (kind, key facts); by default only those towards the client."""
    summary: list[tuple[Any, ...]] = []
    for command in commands:
        kind = type(command).__name__
        if downstream_only and kind not in _DOWNSTREAM:
            continue
        if kind == "SendHeaders":
            summary.append((kind, command.headers.get(b":status"), command.end_stream))
        elif kind == "SendData":
            summary.append((kind, command.data, command.end_stream))
        elif kind in ("SendTrailers", "StreamEnded", "CloseAfterResponse"):
            summary.append((kind,))
        elif kind == "ResetDownstream":
            summary.append((kind, command.reason))
        else:
            summary.append((kind,))
    return summary


def callable_script(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn
