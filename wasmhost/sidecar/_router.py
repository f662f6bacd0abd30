"""``envoy.filters.http.router``: the terminal filter that forwards requests upstream.

Per request it resolves the route (direct response, redirect or forward), picks
the cluster (single, header-named or weighted), applies rewrites and header
mutations, picks a host, and runs upstream attempts with Envoy's retry,
per-try timeout, global timeout and mirror semantics. Upstream traffic leaves as
commands (``StartUpstream``, ``SendUpstreamData`` ...); upstream events come back
to ``_Attempt`` objects, which are the ``UpstreamSink`` the edge talks to.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from ._buffer import Buffer
from ._cluster import Cluster, Host
from ._commands import (
    ResetUpstream,
    SendUpstreamData,
    SendUpstreamTrailers,
    StartUpstream,
    Timer,
)
from ._filter_api import DataStatus, HeadersStatus, HttpFilter, ResponseFlag, TrailersStatus
from ._filter_registry import FilterBuildContext, register_http_filter
from ._headers import HeaderMap
from ._route_build import first_query_value
from ._routes import DirectResponse, ForwardAction, RedirectAction, Route, WeightedClusterEntry
from ._upstream_sink import CONNECTION_FAILURE, CONNECTION_TIMEOUT, OVERFLOW

ROUTER_TYPE = "envoy.extensions.filters.http.router.v3.Router"
_STOP = HeadersStatus.StopIteration
_MASK64 = (1 << 64) - 1


class RouterConfig:
    __slots__ = ("suppress_envoy_headers",)

    def __init__(self, suppress_envoy_headers: bool) -> None:
        self.suppress_envoy_headers = suppress_envoy_headers


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class _Attempt:
    """One upstream try (or a mirror copy); the edge delivers upstream events here."""

    per_try_timer: Timer | None = None
    done = False
    response_started = False
    counted = True
    edge: Any = None
    raw_request: bytes | None = None  # the UpstreamSink field only fast-lane exchanges set

    def __init__(self, router: RouterFilter | None, cluster: Cluster, host: Host, headers: HeaderMap,
                 end_stream: bool, shadow: bool, started_at: float) -> None:
        self.router = router
        self.cluster = cluster
        self.host = host
        self.headers = headers
        self.end_stream = end_stream
        self.shadow = shadow
        self.started_at = started_at
        host.active_requests += 1
        cluster.rq_active += 1
        stats = cluster.stats
        stats.rq_total.value += 1
        stats.rq_active.value += 1

    def release(self) -> None:
        if self.counted:
            self.counted = False
            self.host.active_requests -= 1
            cluster = self.cluster
            cluster.rq_active -= 1
            stats = cluster.stats
            stats.rq_active.value -= 1
            stats.rq_completed.value += 1

    def on_pool_ready(self, local_address: tuple[str, int] | None) -> None:
        router = self.router
        if router is not None and not self.shadow and router.attempt is self:
            router.stream.info.upstream_local_address = local_address

    def on_pool_failure(self, reason: str, transport_failure: str) -> None:
        self.done = True
        self.release()
        router = self.router
        if reason != OVERFLOW:
            if reason == CONNECTION_TIMEOUT:
                self.cluster.stats.cx_connect_timeout.value += 1
            self.cluster.record_response(self.host, 503, router.worker.now if router is not None else 0.0)
        if router is not None and not self.shadow and router.attempt is self:
            router.on_attempt_failure(self, reason, transport_failure, connect_failure=reason != OVERFLOW)

    def on_response_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        if self.done:
            return
        router = self.router
        status_value = headers.get(b":status") or b""
        if status_value[:1] == b"1" and status_value != b"101":
            return
        status = int(status_value) if status_value.isdigit() else 0
        cluster = self.cluster
        shadow = self.shadow
        if shadow or router is None:
            cluster.stats.count_response(status)
        if router is not None:
            now = router.worker.now
            cluster.record_response(self.host, status, now)
            cluster.stats.rq_time.observe((now - self.started_at) * 1000.0)
        if end_stream:
            self.done = True
            self.release()
        if router is not None and not shadow and router.attempt is self:
            router.on_upstream_headers(self, headers, status, end_stream)
        elif end_stream:
            self.router = None

    def on_response_data(self, data: bytes, end_stream: bool) -> None:
        if self.done:
            return
        if end_stream:
            self.done = True
            self.release()
        router = self.router
        if router is not None and not self.shadow and router.attempt is self:
            router.on_upstream_data(data, end_stream)

    def on_response_trailers(self, trailers: HeaderMap) -> None:
        if self.done:
            return
        self.done = True
        self.release()
        router = self.router
        if router is not None and not self.shadow and router.attempt is self:
            router.on_upstream_trailers(trailers)

    def on_reset(self, reason: str) -> None:
        if self.done:
            return
        self.done = True
        self.release()
        self.cluster.stats.rq_rx_reset.value += 1
        router = self.router
        if router is not None and not self.response_started:
            self.cluster.record_response(self.host, 503, router.worker.now)
        if router is not None and not self.shadow and router.attempt is self:
            router.on_attempt_failure(self, reason, "", connect_failure=False)


class RouterFilter(HttpFilter):
    """Per-stream router state."""

    encodes = False

    # Per-stream state defaults live on the class: a new router stores only what it sets.
    route: Route | None = None
    action: ForwardAction | None = None
    cluster: Cluster | None = None
    weighted: WeightedClusterEntry | None = None
    request_headers: HeaderMap | None = None
    request_trailers: HeaderMap | None = None
    attempt: _Attempt | None = None
    attempts = 0
    retries_left = 0
    retry_policy: Any = None
    retry_buffer: Buffer | None = None
    buffering = False
    request_complete = False
    global_timer: Timer | None = None
    backoff_timer: Timer | None = None
    response_started = False
    shadows: list[_Attempt] | None = None
    hash_key: int | None = None
    tried_hosts: set[Any] | None = None
    retried = False
    headers_only = False

    def __init__(self, callbacks: Any, config: RouterConfig) -> None:
        self.cb = callbacks
        self.config = config
        stream = callbacks.stream
        self.stream = stream
        self.out: list[Any] = stream.ctx.out
        self.worker = stream.ctx.worker

    # --- decode side ----------------------------------------------------------------------------

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        stream = self.stream
        stats = stream.ctx.stats
        stats.router_rq_total.value += 1
        route = stream.route()
        if route is None:
            stats.no_route.value += 1
            stream.info.add_flag(ResponseFlag.NO_ROUTE_FOUND)
            self.cb.send_local_reply(404, details="route_not_found")
            return _STOP
        self.route = route
        action = route.action
        if type(action) is ForwardAction:
            return self._forward(route, action, headers, end_stream)
        if isinstance(action, DirectResponse):
            stats.rq_direct_response.value += 1
            self._local_reply(action.status, action.body or b"", "direct_response")
            return _STOP
        if isinstance(action, RedirectAction):
            stats.rq_redirect.value += 1
            location = self._redirect_location(route, action, headers)
            self._local_reply(action.status, b"", "direct_response", [(b"location", location)])
            return _STOP
        return self._forward(route, action, headers, end_stream)

    def _forward(self, route: Route, action: ForwardAction, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        stream = self.stream
        info = stream.info
        weighted = None
        name = action.cluster
        if name is None:
            if action.weighted:
                weighted = action.pick_weighted(stream.random_value)
                name = weighted.name
                self.weighted = weighted
            else:
                name = (headers.get(action.cluster_header) or b"").decode("latin-1")  # type: ignore[arg-type]
        info.cluster_name = name
        cluster = stream.ctx.clusters.get(name)
        if cluster is None:
            stream.ctx.stats.no_cluster.value += 1
            info.add_flag(ResponseFlag.NO_CLUSTER_FOUND)
            self._local_reply(action.cluster_not_found_code, b"", "cluster_not_found")
            return _STOP
        self.cluster = cluster
        self.action = action
        self.request_headers = headers
        # header mutations and rewrites, applied once to the request map (as Envoy does)
        if weighted is not None and weighted.request_ops:
            weighted.request_ops.apply(headers, info, headers, None)
        for ops in route.request_ops:
            ops.apply(headers, info, headers, None)
        if action.prefix_rewrite is not None or action.regex_rewrite is not None:
            path = headers.get(b":path") or b""
            rewritten = route.rewrite_path(path, action.prefix_rewrite, action.regex_rewrite)
            if rewritten is not None and rewritten != path:
                if not self.config.suppress_envoy_headers:
                    headers.set(b"x-envoy-original-path", path)
                headers.set(b":path", rewritten)
        host_rewrite = weighted.host_rewrite if weighted is not None and weighted.host_rewrite else action.host_rewrite
        if host_rewrite is not None:
            headers.set(b":authority", host_rewrite)
        retry = route.retry
        if retry is not None:
            self.retry_policy = retry
            if retry.retry_on:
                self.retries_left = retry.num_retries
                self.buffering = not end_stream
        if not self.config.suppress_envoy_headers:
            expected = route.expected_timeout_ms
            if expected is not None:
                if self.cb.dec is not None and self.cb.dec.index == 0:
                    # no filter ran before the router and prepare_request strips this header from
                    # every client: it is absent, so append it (a regular header) without a search
                    headers.items().append((b"x-envoy-expected-rq-timeout-ms", expected))
                else:
                    headers.set(b"x-envoy-expected-rq-timeout-ms", expected)
        if action.hash_policies and cluster.plan.lb_policy == "RING_HASH":
            self.hash_key = self._hash_key(action, headers)
        if end_stream:
            self.request_complete = True
            self.headers_only = True
        self._start_attempt(end_stream)
        if action.mirrors and not self.stream.done:
            self._start_shadows(action, headers, end_stream)
        if end_stream:
            self._arm_global_timer()
            if self.shadows:
                for shadow in self.shadows:
                    shadow.router = None
        return _STOP

    def decode_data(self, data: Any, end_stream: bool) -> DataStatus:
        payload = data.to_bytes()
        if self.buffering:
            if self.retry_buffer is None:
                self.retry_buffer = Buffer()
            self.retry_buffer.append(payload)
            route = self.route
            if route is not None and len(self.retry_buffer) > route.buffer_limit:
                self.buffering = False
                self.retries_left = 0
                self.retry_buffer = None
        attempt = self.attempt
        if attempt is not None and not attempt.done:
            self.out.append(SendUpstreamData(attempt, payload, end_stream))
        if self.shadows:
            for shadow in self.shadows:
                if not shadow.done:
                    self.out.append(SendUpstreamData(shadow, payload, end_stream))
        if end_stream:
            self._on_request_complete()
        return DataStatus.StopIterationNoBuffer

    def decode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        self.request_trailers = trailers
        attempt = self.attempt
        if attempt is not None and not attempt.done:
            self.out.append(SendUpstreamTrailers(attempt, trailers))
        if self.shadows:
            for shadow in self.shadows:
                if not shadow.done:
                    self.out.append(SendUpstreamTrailers(shadow, trailers))
        self._on_request_complete()
        return TrailersStatus.StopIteration

    def on_destroy(self) -> None:
        if self.global_timer is not None:
            self._cancel_global_timer()
        if self.backoff_timer is not None:
            self._cancel_backoff_timer()
        attempt = self.attempt
        if attempt is not None:
            if not attempt.done or attempt.per_try_timer is not None:
                self._end_attempt(attempt, reset=not attempt.done)
            self.attempt = None
        if self.shadows and not self.request_complete:
            for shadow in self.shadows:
                if not shadow.done:
                    shadow.done = True
                    shadow.release()
                    self.out.append(ResetUpstream(shadow))
        if self.retried and self.cluster is not None:
            self.cluster.retries_active -= 1
            self.retried = False

    # --- local replies --------------------------------------------------------------------------

    def _local_reply(self, status: int, body: bytes, details: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
        route = self.route
        weighted = self.weighted
        info = self.stream.info
        request = self.cb.request_headers

        def modify(reply: HeaderMap) -> None:
            if weighted is not None and weighted.response_ops:
                weighted.response_ops.apply(reply, info, request, reply)
            if route is not None:
                for ops in route.response_ops:
                    ops.apply(reply, info, request, reply)

        self.cb.send_local_reply(status, body, headers or (), details, None, modify)

    def _redirect_location(self, route: Route, action: RedirectAction, headers: HeaderMap) -> bytes:
        original_scheme = headers.get(b":scheme") or b"http"
        scheme = action.scheme or original_scheme
        authority = headers.get(b":authority") or b""
        host, port = authority, b""
        if not authority.startswith(b"[") or authority.rfind(b"]") < authority.rfind(b":"):
            head, sep, tail = authority.rpartition(b":")
            if sep and tail.isdigit():
                host, port = head, tail
        if action.host is not None:
            host = action.host
        if action.port is not None:
            port = str(action.port).encode()
        elif action.scheme is not None and action.scheme != original_scheme:
            port = b""
        if port and ((scheme == b"http" and port == b"80") or (scheme == b"https" and port == b"443")):
            port = b""
        path = headers.get(b":path") or b"/"
        if action.path is not None:
            new_path = action.path
            if b"?" not in new_path and not action.strip_query:
                _, sep, query = path.partition(b"?")
                new_path = new_path + sep + query
            path = new_path
        else:
            rewritten = route.rewrite_path(path, action.prefix_rewrite, action.regex_rewrite)
            if rewritten is not None:
                path = rewritten
        if action.strip_query:
            path = path.partition(b"?")[0]
        return scheme + b"://" + host + (b":" + port if port else b"") + path

    # --- attempts -------------------------------------------------------------------------------

    def _hash_key(self, action: ForwardAction, headers: HeaderMap) -> int | None:
        key: int | None = None
        for policy in action.hash_policies:
            value: bytes | None = None
            if policy.kind == "header":
                value = headers.joined(policy.name)
            elif policy.kind == "source_ip":
                value = self.stream.info.downstream_remote_address[0].encode()
            elif policy.kind == "query_parameter":
                value = first_query_value((headers.get(b":path") or b"").partition(b"?")[2], policy.name)
            elif policy.kind == "cookie":
                for cookie_header in headers.get_all(b"cookie"):
                    for part in cookie_header.split(b";"):
                        name, _, cookie_value = part.strip().partition(b"=")
                        if name == policy.name:
                            value = cookie_value
                            break
            if value is None:
                continue
            hashed = _hash(value)
            key = hashed if key is None else ((((key << 1) | (key >> 63)) & _MASK64) ^ hashed)
            if policy.terminal:
                break
        return key

    def _start_attempt(self, end_stream: bool) -> None:
        cluster = self.cluster
        assert cluster is not None and self.request_headers is not None
        stream = self.stream
        info = stream.info
        if cluster.rq_active >= cluster.thresholds.max_requests:
            cluster.stats.rq_pending_overflow.value += 1
            info.add_flag(ResponseFlag.UPSTREAM_OVERFLOW)
            self._upstream_failure_reply(OVERFLOW, "")
            return
        host = cluster.choose_host(self.hash_key)
        retry = self.retry_policy
        if retry is not None and retry.avoid_previous_hosts:
            tried = self.tried_hosts
            if tried is None:
                tried = self.tried_hosts = set()
            elif host is not None:  # a retry: try other hosts first (previous_hosts predicate)
                for _ in range(retry.host_selection_attempts):
                    if host is None or host.key not in tried:
                        break
                    host = cluster.choose_host(self.hash_key)
            if host is not None:
                tried.add(host.key)
        if host is None:
            info.add_flag(ResponseFlag.NO_HEALTHY_UPSTREAM)
            self._local_reply(503, b"no healthy upstream", "no_healthy_upstream")
            return
        headers = self.request_headers
        action = self.action
        if action is not None and action.auto_host_rewrite and host.hostname:
            headers.set(b":authority", host.hostname.encode())
        attempts = self.attempts = self.attempts + 1
        info.attempt_count = attempts
        route = self.route
        if route is not None and route.virtual_host.include_attempt_count:
            headers.set(b"x-envoy-attempt-count", str(attempts).encode())
        info.upstream_host = host.key
        now = self.worker.now
        if info.first_upstream_tx_at is None:
            info.first_upstream_tx_at = now
        attempt = _Attempt(self, cluster, host, headers, end_stream, False, now)
        self.attempt = attempt
        out = self.out
        out.append(StartUpstream(attempt))
        if attempts > 1 and not end_stream:
            # a retry replays what the client sent so far
            buffered = self.retry_buffer
            if buffered is not None and len(buffered):
                out.append(SendUpstreamData(attempt, buffered.to_bytes(),
                                            self.request_complete and self.request_trailers is None))
            elif not end_stream and self.request_complete and self.request_trailers is None:
                out.append(SendUpstreamData(attempt, b"", True))
            if self.request_trailers is not None:
                out.append(SendUpstreamTrailers(attempt, self.request_trailers))
        if retry is not None and retry.per_try_timeout is not None and self.request_complete:
            self._start_per_try_timer(attempt)

    def _start_per_try_timer(self, attempt: _Attempt) -> None:
        retry = self.retry_policy
        if retry is None or retry.per_try_timeout is None:
            return
        timer = Timer(retry.per_try_timeout, lambda: self._on_per_try_timeout(attempt))
        attempt.per_try_timer = timer
        self.out.append(timer)

    def _start_shadows(self, action: ForwardAction, headers: HeaderMap, end_stream: bool) -> None:
        stream = self.stream
        clusters = stream.ctx.clusters
        for policy in action.mirrors:
            if (stream.random_value % policy.denominator) >= policy.numerator:
                continue
            cluster = clusters.get(policy.cluster)
            if cluster is None or not cluster.can_start_request():
                continue
            host = cluster.choose_host()
            if host is None:
                continue
            copy = headers.copy()
            if not policy.disable_shadow_host_suffix_append:
                authority = copy.get(b":authority") or b""
                copy.set(b":authority", _shadow_authority(authority))
            shadow = _Attempt(self, cluster, host, copy, end_stream, True, self.worker.now)
            if self.shadows is None:
                self.shadows = []
            self.shadows.append(shadow)
            self.out.append(StartUpstream(shadow))

    def _arm_global_timer(self) -> None:
        action = self.action
        if action is not None and action.timeout is not None and self.global_timer is None \
                and not self.stream.done and not self.response_started:
            self.global_timer = Timer(action.timeout, self._on_global_timeout)
            self.out.append(self.global_timer)

    def _on_request_complete(self) -> None:
        if self.request_complete:
            return
        self.request_complete = True
        self._arm_global_timer()
        attempt = self.attempt
        if attempt is not None and attempt.per_try_timer is None and not attempt.done:
            self._start_per_try_timer(attempt)
        if self.shadows:
            for shadow in self.shadows:
                shadow.router = None  # mirrors run on their own once the request is fully sent

    def _cancel_global_timer(self) -> None:
        timer = self.global_timer
        if timer is not None:
            timer.cancel()
            self.global_timer = None

    def _cancel_backoff_timer(self) -> None:
        timer = self.backoff_timer
        if timer is not None:
            timer.cancel()
            self.backoff_timer = None

    def _end_attempt(self, attempt: _Attempt, reset: bool) -> None:
        timer = attempt.per_try_timer
        if timer is not None:
            timer.cancel()
            attempt.per_try_timer = None
        if reset:
            attempt.done = True
            attempt.release()
            self.out.append(ResetUpstream(attempt))

    # --- upstream events ------------------------------------------------------------------------

    def on_pool_ready(self, local_address: tuple[str, int] | None) -> None:
        self.stream.info.upstream_local_address = local_address

    def on_upstream_headers(self, attempt: _Attempt, headers: HeaderMap, status: int, end_stream: bool) -> None:
        retry = self.retry_policy
        if retry is not None and self.retries_left > 0 and retry.retriable_response(status, headers):
            if self._schedule_retry(attempt, reset=not end_stream):
                return
        if attempt.per_try_timer is not None:
            self._end_attempt(attempt, reset=False)
        attempt.cluster.stats.count_response(status)  # per-code stats count forwarded responses only
        if retry is not None:
            if self.retries_left == 0 and self.attempts > 1 and retry.retriable_response(status, headers):
                self.stream.info.add_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
            self.buffering = False
            self.retry_buffer = None
        attempt.response_started = True
        self.response_started = True
        info = self.stream.info
        now = info.first_upstream_rx_at = self.worker.now
        if end_stream:
            info.last_upstream_rx_at = now
            if self.global_timer is not None:
                self._cancel_global_timer()
        if self.attempts > 1 and self.cluster is not None and status < 500:
            self.cluster.stats.rq_retry_success.value += 1
        if not self.config.suppress_envoy_headers:
            # a regular header: appending keeps the pseudo-headers in front
            headers.items().append((b"x-envoy-upstream-service-time", b"%d" % int((now - attempt.started_at) * 1000)))
        route = self.route
        if route is not None:
            response_ops = route.response_ops
            weighted = self.weighted
            if response_ops or weighted is not None:
                request = self.request_headers
                if weighted is not None and weighted.response_ops:
                    weighted.response_ops.apply(headers, info, request, headers)
                for ops in response_ops:
                    ops.apply(headers, info, request, headers)
            if route.virtual_host.include_attempt_count_in_response:
                headers.set(b"x-envoy-attempt-count", str(self.attempts).encode())
        self.stream.encode_headers(headers, end_stream)

    def on_upstream_data(self, data: bytes, end_stream: bool) -> None:
        if end_stream:
            self.stream.info.last_upstream_rx_at = self.worker.now
            timer = self.global_timer
            if timer is not None:
                timer.cancel()
                self.global_timer = None
        self.stream.encode_bytes(data, end_stream)

    def on_upstream_trailers(self, trailers: HeaderMap) -> None:
        self.stream.info.last_upstream_rx_at = self.worker.now
        self._cancel_global_timer()
        self.stream.encode_trailers(trailers)

    def on_attempt_failure(self, attempt: _Attempt, reason: str, transport_failure: str,
                           connect_failure: bool) -> None:
        """The attempt ended without a (complete) response."""
        self._end_attempt(attempt, reset=False)
        info = self.stream.info
        if attempt.response_started or self.response_started:
            info.add_flag(ResponseFlag.UPSTREAM_REMOTE_RESET)
            self.attempt = None
            self.cb.reset_stream("upstream_reset_after_response_started{" + reason + "}")
            return
        if transport_failure:
            info.upstream_transport_failure_reason = transport_failure
        retry = self.retry_policy
        if (reason != OVERFLOW and retry is not None and self.retries_left > 0
                and retry.retriable_reset(connect_failure and reason in (CONNECTION_FAILURE, CONNECTION_TIMEOUT))):
            if self._schedule_retry(attempt, reset=False):
                return
        if reason == OVERFLOW:
            info.add_flag(ResponseFlag.UPSTREAM_OVERFLOW)
        elif connect_failure:
            info.add_flag(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
        else:
            info.add_flag(ResponseFlag.UPSTREAM_CONNECTION_TERMINATION)
        if self.attempts > 1 and retry is not None and self.retries_left == 0:
            info.add_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
        self.attempt = None
        self._upstream_failure_reply(reason, transport_failure)

    def _upstream_failure_reply(self, reason: str, transport_failure: str) -> None:
        self._cancel_global_timer()
        body, details, headers = upstream_failure_reply(reason, transport_failure, self.attempts > 1,
                                                        self.config.suppress_envoy_headers)
        self._local_reply(503, body, details, headers)

    def _schedule_retry(self, attempt: _Attempt, reset: bool) -> bool:
        cluster = self.cluster
        retry = self.retry_policy
        if cluster is None or retry is None:
            return False
        if not self.retried and not cluster.can_retry():
            cluster.stats.rq_retry_overflow.value += 1
            return False
        if not self.retried:
            self.retried = True
            cluster.retries_active += 1
        self.retries_left -= 1
        cluster.stats.rq_retry.value += 1
        self._end_attempt(attempt, reset=reset)
        if not reset:
            attempt.done = True
            attempt.release()
        self.attempt = None
        exponent = min(self.attempts, 30)
        ceiling = min(retry.base_interval * ((1 << exponent) - 1), retry.max_interval)
        delay = self.stream.ctx.worker.rng.random() * ceiling
        self.backoff_timer = Timer(delay, self._on_backoff_done)
        self.out.append(self.backoff_timer)
        return True

    def _on_backoff_done(self) -> None:
        self.backoff_timer = None
        if self.stream.done or self.response_started:
            return
        self._start_attempt(self.headers_only)

    def _on_per_try_timeout(self, attempt: _Attempt) -> None:
        if attempt.done or self.attempt is not attempt or self.response_started:
            return
        attempt.per_try_timer = None
        cluster = attempt.cluster
        cluster.stats.rq_per_try_timeout.value += 1
        cluster.record_response(attempt.host, 504, self.worker.now)
        retry = self.retry_policy
        if retry is not None and self.retries_left > 0 and retry.retriable_reset(False):
            if self._schedule_retry(attempt, reset=True):
                return
        self._end_attempt(attempt, reset=True)
        self.attempt = None
        self._timeout_reply("upstream_per_try_timeout")

    def _on_global_timeout(self) -> None:
        self.global_timer = None
        if self.stream.done:
            return
        cluster = self.cluster
        if cluster is not None:
            cluster.stats.rq_timeout.value += 1
        attempt = self.attempt
        if attempt is not None:
            if not attempt.done and cluster is not None:
                cluster.record_response(attempt.host, 504, self.worker.now)
            self._end_attempt(attempt, reset=not attempt.done)
            self.attempt = None
        self._cancel_backoff_timer()
        if self.response_started:
            self.stream.info.add_flag(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
            self.cb.reset_stream("upstream_response_timeout")
            return
        self._timeout_reply("upstream_response_timeout")

    def _timeout_reply(self, details: str) -> None:
        self._cancel_global_timer()
        self.stream.info.add_flag(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
        self._local_reply(504, b"upstream request timeout", details)


def upstream_failure_reply(reason: str, transport_failure: str, retried: bool, suppress_envoy_headers: bool,
                           ) -> tuple[bytes, str, list[tuple[bytes, bytes]] | None]:
    """Envoy's 503 for an upstream that failed before its response: body, response code details, extra headers."""
    if retried:
        body = b"upstream connect error or disconnect/reset before headers. retried and the latest reset reason: "
    else:
        body = b"upstream connect error or disconnect/reset before headers. reset reason: "
    body += reason.encode()
    if transport_failure:
        body += b", transport failure reason: " + transport_failure.encode()
    if reason == OVERFLOW:
        return body, "overflow", None if suppress_envoy_headers else [(b"x-envoy-overloaded", b"true")]
    return body, "upstream_reset_before_response_started{" + reason.replace(" ", "_") + "}", None


def _shadow_authority(authority: bytes) -> bytes:
    head, sep, tail = authority.rpartition(b":")
    if sep and tail.isdigit() and not authority.endswith(b"]"):
        return head + b"-shadow:" + tail
    return authority + b"-shadow"


def build_router(config: Any, context: FilterBuildContext) -> Any:
    """Config factory for ``envoy.extensions.filters.http.router.v3.Router``."""
    from ._config_support import check_supported

    check_supported(config)
    router_config = RouterConfig(config.suppress_envoy_headers)
    # a partial, not a closure: one Python frame less for every stream
    create = functools.partial(RouterFilter, config=router_config)
    create.filter_class = RouterFilter  # type: ignore[attr-defined]
    return create


register_http_filter(ROUTER_TYPE, build_router, terminal=True)
