"""The sidecar's HTTP proxy: an Envoy-compatible data plane in which proxy-wasm plugins run.

Where it sits: ``wasmhost.sidecar`` is the proxy around the proxy-wasm runtime
(the rest of ``wasmhost``). It reads an Envoy v3 bootstrap (``load_plan``),
refuses anything it does not implement with the field path, and serves it:
listeners (TLS optional) → HTTP/1.1 or HTTP/2 codec → HTTP filter chain →
router → clusters / load balancing → upstream connection pools (HTTP/1.1 or
HTTP/2). The core (codecs, filter chain, router, cluster state) is sans-io: it
takes events and emits commands (``_commands``); asyncio/uvloop does the I/O at
the edge (``_worker``). ``wasmesh sidecar -c envoy.yaml`` runs it
(``Sidecar``; ``--concurrency N`` forks N workers sharing ports via SO_REUSEPORT),
with Envoy's admin endpoint and live reload of the bootstrap file.

A bootstrap with ``dynamic_resources`` is driven by a control plane over ADS
(``_xds_client``, state of the world or incremental): LDS/CDS with RDS, EDS, ECDS
and SDS are inlined into plans (``_dynamic``) under Envoy's warming rules, each
update is built as a transaction (``_xds_update``) and a refused resource is
NACKed with its name and field while its last good version keeps serving. With
``node.metadata.IDENTITY_AGENT`` the sidecar runs its identity agent (``_identity``):
it keeps its own key, gets its certificate by CSR and answers the ``sds-grpc``
secrets ``default``/``ROOTCA`` in-process.

Adding an HTTP filter (how the Wasm filter plugs in)::

    from wasmhost.sidecar import (FilterBuildContext, HttpFilter, HeadersStatus,
                                  register_http_filter)

    def build_wasm(config, context: FilterBuildContext):
        # config: the unpacked typed_config message (here
        # envoy.extensions.filters.http.wasm.v3.Wasm). Runs when a plan is built,
        # in a thread, off the request path: validate, compile, instantiate.
        # Raise ConfigError(path_relative_to_typed_config, reason) to refuse.
        # context.services (WorkerServices): timers and root-level HTTP callouts
        # for long-lived plugin state; context.on_retire(fn): release VMs when
        # the plan is no longer used by any stream.
        def create(callbacks) -> HttpFilter:  # per stream
            return WasmHttpFilter(callbacks, ...)
        return create

    register_http_filter("envoy.extensions.filters.http.wasm.v3.Wasm", build_wasm)

A filter implements ``decode_headers/data/trailers`` and ``encode_*`` returning
``HeadersStatus``/``DataStatus``/``TrailersStatus`` (Envoy's semantics), plus
``on_stream_complete``, ``on_log`` and ``on_destroy``. Through its
``FilterCallbacks`` it can continue iteration, send a local reply, reset the
stream, read/modify buffered bodies, read the route and ``StreamInfo``
(addresses, route, cluster, upstream host, timings, response code/flags) and
``dispatch_http_call`` to a named cluster; the result is delivered later through
the stream's event loop, never re-entrantly.
"""

from .. import _native

_native.activate(__path__, __name__)  # compiled copies of the request path, when current

from ._buffer import Buffer
from ._errors import ConfigError
from ._filter_api import (
    DataStatus,
    FilterCallbacks,
    HeadersStatus,
    HttpCallResult,
    HttpFilter,
    ResponseFlag,
    StreamInfo,
    TrailersStatus,
    UnknownClusterError,
)
from ._filter_registry import (
    FilterBuildContext,
    HttpFilterConfigFactory,
    WorkerServices,
    register_http_filter,
    registered_http_filters,
)
from ._headers import HeaderMap
from ._plan import Plan
from ._reload import load_plan
from ._sidecar import Sidecar, run_sidecar
from ._stats import StatsStore

# Built-in filters register themselves on import.
from . import _cors as _cors  # noqa: E402,F401  isort: skip
from . import _ext_authz as _ext_authz  # noqa: E402,F401  isort: skip
from . import _fault as _fault  # noqa: E402,F401  isort: skip
from . import _jwt_authn as _jwt_authn  # noqa: E402,F401  isort: skip
from . import _rbac as _rbac  # noqa: E402,F401  isort: skip
from . import _istio_stats as _istio_stats  # noqa: E402,F401  isort: skip
from . import _peer_metadata as _peer_metadata  # noqa: E402,F401  isort: skip
from . import _router as _router  # noqa: E402,F401  isort: skip
from . import _tracing as _tracing  # noqa: E402,F401  isort: skip
from . import _wasm as _wasm  # noqa: E402,F401  isort: skip

__all__ = [
    "Buffer",
    "ConfigError",
    "DataStatus",
    "FilterBuildContext",
    "FilterCallbacks",
    "HeaderMap",
    "HeadersStatus",
    "HttpCallResult",
    "HttpFilter",
    "HttpFilterConfigFactory",
    "Plan",
    "ResponseFlag",
    "Sidecar",
    "StatsStore",
    "StreamInfo",
    "TrailersStatus",
    "UnknownClusterError",
    "WorkerServices",
    "load_plan",
    "register_http_filter",
    "registered_http_filters",
    "run_sidecar",
]
