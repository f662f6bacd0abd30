# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The fast lane: body-less HTTP/1.1 requests on router-only listeners, served in typed Cython.

Why a second request path: the full path (codec -> ``HttpStream`` -> filter chain ->
router -> pool) is general, and each request pays for that generality in Python
objects. For the commonest request - no body, no filter but the router, a route
to one cluster with nothing to rewrite or retry - this module does the same work on
bytes: it checks and copies the request head once, applies the connection manager's
and router's header rules (``x-forwarded-proto``, ``x-request-id``,
``x-envoy-expected-rq-timeout-ms``; ``date``, ``server``,
``x-envoy-upstream-service-time``, hop-by-hop removal), and forwards the response with
its own framing. Connections, host choice, circuit breakers, outlier detection and
stats are the full path's own objects.

Anything else goes to the full path: the connection is handed to a
``DownstreamConnection`` with the bytes of the request not yet served, at a request
boundary, and stays there. Local replies (connect failures, timeouts, resets before
the response) are handed over too, so they come out exactly as the full path makes
them. ``_lane_plan`` decides which listeners and routes qualify.

Exists only compiled (``make native``); without it every connection takes the full path.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp, memcpy

import logging
import os

from ._downstream import DownstreamConnection
from ._h1 import status_line
from ._h2 import PREFACE
from ._headers import HeaderMap
from ._lane_plan import SERVER_OVERWRITE, SERVER_PASS_THROUGH, lane_plan
from ._router import upstream_failure_reply
from ._sockets import close_transport, set_no_delay
from ._stats import add_snapshot_hook
from ._upstream_sink import CONNECTION_TERMINATION, CONNECTION_TIMEOUT, OVERFLOW, PROTOCOL_ERROR

cdef int _OVERWRITE = SERVER_OVERWRITE
cdef int _PASS_THROUGH = SERVER_PASS_THROUGH

DEF MAX_FIELDS = 128

# character classes: 1 = tchar (header names, methods), 2 = allowed in a field value, 4 = request-target
cdef unsigned char CLASS[256]
cdef unsigned char LOWER[256]
cdef const char* HEX = b"0123456789abcdef"
cdef const char* VARIANT = b"89ab89ab89ab89ab"


cdef void _init_tables():
    cdef int c
    tchar = b"!#$%&'*+-.^_`|~"
    for c in range(256):
        CLASS[c] = 0
        LOWER[c] = c
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in tchar:
            CLASS[c] |= 1
        if c == 9 or (32 <= c <= 126) or c >= 128:
            CLASS[c] |= 2
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c in b"-._~:/?#[]@!$&'()*+,;=%":
            CLASS[c] |= 4  # what RFC 3986 allows in a request target; anything else is the codec's to judge
        if 65 <= c <= 90:
            LOWER[c] = c + 32


_init_tables()

# the header fields the lane treats specially, by name; any other is forwarded as it is
DEF F_OTHER = 0
DEF F_HOST = 1
DEF F_CONTENT_LENGTH = 2
DEF F_CONNECTION = 3
DEF F_TRANSFER_ENCODING = 4
DEF F_HOP = 5  # keep-alive, proxy-connection, upgrade: hop-by-hop
DEF F_TE = 6
DEF F_EXPECT = 7
DEF F_REQUEST_ID = 8
DEF F_FORWARDED_PROTO = 9
DEF F_DATE = 10
DEF F_SERVER = 11
DEF F_ENVOY = 12  # x-envoy-*
DEF N_NAMES = 13

cdef const char* _NAMES[N_NAMES]
cdef Py_ssize_t _NAME_LENGTHS[N_NAMES]
cdef int _NAME_KINDS[N_NAMES]
_names = (b"host", b"content-length", b"connection", b"transfer-encoding", b"keep-alive", b"proxy-connection",
          b"upgrade", b"te", b"expect", b"x-request-id", b"x-forwarded-proto", b"date", b"server")
_kinds = (F_HOST, F_CONTENT_LENGTH, F_CONNECTION, F_TRANSFER_ENCODING, F_HOP, F_HOP, F_HOP, F_TE, F_EXPECT,
          F_REQUEST_ID, F_FORWARDED_PROTO, F_DATE, F_SERVER)
for _index in range(N_NAMES):
    _NAMES[_index] = _names[_index]  # the tuple keeps the bytes alive for the module's lifetime
    _NAME_LENGTHS[_index] = len(_names[_index])
    _NAME_KINDS[_index] = _kinds[_index]


cdef inline int _field(const char* p, Py_ssize_t n):
    """Which special field a header name is (case-insensitive), or F_OTHER."""
    cdef int i
    for i in range(N_NAMES):
        if _lower_eq(p, n, _NAMES[i], _NAME_LENGTHS[i]):
            return _NAME_KINDS[i]
    if n >= 8 and _lower_eq(p, 8, b"x-envoy-", 8):
        return F_ENVOY
    return F_OTHER

# outcomes of a request head the lane does not serve
DEF SERVE = 0
DEF HAND_OFF = -1

cdef bytes _PREFACE = PREFACE
cdef bytes _CRLF2 = b"\r\n\r\n"
cdef object _STATUS_LINES = {}
cdef object _MISSING = object()


cdef bytes _status_line(int status):
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = status_line(status)
    return <bytes>line


cdef inline bint _eq(const char* p, Py_ssize_t n, const char* name, Py_ssize_t m):
    return n == m and memcmp(p, name, m) == 0


