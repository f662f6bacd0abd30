"""HTTP callouts (``dispatch_http_call``): a buffered request to a named cluster.

Used by filters through their stream and by long-lived plugin state through the
worker's services. The result comes back as an ``HttpCallResult`` through the
same event path as any other upstream event, never re-entrantly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, cast

from ._cluster import Cluster, Host
from ._commands import (
    ResetUpstream,
    SendUpstreamData,
    SendUpstreamTrailers,
    StartUpstream,
    Timer,
)
from ._filter_api import HttpCallResult
from ._headers import HeaderMap, Pair
from ._upstream_sink import UpstreamSink

_SERVICE_TIME = b"x-envoy-upstream-service-time"

_tokens = itertools.count(1)


class ClusterCall:
    """What every callout to a cluster shares: the host's and cluster's request accounting."""

    worker: Any
    out: list[Any]
    cluster: Cluster
    host: Host
    finished: bool
    _started: bool
    _started_at: float
    _timer: Timer | None
    raw_request: bytes | None = None  # UpstreamSink: callouts are serialised from their headers

    def __init__(self, worker: Any, cluster: Cluster, headers: HeaderMap) -> None:
        self.token = next(_tokens)
        self.worker = worker
        self.out = worker.out
        self.cluster = cluster
        self.host = None  # type: ignore[assignment]  # chosen at start
        self.headers = headers
        self.edge: Any = None
        self.finished = False
        self._started = False
        self._started_at = 0.0
        self._timer = None

    def _begin(self, host: Host) -> None:
        """Count the request on ``host`` and ask the edge for a connection."""
        self.host = host
        self._started = True
        self._started_at = self.worker.now
        host.active_requests += 1
        self.cluster.rq_active += 1
        self.cluster.stats.rq_total.value += 1
        self.out.append(StartUpstream(cast(UpstreamSink, self)))  # subclasses are the sinks

    def cancel(self) -> None:
        """Forget the call without reporting (the requester went away)."""
        if self.finished:
            return
        if self._started:
            self.out.append(ResetUpstream(cast(UpstreamSink, self)))
        self._release()

    def _release(self) -> None:
        """The call is over: no timer, no accounting left behind."""
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._started:
            self._started = False
            self.host.active_requests -= 1
            self.cluster.rq_active -= 1
            self.cluster.stats.rq_completed.value += 1


class HttpCallout(ClusterCall):
    """An ``UpstreamSink`` that buffers the whole response and reports it once."""

    def __init__(
        self,
        worker: Any,
        cluster: Cluster,
        headers: HeaderMap,
        body: bytes,
        trailers: HeaderMap | None,
        timeout: float,
        deliver: Callable[[int, HttpCallResult], None],
    ) -> None:
        super().__init__(worker, cluster, headers)
        self.body = body
        self.trailers = trailers
        self.end_stream = not body and trailers is None
        self._deliver = deliver
        self._response: HeaderMap | None = None
        self._chunks: list[bytes] = []
        self._response_trailers: HeaderMap | None = None

    def start(self, timeout: float) -> None:
        cluster = self.cluster
        host = cluster.choose_host()
        if timeout > 0:
            self._timer = Timer(timeout, self._on_timeout)
            self.out.append(self._timer)
        if host is None:
            # Report asynchronously, as Envoy's async client does.
            self.out.append(Timer(0.0, lambda: self._complete("no_healthy_upstream")))
            return
        self._begin(host)
        if self.body:
            self.out.append(SendUpstreamData(self, self.body, self.trailers is None))
        if self.trailers is not None:
            self.out.append(SendUpstreamTrailers(self, self.trailers))

    # --- UpstreamSink ---------------------------------------------------------------------------

    def on_pool_ready(self, local_address: tuple[str, int] | None) -> None:
        pass

    def on_pool_failure(self, reason: str, transport_failure: str) -> None:
        """As Envoy's async client: the router's 503 local reply reaches the caller as a response."""
        self.cluster.record_response(self.host, 503, self.worker.now)
        body = b"upstream connect error or disconnect/reset before headers. reset reason: " + reason.encode()
        if transport_failure:
            body += b", transport failure reason: " + transport_failure.encode()
        self._answer_locally(503, body)

    def on_response_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        status = headers.get(b":status") or b"0"
        if status.startswith(b"1") and status != b"101":
            return
        if headers.get(_SERVICE_TIME) is None:
            # Envoy's async client routes callouts through a router, which adds this header
            elapsed_ms = max(0, int((self.worker.now - self._started_at) * 1000))
            headers.add(_SERVICE_TIME, str(elapsed_ms).encode())
        self._response = headers
        code = int(status) if status.isdigit() else 0
        self.cluster.stats.count_response(code)
        self.cluster.record_response(self.host, code, self.worker.now)
        if end_stream:
            self._complete("")

    def on_response_data(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._chunks.append(data)
        if end_stream:
            self._complete("")

    def on_response_trailers(self, trailers: HeaderMap) -> None:
        self._response_trailers = trailers
        self._complete("")

    def on_reset(self, reason: str) -> None:
        self._complete("reset")

    # --- lifecycle ------------------------------------------------------------------------------

    def _on_timeout(self) -> None:
        if self.finished:
            return
        if self._started:
            self.out.append(ResetUpstream(self))
        if self._response is None:
            self._answer_locally(504, b"upstream request timeout")  # Envoy's router reply, as a response
        else:
            self._complete("timeout")

    def _answer_locally(self, status: int, body: bytes) -> None:
        self._response = HeaderMap([
            (b":status", str(status).encode()),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"text/plain"),
        ])
        self._chunks = [body]
        self._complete("")

    def _complete(self, failure: str) -> None:
        if self.finished:
            return
        self._release()
        if failure:
            result = HttpCallResult(None, b"", None, failure)
        else:
            result = HttpCallResult(self._response, b"".join(self._chunks), self._response_trailers)
        self._deliver(self.token, result)


def start_callout(
    worker: Any,
    cluster: Cluster,
    headers: Iterable[Pair],
    body: bytes,
    trailers: Iterable[Pair],
    timeout: float,
    deliver: Callable[[int, HttpCallResult], None],
) -> HttpCallout:
    """Create and start a callout; its commands go to the worker's outbox."""
    request = HeaderMap([(k.lower(), v) for k, v in headers])
    trailer_map = HeaderMap([(k.lower(), v) for k, v in trailers]) or None
    call = HttpCallout(worker, cluster, request, body, trailer_map if trailer_map else None, timeout, deliver)
    call.start(timeout)
    return call
