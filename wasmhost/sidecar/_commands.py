"""Commands the sans-io core emits for the I/O edge to carry out.

Every event the edge delivers to the core (request headers arrived, upstream
data arrived, a timer fired, ...) runs synchronously and appends commands to the
worker's outbox; the edge then executes them in order. Names are imperative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._headers import HeaderMap

if TYPE_CHECKING:
    from ._stream import HttpStream
    from ._upstream_sink import UpstreamSink


@dataclass(slots=True)
class SendHeaders:
    """Write response headers to the client."""

    stream: HttpStream
    headers: HeaderMap
    end_stream: bool


@dataclass(slots=True)
class SendData:
    """Write response body bytes to the client."""

    stream: HttpStream
    data: bytes
    end_stream: bool


@dataclass(slots=True)
class SendTrailers:
    """Write response trailers (ends the response)."""

    stream: HttpStream
    trailers: HeaderMap


@dataclass(slots=True)
class ResetDownstream:
    """Abort the client's stream (HTTP/1: close the connection without finishing the response)."""

    stream: HttpStream
    reason: str


@dataclass(slots=True)
class CloseAfterResponse:
    """Close the client connection once this stream's response is written."""

    stream: HttpStream


@dataclass(slots=True)
class StreamEnded:
    """Both directions are finished: write access logs and release the stream."""

    stream: HttpStream


@dataclass(slots=True)
class StartUpstream:
    """Get a connection to ``sink.host`` and send ``sink.headers`` (then data commands follow)."""

    sink: UpstreamSink


@dataclass(slots=True)
class SendUpstreamData:
    """Send request body bytes on the sink's upstream stream."""

    sink: UpstreamSink
    data: bytes
    end_stream: bool


@dataclass(slots=True)
class SendUpstreamTrailers:
    """Send request trailers on the sink's upstream stream (ends the request)."""

    sink: UpstreamSink
    trailers: HeaderMap


@dataclass(slots=True)
class ResetUpstream:
    """Abandon the sink's upstream stream; no further events reach the sink."""

    sink: UpstreamSink


class Timer:
    """A one-shot timer; the Timer object itself is the command.

    Appended to the outbox it means "arm me" (call ``fire()`` after ``delay``
    seconds). The edge keeps its bookkeeping in ``handle``: an object with a
    ``discard(timer)`` method, so that ``cancel()`` disarms at once, without a
    second trip through the outbox (most timers are cancelled, one per request).
    """

    __slots__ = ("delay", "callback", "handle", "cancelled")

    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay = delay
        self.callback = callback
        self.handle: Any = None
        self.cancelled = False

    def cancel(self) -> None:
        """Disarm (no-op when already fired or cancelled)."""
        if not self.cancelled:
            self.cancelled = True
            handle = self.handle
            if handle is not None:
                self.handle = None
                handle.discard(self)

    def fire(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.callback()