cdef class _Ids:
    """Random version-4 UUIDs for ``x-request-id``, formatted from a buffer of OS randomness."""

    cdef bytes pool
    cdef Py_ssize_t used

    def __init__(self):
        self.pool = b""
        self.used = 0

    cdef void write(self, char* out):
        cdef Py_ssize_t i
        cdef const unsigned char* r
        cdef char text[32]
        if self.used + 16 > PyBytes_GET_SIZE(self.pool):
            self.pool = os.urandom(4096)
            self.used = 0
        r = <const unsigned char*>PyBytes_AS_STRING(self.pool) + self.used
        self.used += 16
        for i in range(16):
            text[2 * i] = HEX[r[i] >> 4]
            text[2 * i + 1] = HEX[r[i] & 15]
        # the layout of _hcm_headers.new_request_id: 8-4-4xxx-Vxxx-12
        memcpy(out, text, 8)
        out[8] = 45
        memcpy(out + 9, text + 8, 4)
        out[13] = 45
        out[14] = 52
        memcpy(out + 15, text + 13, 3)
        out[18] = 45
        out[19] = VARIANT[(<unsigned char>text[16]) & 15]
        memcpy(out + 20, text + 17, 3)
        out[23] = 45
        memcpy(out + 24, text + 20, 12)


cdef _Ids _IDS = _Ids()
_log = logging.getLogger("wasmesh.sidecar")

DEF MAX_BOUNDS = 32
DEF SWEEP_INTERVAL = 0.004  # the timer wheel's resolution, so timeouts fire as promptly as the full path's


cdef class _Histogram:
    """A histogram's observations kept as C counts until the next flush into the ``_stats.Histogram``."""

    cdef object target
    cdef double bounds[MAX_BOUNDS]
    cdef long long counts[MAX_BOUNDS + 1]
    cdef int nbounds
    cdef double total
    cdef long long count

    def __init__(self, target):
        self.target = target
        bounds = target.bounds
        self.nbounds = min(len(bounds), MAX_BOUNDS)
        for i in range(self.nbounds):
            self.bounds[i] = bounds[i]

    cdef inline void observe(self, double value):
        cdef int i = 0
        while i < self.nbounds and self.bounds[i] < value:  # bisect_left, as _stats.Histogram
            i += 1
        self.counts[i] += 1
        self.total += value
        self.count += 1

    cdef void flush(self):
        cdef int i
        if self.count == 0:
            return
        target = self.target
        counts = target.counts
        for i in range(self.nbounds + 1):
            if self.counts[i]:
                counts[i] += self.counts[i]
                self.counts[i] = 0
        target.total += self.total
        target.count += self.count
        self.total = 0.0
        self.count = 0


cdef class _Tally:
    """The stats one (listener context, cluster) pair of lane requests moves, as C counts.

    Why: a Python counter costs an attribute read and write per request, and a request moves
    about twenty. They are added to the real stats before every stats snapshot (``/stats``,
    Prometheus, the supervisor's merge), so readers see exact numbers; the gauges the data path
    itself decides on (a cluster's active requests, a host's) are never deferred.
    """

    cdef object hcm, cluster_stats, served_counter  # served: ``http.<prefix>.fast_lane.rq_total``
    cdef long long started, ended, hcm_classes[10]  # started: requests the lane answers itself
    cdef long long c_started, c_ended, by_status[1000]
    cdef _Histogram hcm_time, cluster_time

    def __init__(self, hcm, cluster_stats, served_counter):
        self.hcm = hcm
        self.cluster_stats = cluster_stats
        self.served_counter = served_counter
        self.hcm_time = _Histogram(hcm.rq_time)
        self.cluster_time = _Histogram(cluster_stats.rq_time)

    cdef void flush(self):
        cdef long long n
        cdef int i
        hcm = self.hcm
        n = self.started
        if n:
            self.served_counter.value += n
            hcm.rq_total.value += n
            hcm.rq_http1_total.value += n
            hcm.router_rq_total.value += n
        if n or self.ended:
            hcm.rq_active.value += n - self.ended
            hcm.rq_completed.value += self.ended
        self.started = self.ended = 0
        for i in range(1, 10):
            if self.hcm_classes[i]:
                hcm.count_response(i * 100, self.hcm_classes[i])
                self.hcm_classes[i] = 0
        cs = self.cluster_stats
        n = self.c_started
        if n or self.c_ended:
            cs.rq_total.value += n
            cs.rq_active.value += n - self.c_ended
            cs.rq_completed.value += self.c_ended
        self.c_started = self.c_ended = 0
        for i in range(100, 1000):
            if self.by_status[i]:
                cs.count_response(i, self.by_status[i])
                self.by_status[i] = 0
        self.hcm_time.flush()
        self.cluster_time.flush()


# (hcm rq_total counter, cluster rq_total counter) -> _Tally: the counters stand for their stat names,
# which outlive reloads, so a new plan's contexts and clusters add to the same tallies
cdef dict _TALLIES = {}


cdef _Tally _tally_for(ctx, cluster):
    hcm = ctx.stats
    cs = cluster.stats
    key = (hcm.rq_total, cs.rq_total)
    found = _TALLIES.get(key)
    if found is None:
        found = _TALLIES[key] = _Tally(hcm, cs, ctx.worker.stats.counter(
            f"http.{ctx.hcm.stat_prefix}.fast_lane.rq_total"))
    return <_Tally>found


def flush_stats(store=None):
    """Add every lane count to the real stats (a ``_stats`` snapshot hook)."""
    for tally in list(_TALLIES.values()):
        (<_Tally>tally).flush()


add_snapshot_hook(flush_stats)


cdef class _Deadlines:
    """Route timeouts of one worker's lane exchanges: one list swept every few ms, no timer per request."""

    cdef Exchange head
    cdef object loop, runtime, handle

    def __init__(self, loop, runtime):
        self.loop = loop
        self.runtime = runtime
        self.handle = None

    cdef void add(self, Exchange e):
        e.prev = None
        e.next = self.head
        if self.head is not None:
            self.head.prev = e
        self.head = e
        e.armed = True
        if self.handle is None:
            self.handle = self.loop.call_later(SWEEP_INTERVAL, self.sweep)

    cdef void remove(self, Exchange e):
        if not e.armed:
            return
        e.armed = False
        if e.prev is not None:
            e.prev.next = e.next
        else:
            self.head = e.next
        if e.next is not None:
            e.next.prev = e.prev
        e.prev = e.next = None

    def sweep(self):
        cdef Exchange e, nxt
        cdef double now
        self.handle = None
        if self.head is None:
            return
        now = self.runtime.tick()
        expired = []
        e = self.head
        while e is not None:
            nxt = e.next
            if e.deadline <= now:
                self.remove(e)
                expired.append(e)
            e = nxt
        for e in expired:
            try:
                e.on_timeout()
            except Exception:  # one failing timeout must not lose the others
                _log.exception("lane timeout failed")
        if self.head is not None and self.handle is None:
            self.handle = self.loop.call_later(SWEEP_INTERVAL, self.sweep)


cdef dict _DEADLINES = {}  # id(worker) -> _Deadlines (workers live as long as their process)


cdef _Deadlines _deadlines_for(worker):
    found = _DEADLINES.get(id(worker))
    if found is None:
        found = _DEADLINES[id(worker)] = _Deadlines(worker.loop, worker.runtime)
    return <_Deadlines>found


cdef class _Fast:
    """A ``LanePlan``'s per-request facts as C fields (read on every request, so not as Python attributes)."""

    cdef readonly object plan, ctx, server_name
    cdef readonly dict by_authority
    cdef readonly bint underscores_ok, generate_request_id, suppress_envoy_headers
    cdef readonly int server_mode
    cdef readonly Py_ssize_t max_headers, max_head_bytes

    def __init__(self, plan):
        self.plan = plan
        self.ctx = plan.ctx
        self.server_name = plan.server_name
        self.by_authority = plan.by_authority
        self.underscores_ok = plan.underscores_ok
        self.generate_request_id = plan.generate_request_id
        self.suppress_envoy_headers = plan.suppress_envoy_headers
        self.server_mode = plan.server_mode
        self.max_headers = plan.max_headers
        self.max_head_bytes = plan.max_head_bytes


cdef object _fast_for(ctx):
    """The lane's view of a listener context, made on its first request; False: the lane is ruled out."""
    try:
        plan = lane_plan(ctx)
    except Exception:  # a configuration this module did not foresee: the full path serves it
        _log.exception("fast lane: cannot plan listener %s; the full path serves it", ctx.listener.name)
        plan = None
    found = _Fast(plan) if plan is not None else False
    ctx.lane = found
    return found


cdef class LaneConnection:
    """One client connection served by the lane until something needs the full path."""

    cdef public object worker, listener, transport, ctx, stream, codec
    cdef public double last_activity, head_started
    cdef public int connection_id
    cdef public bint closed, close_after  # close_after: what the worker's maintenance may set
    cdef bint sniffed, counted_http1, handed
    cdef bytes held  # bytes that arrived while an exchange was in flight
    cdef _Deadlines deadlines
    cdef Exchange exchange

    def __init__(self, worker, listener):
        self.worker = worker
        self.listener = listener
        self.stream = None  # what the worker's maintenance reads: the exchange in flight
        self.codec = None
        self.held = b""
        self.closed = False
        self.handed = False
        self.deadlines = _deadlines_for(worker)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        worker = self.worker
        ctx = self.listener.ctx
        self.ctx = ctx
        self.connection_id = worker.runtime.new_connection_id()
        set_no_delay(transport)
        transport.set_write_buffer_limits(high=ctx.listener.buffer_limit)
        self.last_activity = worker.runtime.tick()
        ctx.connection_opened()
        worker.connections.add(self)
        codec = ctx.hcm.codec
        self.sniffed = codec != "AUTO"
        if codec == "HTTP2":
            self._hand_off(b"")
        elif codec == "HTTP1":
            ctx.stats.cx_http1_total.value += 1
            self.counted_http1 = True

    def data_received(self, bytes data):
        if self.handed or self.closed:
            return
        if self.exchange is not None:
            # pipelined: held until the response in flight is complete (as the full path does)
            self.held += data
            self.transport.pause_reading()
            return
        if self.held:
            data = self.held + data
            self.held = b""
        try:
            self._serve(data)
        except Exception:
            # a fault in the lane must cost at most this connection, and not even that when no
            # request has gone upstream yet: then the full path takes it from these bytes
            _log.exception("fast lane failed on a request")
            if self.handed or self.closed:
                return
            if self.exchange is None:
                self._hand_off(data)
            else:
                self.close(False)

    def connection_lost(self, exc):
        if self.handed:
            return
        self.closed = True
        worker = self.worker
        worker.connections.discard(self)
        self.ctx.connection_closed()
        exchange = self.exchange
        if exchange is not None:
            worker.runtime.tick()
            exchange.downstream_reset()

    def eof_received(self):
        return None

    def pause_writing(self):
        exchange = self.exchange
        if exchange is not None:
            exchange.pause_upstream(True)

    def resume_writing(self):
        exchange = self.exchange
        if exchange is not None:
            exchange.pause_upstream(False)

    # --- what the worker calls ----------------------------------------------------------------

    def close(self, graceful=False):
        if self.closed or self.handed:
            return
        self.closed = True
        close_transport(self.transport, graceful, self.ctx.hcm.delayed_close_timeout, self.worker.loop)

    # --- the lane -----------------------------------------------------------------------------

    cdef void _serve(self, bytes data):
        cdef Py_ssize_t end
        if not self.sniffed:
            seen = data[:len(_PREFACE)]
            if _PREFACE.startswith(seen):
                self._hand_off(data)  # HTTP/2 prior knowledge (or too little to tell): the full path sniffs
                return
            self.sniffed = True
        if not self.counted_http1:
            self.counted_http1 = True
            self.ctx.stats.cx_http1_total.value += 1
        end = data.find(_CRLF2)
        if end < 0 or end + 4 != PyBytes_GET_SIZE(data):
            # a head split over reads, a body, or pipelined requests: the full path's codec handles them
            self._hand_off(data)
            return
        now = self.worker.runtime.tick()
        self.last_activity = now
        ctx = self.listener.ctx
        plan = ctx.lane
        if plan is None:
            plan = _fast_for(ctx)
        if plan is False:
            self._hand_off(data)
            return
        cdef Exchange exchange = Exchange.__new__(Exchange)
        if exchange.parse(self, <_Fast>plan, data, end) != SERVE:
            self._hand_off(data)
            return
        self.exchange = exchange
        self.stream = exchange
        exchange.start(now)

    cdef void _hand_off(self, bytes data):
        """The rest of this connection is the full path's, from ``data`` on."""
        conn = self._adopted()
        if data:
            conn.data_received(data)

    cdef object _adopted(self):
        """A ``DownstreamConnection`` takes this connection over (counted in fast_lane.handoff_total)."""
        self.handed = True
        self._clear_exchange()
        worker = self.worker
        worker.connections.discard(self)
        worker.stats.counter(f"http.{self.listener.ctx.hcm.stat_prefix}.fast_lane.handoff_total").value += 1
        conn = DownstreamConnection.adopt(worker, self.listener, self.transport, self.ctx, self.connection_id,
                                          self.last_activity, self.sniffed)
        self.transport.set_protocol(conn)
        return conn

    cdef inline void _clear_exchange(self):
        self.exchange = None
        self.stream = None

    cdef void exchange_done(self, bint close):
        self._clear_exchange()
        self.last_activity = self.worker.runtime.now
        if close or self.worker.draining:
            self.close(True)
            return
        held = self.held
        if held:
            self.held = b""
            self.transport.resume_reading()
            self._serve(held)


cdef class _Complete:
    """The ``dec`` the worker's maintenance reads: a lane request is complete once its head is read."""

    cdef public bint complete

    def __init__(self):
        self.complete = True


cdef _Complete _DEC_COMPLETE = _Complete()


cdef class _Info:
    cdef public double start_monotonic


cdef class Exchange:
    """One request and its response on the lane; also the pool's sink for the upstream side."""

    # the UpstreamSink interface
    cdef public object cluster, host, edge, headers
    cdef public bint end_stream
    cdef public bytes raw_request
    # what the worker's maintenance reads on a connection's ``stream``
    cdef public bint done, response_started
    cdef public object ctx, dec, info

    cdef LaneConnection conn
    cdef object target, method, target_path, authority, runtime
    cdef Exchange prev, next  # the worker's deadline list
    cdef bint armed
    cdef double deadline
    cdef _Tally tally
    cdef _Fast fast
    cdef bytes head
    cdef double started
    cdef bint head_request, close_after, counted, reusable
    # response parsing state
    cdef bytes rbuf
    cdef int rstate  # 0 head, 1 content-length body, 2 chunked body, 3 close-delimited body, 4 done
    cdef long long remaining
    cdef int cstate  # chunked: 0 size line, 2 data, 3 the CRLF after data, 4 trailer lines

    cdef int parse(self, LaneConnection conn, _Fast plan, bytes data, Py_ssize_t end) except -3:
        """Check the request head and build the upstream request; HAND_OFF for anything unusual."""
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = end + 2  # through the CRLF of the last header line
        cdef Py_ssize_t i = 0, j, k, method_end, target_start, target_end
        cdef Py_ssize_t host_start = -1, host_len = 0
        cdef Py_ssize_t fields[MAX_FIELDS][4]
        cdef int nfields = 0, max_headers
        cdef bint has_length = False, has_request_id = False, has_proto = False, close = False
        cdef bint underscores_ok = plan.underscores_ok
        cdef Py_ssize_t ns, nl, vs, ve, vt
        cdef _Line line
        cdef int kind
        if end > plan.max_head_bytes:
            return HAND_OFF
        max_headers = <int>min(plan.max_headers, MAX_FIELDS)
        # request line: method SP origin-form SP HTTP/1.1
        while i < n and CLASS[<unsigned char>p[i]] & 1:
            i += 1
        if i == 0 or i >= n or p[i] != 32:
            return HAND_OFF
        method_end = i
        if not _known_method(p, i):
            return HAND_OFF
        i += 1
        target_start = i
        if i >= n or p[i] != 47:  # '/'
            return HAND_OFF
        while i < n and CLASS[<unsigned char>p[i]] & 4:
            i += 1
        target_end = i
        if i + 11 > n or memcmp(p + i, b" HTTP/1.1\r\n", 11) != 0:
            return HAND_OFF
        i += 11
        # header fields up to the empty line
        while i < n:
            i = _field_line(p, i, n, &line)
            if i < 0:
                return HAND_OFF
            ns, nl, vs, ve, vt = line.ns, line.nl, line.vs, line.ve, line.vt
            if nfields >= max_headers - 1:
                return HAND_OFF
            # what the connection manager does to this field
            if not underscores_ok and memchr(p + ns, 95, nl) != NULL:
                return HAND_OFF
            kind = _field(p + ns, nl)
            if kind == F_HOST:
                if host_start >= 0:
                    return HAND_OFF
                host_start = vs
                host_len = ve - vs
                continue
            if kind == F_CONTENT_LENGTH:
                if not _eq(p + vs, vt - vs, b"0", 1):
                    return HAND_OFF
                has_length = True
            elif kind == F_CONNECTION:
                if _lower_eq(p + vs, vt - vs, b"close", 5):
                    close = True
                elif not _lower_eq(p + vs, vt - vs, b"keep-alive", 10):
                    return HAND_OFF
                continue  # hop-by-hop
            elif kind == F_REQUEST_ID:
                has_request_id = True
            elif kind == F_FORWARDED_PROTO:
                has_proto = True
            elif kind != F_OTHER and kind != F_DATE and kind != F_SERVER:
                return HAND_OFF  # framing, hop-by-hop, te, expect, x-envoy-*: the full path's rules
            fields[nfields][0] = ns
            fields[nfields][1] = nl
            fields[nfields][2] = vs
            fields[nfields][3] = ve - vs
            nfields += 1
        if host_start < 0:
            return HAND_OFF
        # the route: a plain prefix or exact path to a cluster, else the full path decides
        authority = data[host_start:host_start + host_len]
        path = data[target_start:target_end]
        ctx = plan.ctx
        entries = plan.by_authority.get(authority, _MISSING)
        if entries is _MISSING:
            entries = plan.plan.entries(authority)
        if entries is None:
            return HAND_OFF
        target = None
        path_only = None
        for kind, value, candidate in entries:
            if kind == 0:
                if path.startswith(value):
                    target = candidate
                    break
            elif kind == 1:
                if path_only is None:
                    path_only = path.partition(b"?")[0]
                if path_only == value:
                    target = candidate
                    break
            else:
                return HAND_OFF
        if target is None:
            return HAND_OFF  # no route, or one only the full path serves
        cluster = target.cluster
        if cluster.rq_active >= cluster.thresholds.max_requests:
            return HAND_OFF  # the full path answers the overflow
        hosts = cluster._lb_hosts
        if not hosts:
            return HAND_OFF  # the full path answers "no healthy upstream"
        if len(hosts) == 1 and not cluster._panic:
            host = hosts[0]  # one endpoint: every policy picks it
        else:
            host = cluster.choose_host()
        # the upstream request, in the full path's order: host first, the client's fields, then ours
        method = data[:method_end]
        expected = target.expected_timeout_ms
        cdef Py_ssize_t cap = end + 200 + (PyBytes_GET_SIZE(expected) if expected is not None else 0)
        cdef char* out = <char*>malloc(cap)
        cdef Py_ssize_t o = 0
        if out == NULL:
            raise MemoryError()
        try:
            memcpy(out, p, target_end)
            o = target_end
            memcpy(out + o, b" HTTP/1.1\r\nhost: ", 17)
            o += 17
            memcpy(out + o, p + host_start, host_len)
            o += host_len
            out[o] = 13
            out[o + 1] = 10
            o += 2
            for k in range(nfields):
                ns = fields[k][0]
                nl = fields[k][1]
                for j in range(nl):
                    out[o + j] = LOWER[<unsigned char>p[ns + j]]
                o += nl
                out[o] = 58
                out[o + 1] = 32
                o += 2
                memcpy(out + o, p + fields[k][2], fields[k][3])
                o += fields[k][3]
                out[o] = 13
                out[o + 1] = 10
                o += 2
            if not has_proto:
                memcpy(out + o, b"x-forwarded-proto: http\r\n", 25)
                o += 25
            if not has_request_id and plan.generate_request_id:
                memcpy(out + o, b"x-request-id: ", 14)
                o += 14
                _IDS.write(out + o)
                o += 36
                out[o] = 13
                out[o + 1] = 10
                o += 2
            if expected is not None:
                memcpy(out + o, b"x-envoy-expected-rq-timeout-ms: ", 32)
                o += 32
                memcpy(out + o, PyBytes_AS_STRING(expected), PyBytes_GET_SIZE(expected))
                o += PyBytes_GET_SIZE(expected)
                out[o] = 13
                out[o + 1] = 10
                o += 2
            if not has_length and (method == b"POST" or method == b"PUT" or method == b"PATCH"):
                memcpy(out + o, b"content-length: 0\r\n", 19)
                o += 19
            out[o] = 13
            out[o + 1] = 10
            o += 2
            self.raw_request = PyBytes_FromStringAndSize(out, o)
        finally:
            free(out)
        self.conn = conn
        self.fast = plan
        self.ctx = ctx
        self.runtime = ctx.runtime
        self.target = target
        self.cluster = cluster
        self.host = host
        self.end_stream = True
        self.headers = None
        self.method = method
        self.target_path = path
        self.authority = authority
        self.head = data
        self.head_request = method == b"HEAD"
        self.close_after = close
        self.dec = _DEC_COMPLETE
        self.rbuf = b""
        return SERVE

    cdef void start(self, double now):
        ctx = self.ctx
        cluster = self.cluster
        host = self.host
        self.started = now
        cdef _Info info = _Info.__new__(_Info)
        info.start_monotonic = now
        self.info = info
        ctx.runtime.active_streams += 1
        target = self.target
        tally = target.tally
        if tally is None:
            tally = target.tally = _tally_for(ctx, cluster)
        self.tally = <_Tally>tally
        self.tally.started += 1
        self.tally.c_started += 1
        host.active_requests += 1
        cluster.rq_active += 1
        self.counted = True
        self.deadline = now + target.timeout
        self.conn.deadlines.add(self)
        worker = self.conn.worker
        pool = host.edge_pool
        if pool is None or pool.cluster is not cluster or pool.worker is not worker:
            pool = worker._pool(cluster, host)
        pool.request(self)

    # --- the UpstreamSink interface -----------------------------------------------------------

    def on_pool_ready(self, local_address):
        pass

    def on_pool_failure(self, reason, transport_failure):
        self._release()
        if reason != OVERFLOW:
            if reason == CONNECTION_TIMEOUT:
                self.cluster.stats.cx_connect_timeout.value += 1
            self.cluster.record_response(self.host, 503, self.ctx.worker.now)
        self._failure_reply(reason, transport_failure)

    def on_reset(self, reason):
        self._release()
        self.cluster.stats.rq_rx_reset.value += 1
        if self.response_started:
            self._abort_downstream()
            return
        self.cluster.record_response(self.host, 503, self.ctx.worker.now)
        self._failure_reply(reason, "")

    def on_response_headers(self, headers, end_stream):
        raise RuntimeError("the lane parses its own responses")

    def on_response_data(self, data, end_stream):
        raise RuntimeError("the lane parses its own responses")

    def on_response_trailers(self, trailers):
        raise RuntimeError("the lane parses its own responses")

    # --- from the upstream connection (``UpstreamConnection`` hands raw bytes here) -------------

    def upstream_data(self, bytes data):
        """Bytes of the response (the upstream connection hands them over while this exchange owns it)."""
        try:
            self._upstream_data(data)
        except Exception:
            _log.exception("fast lane failed on a response")
            if not self.done:
                self._protocol_error()

    cdef void _upstream_data(self, bytes data):
        cdef int result
        if self.done:
            return
        self.conn.worker.runtime.tick()
        if self.rbuf:
            data = self.rbuf + data
            self.rbuf = b""
        if self.rstate == 0:
            result = self._response_head(data)
            if result < 0:
                return
        else:
            self._response_body(data, None)

    def upstream_closed(self):
        """The upstream connection closed: the end of a close-delimited body, or a reset."""
        if self.done:
            return
        self.conn.worker.runtime.tick()
        self.edge = None  # the connection is gone
        if self.rstate == 3:
            self.conn.transport.write(b"0\r\n\r\n")
            self.reusable = False
            self._finish()
            return
        self.on_reset(CONNECTION_TERMINATION)

    cdef int _response_head(self, bytes data) except -3:
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t end = data.find(_CRLF2)
        cdef Py_ssize_t i, ns, nl, vs, ve, vt, n
        cdef _Line line
        cdef int status
        cdef bint http10, have_date = False, have_server = False, chunked = False, keep_alive
        cdef bint has_length = False, conn_close = False, conn_keep = False, te = False
        cdef long long length = -1, value
        cdef int kind
        cdef _Fast plan = self.fast
        cdef int server_mode = plan.server_mode
        if end < 0:
            if size > 65536:
                self._protocol_error()
                return -1
            self.rbuf = data
            return -1
        n = end + 2
        if size < 12 or memcmp(p, b"HTTP/1.", 7) != 0 or (p[7] != 48 and p[7] != 49) or p[8] != 32:
            self._protocol_error()
            return -1
        http10 = p[7] == 48
        for i in range(9, 12):
            if p[i] < 48 or p[i] > 57:
                self._protocol_error()
                return -1
        status = (p[9] - 48) * 100 + (p[10] - 48) * 10 + (p[11] - 48)
        if status < 100 or (p[12] != 32 and p[12] != 13):
            self._protocol_error()
            return -1
        i = 12
        while i < n and p[i] != 13:
            if not CLASS[<unsigned char>p[i]] & 2:
                self._protocol_error()
                return -1
            i += 1
        if i + 1 >= size or p[i + 1] != 10:
            self._protocol_error()
            return -1
        i += 2
        parts = [_status_line(status)]
        append = parts.append
        while i < n:
            i = _field_line(p, i, n, &line)
            if i < 0:
                self._protocol_error()
                return -1
            ns, nl, vs, ve, vt = line.ns, line.nl, line.vs, line.ve, line.vt
            kind = _field(p + ns, nl)
            if kind == F_CONTENT_LENGTH:
                value = _decimal(p + vs, vt - vs)
                if value < 0 or has_length:  # a second content-length is an error, as in llhttp
                    self._protocol_error()
                    return -1
                length = value
                has_length = True
            elif kind == F_CONNECTION:
                if _lower_has(p + vs, vt - vs, b"close", 5):
                    conn_close = True
                if _lower_has(p + vs, vt - vs, b"keep-alive", 10):
                    conn_keep = True
                continue
            elif kind == F_TRANSFER_ENCODING:
                te = True
                chunked = _lower_ends(p + vs, vt - vs, b"chunked", 7)
                continue
            elif kind == F_HOP:
                continue
            elif kind == F_DATE:
                if not have_date:
                    have_date = True
                    append(b"date: " + self.ctx.worker.date.get() + b"\r\n")
                continue
            elif kind == F_SERVER:
                if server_mode == _OVERWRITE:
                    if not have_server:
                        append(b"server: " + plan.server_name + b"\r\n")
                    have_server = True
                    continue
                have_server = True
            append(_lowered(p + ns, nl) + b": " + data[vs:ve] + b"\r\n")
        if 100 <= status < 200:
            # an informational response (there was no upgrade): dropped, the real one follows
            rest = data[end + 4:]
            if rest:
                return self._response_head(rest)
            return -1
        if has_length and te:
            self._protocol_error()
            return -1
        keep_alive = conn_keep if http10 else not conn_close
        now = self.ctx.worker.now
        self.cluster.record_response(self.host, status, now)
        tally = self.tally
        tally.cluster_time.observe((now - self.started) * 1000.0)
        tally.by_status[status] += 1
        if not plan.suppress_envoy_headers:
            append(b"x-envoy-upstream-service-time: %d\r\n" % <long long>((now - self.started) * 1000))
        if not have_date:
            append(b"date: " + self.ctx.worker.date.get() + b"\r\n")
        if not have_server and server_mode != _PASS_THROUGH:
            append(b"server: " + plan.server_name + b"\r\n")
        no_body = self.head_request or status == 204 or status == 304 or (length == 0 and not chunked)
        if no_body:
            self.rstate = 4
            if not has_length and status >= 200 and status != 204 and status != 304 and not self.head_request:
                append(b"content-length: 0\r\n")
        elif chunked:
            self.rstate = 2
            append(b"transfer-encoding: chunked\r\n")
        elif has_length:
            self.rstate = 1
            self.remaining = length
        else:
            self.rstate = 3
            keep_alive = False
            append(b"transfer-encoding: chunked\r\n")
        self.reusable = keep_alive
        if self.close_after or self.conn.worker.draining:
            self.close_after = True
            append(b"connection: close\r\n")
        append(b"\r\n")
        self.response_started = True
        tally.hcm_classes[status // 100] += 1
        head = b"".join(parts)
        if self.rstate == 4:
            if PyBytes_GET_SIZE(data) > end + 4:
                self.reusable = False  # bytes beyond the response: this upstream connection is not trusted again
            self.conn.transport.write(head)
            self._finish()
            return 0
        body = data[end + 4:]
        self._response_body(body, head)
        return 0

    cdef void _response_body(self, bytes data, head):
        """Forward body bytes; ``head`` (the response head, not yet written) goes out in the same write."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        out = head if head is not None else b""
        if self.rstate == 1:
            if size <= self.remaining:
                self.remaining -= size
                out = out + data if out else data
            else:
                out = out + data[:self.remaining]
                self.remaining = 0
                self.reusable = False
            if out:
                self.conn.transport.write(out)
            if self.remaining == 0:
                self._finish()
            return
        if self.rstate == 3:
            if size:
                out = out + _chunk(data)
            if out:
                self.conn.transport.write(out)
            return
        # chunked: decode, and send each piece (a chunk's data within this read) as a chunk of its own,
        # which is what the full path's codec does, so the bytes match wherever the reads split
        pieces = self._dechunk(data)
        if pieces is None:
            if head is not None:
                self.conn.transport.write(head)
            self._protocol_error()
            return
        if pieces:
            out = out + b"".join([_chunk(piece) for piece in pieces])
        if self.rstate == 4:
            out = out + b"0\r\n\r\n"
        if out:
            self.conn.transport.write(out)
        if self.rstate == 4:
            self._finish()

    cdef object _dechunk(self, bytes data):
        """Chunked transfer coding -> the data pieces of this read; None on a framing error.

        Trailers are dropped (as Envoy's HTTP/1 default).
        """
        cdef const char* p = PyBytes_AS_STRING(data)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data), i = 0, take, line_end
        cdef int d
        cdef unsigned char ch
        pieces = []
        while i < size:
            if self.cstate == 0:  # chunk size in hex
                line_end = data.find(b"\n", i)
                if line_end < 0:
                    self.rbuf = data[i:]
                    break
                self.remaining = 0
                take = i
                while take < line_end:
                    ch = p[take]
                    if 48 <= ch <= 57:
                        d = ch - 48
                    elif 97 <= ch <= 102:
                        d = ch - 87
                    elif 65 <= ch <= 70:
                        d = ch - 55
                    else:
                        break
                    self.remaining = self.remaining * 16 + d
                    if self.remaining > (1 << 40):
                        return None
                    take += 1
                if take == i or (p[take] != 59 and p[take] != 13 and p[take] != 32 and p[take] != 9):
                    return None
                i = line_end + 1
                self.cstate = 2 if self.remaining > 0 else 4
            elif self.cstate == 2:  # chunk data
                take = min(self.remaining, size - i)
                pieces.append(data[i:i + take])
                i += take
                self.remaining -= take
                if self.remaining == 0:
                    self.cstate = 3
            elif self.cstate == 3:  # the CRLF after the data
                if size - i < 2:
                    self.rbuf = data[i:]
                    break
                if p[i] != 13 or p[i + 1] != 10:
                    return None
                i += 2
                self.cstate = 0
            else:  # trailer lines, up to the empty one
                line_end = data.find(b"\n", i)
                if line_end < 0:
                    self.rbuf = data[i:]
                    break
                if line_end == i or (line_end == i + 1 and p[i] == 13):
                    i = line_end + 1
                    self.rstate = 4
                    if i < size:
                        self.reusable = False
                    break
                i = line_end + 1
        return pieces

    cdef void _protocol_error(self):
        self.reusable = False
        self._drop_upstream()
        self.on_reset(PROTOCOL_ERROR)

    # --- the end --------------------------------------------------------------------------------

    def on_timeout(self):
        if self.done:
            return
        self._drop_upstream()
        cluster = self.cluster
        cluster.stats.rq_timeout.value += 1
        if self.response_started:
            self._abort_downstream()
            return
        cluster.record_response(self.host, 504, self.ctx.worker.now)
        self._local_reply(504, b"upstream request timeout", "upstream_response_timeout", None)

    def pause_upstream(self, paused):
        edge = self.edge
        if edge is not None:
            edge.sink_pause(self, paused)

    cdef void _drop_upstream(self):
        """Abandon the upstream side (an HTTP/1 request cannot be cancelled: its connection closes)."""
        edge = self.edge
        self.edge = None
        if edge is not None:
            edge.sink_reset(self)
        self._release()

    cdef void _release(self):
        if self.counted:
            self.counted = False
            self.host.active_requests -= 1
            self.cluster.rq_active -= 1
            self.tally.c_ended += 1

    cdef void _finish(self):
        """The response is complete: free the upstream connection, count the stream, serve the next request."""
        if self.done:
            return
        self.done = True
        self.conn.deadlines.remove(self)
        self._release()
        edge = self.edge
        self.edge = None
        if edge is not None:
            edge.exchange_finished(self.reusable)
        self._count_end()
        self.conn.exchange_done(self.close_after)

    cdef void _count_end(self):
        tally = self.tally
        tally.ended += 1
        tally.hcm_time.observe((self.ctx.worker.now - self.started) * 1000.0)
        self._leave_runtime()

    cdef void _leave_runtime(self):
        """As a finished stream: the last one of a retired plan runs its cleanups."""
        runtime = self.runtime
        if runtime.retired:
            runtime.stream_finished()
        else:
            runtime.active_streams -= 1

    cdef void _abort_downstream(self):
        """A failure after the response started: as Envoy, the client connection is reset."""
        if self.done:
            return
        self.done = True
        self.conn.deadlines.remove(self)
        self.ctx.stats.rq_tx_reset.value += 1
        self._count_end()
        self.conn._clear_exchange()
        self.conn.close(False)

    def downstream_reset(self):
        """The client went away mid-exchange."""
        if self.done:
            return
        self.done = True
        self.conn.deadlines.remove(self)
        self._drop_upstream()
        self.ctx.stats.rq_rx_reset.value += 1
        self._count_end()
        self.conn._clear_exchange()

    # what the worker's maintenance may ask of a stream
    def reset(self, reason="local_reset"):
        if self.done:
            return
        self._drop_upstream()
        self._abort_downstream()

    def send_local_reply(self, status, body=b"", headers=(), details=""):
        if self.done:
            return
        self._drop_upstream()
        self._local_reply(status, body, details, list(headers) or None)

    cdef void _failure_reply(self, reason, transport_failure):
        body, details, extra = upstream_failure_reply(reason, transport_failure, False,
                                                      self.fast.suppress_envoy_headers)
        self._local_reply(503, body, details, extra)

    cdef void _local_reply(self, int status, bytes body, str details, extra):
        """Answer from the proxy through the full path, so the reply is exactly the full path's.

        The lane's stream counts are taken back first: the full path's stream counts this request.
        """
        if self.done:
            return
        self.done = True
        self.conn.deadlines.remove(self)
        # taken back: the full path's stream counts this request, except that the router did run
        self.tally.started -= 1
        self.ctx.stats.router_rq_total.value += 1
        self._leave_runtime()
        cdef LaneConnection conn = self.conn
        full = conn._adopted()
        full.answer(self.request_headers(), status, body, details, extra, self.close_after)
        held = conn.held
        if held:
            conn.held = b""
            full.data_received(held)

    cdef object request_headers(self):
        """The request as the full path would have parsed it (for a local reply's stream)."""
        items = [(b":method", self.method), (b":scheme", b"http"), (b":path", self.target_path),
                 (b":authority", self.authority)]
        head = self.head
        for line in head[:len(head) - 4].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name != b"host" and name != b"connection":
                items.append((name, value.lstrip(b" \t")))  # as llhttp: trailing blanks stay
        return HeaderMap.adopt(items)


cdef inline bytes _chunk(bytes data):
    """``data`` in HTTP/1.1 chunked framing (one chunk)."""
    return (b"%x\r\n" % PyBytes_GET_SIZE(data)) + data + b"\r\n"


cdef struct _Line:
    Py_ssize_t ns, nl  # the name
    Py_ssize_t vs, ve, vt  # the value: start, end as received, end without trailing blanks


cdef inline Py_ssize_t _field_line(const char* p, Py_ssize_t i, Py_ssize_t n, _Line* line):
    """Scan one ``name: value CRLF`` field line at ``i`` (``p[n-2:n]`` is a CRLF); the next line's start, or -1.

    -1 for anything a strict HTTP/1.1 parser refuses or a lenient one reads differently: an empty
    or non-token name, blanks before the colon, obs-fold, control characters, a bare LF.
    """
    line.ns = i
    while i < n and CLASS[<unsigned char>p[i]] & 1:
        i += 1
    line.nl = i - line.ns
    if line.nl == 0 or i >= n or p[i] != 58:
        return -1
    i += 1
    while i < n and (p[i] == 32 or p[i] == 9):
        i += 1
    line.vs = i
    while i < n and CLASS[<unsigned char>p[i]] & 2:
        i += 1
    if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
        return -1
    line.ve = line.vt = i  # the value goes on as received (trailing blanks too); checks read it trimmed
    while line.vt > line.vs and (p[line.vt - 1] == 32 or p[line.vt - 1] == 9):
        line.vt -= 1
    return i + 2


cdef inline bint _known_method(const char* p, Py_ssize_t n):
    """The methods the lane forwards; the codec judges any other."""
    if n == 3:
        return memcmp(p, b"GET", 3) == 0 or memcmp(p, b"PUT", 3) == 0
    if n == 4:
        return memcmp(p, b"HEAD", 4) == 0 or memcmp(p, b"POST", 4) == 0
    if n == 5:
        return memcmp(p, b"PATCH", 5) == 0 or memcmp(p, b"TRACE", 5) == 0
    if n == 6:
        return memcmp(p, b"DELETE", 6) == 0
    return n == 7 and memcmp(p, b"OPTIONS", 7) == 0


cdef inline bint _lower_eq(const char* p, Py_ssize_t n, const char* name, Py_ssize_t m):
    """Case-insensitive equality with a lower-case ``name``."""
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(m):
        if LOWER[<unsigned char>p[i]] != <unsigned char>name[i]:
            return False
    return True


cdef inline bint _lower_has(const char* p, Py_ssize_t n, const char* token, Py_ssize_t m):
    """Whether a comma-separated value holds ``token`` (case-insensitive)."""
    cdef Py_ssize_t i = 0, s, e
    while i <= n:
        s = i
        while i < n and p[i] != 44:
            i += 1
        e = i
        while s < e and (p[s] == 32 or p[s] == 9):
            s += 1
        while e > s and (p[e - 1] == 32 or p[e - 1] == 9):
            e -= 1
        if _lower_eq(p + s, e - s, token, m):
            return True
        i += 1
    return False


cdef inline bint _lower_ends(const char* p, Py_ssize_t n, const char* token, Py_ssize_t m):
    """Whether the last transfer coding is ``token``."""
    cdef Py_ssize_t s = n
    while s > 0 and p[s - 1] != 44:
        s -= 1
    while s < n and (p[s] == 32 or p[s] == 9):
        s += 1
    return _lower_eq(p + s, n - s, token, m)


cdef inline long long _decimal(const char* p, Py_ssize_t n):
    cdef long long value = 0
    cdef Py_ssize_t i
    if n == 0 or n > 18:
        return -1
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            return -1
        value = value * 10 + (p[i] - 48)
    return value


cdef bytes _lowered(const char* p, Py_ssize_t n):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef char* o = PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = LOWER[<unsigned char>p[i]]
    return out
