"""``envoy.filters.http.wasm``: the thin adapter between the filter chain and the proxy-wasm core.

All VM and plugin logic lives in ``wasmhost`` (``Plugin``, ``HttpStream``); this module
only translates: Envoy filter callbacks in, proxy-wasm stream events out, and the core's
commands (local reply, resume, callouts, timers, queues) back into filter callbacks and
worker services.

Plugins are pooled per worker process by (module digest, plugin spec): a plan rebuilt
with the same plugin keeps the running plugin (and its state), a changed module or
configuration gets a new one, and a plugin no plan uses any more is shut down once its
last stream has ended — in-flight streams always finish on the plugin they started on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as http_wasm_pb2
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import json_format, struct_pb2, wrappers_pb2

from .. import (
    CancelGrpc,
    ClearRouteCache,
    CloseStream,
    Command,
    CompiledModule,
    DeleteRootContext,
    DispatchGrpcCall,
    DispatchHttpCall,
    Environment,
    FailurePolicy,
    LogLevel,
    MetricType,
    ModuleError,
    NotifyQueueReady,
    Plugin,
    PluginSpec,
    PluginStartError,
    ResumeStream,
    RootContext,
    Runtime,
    SendGrpcMessage,
    SendLocalReply,
    SetTickPeriod,
    StreamType,
)
from .. import HttpStream as PluginHttpStream
from ._buffer import Buffer
from ._errors import ConfigError
from ._filter_api import (
    DataStatus,
    FilterCallbacks,
    HeadersStatus,
    HttpCallResult,
    HttpFilter,
    TrailersStatus,
    UnknownClusterError,
)
from ._filter_registry import Cancellable, FilterBuildContext, WorkerServices, register_http_filter
from ._headers import HeaderMap
from ._tracing import collect_plugin_span_tags
from ._wasm_grpc import WasmGrpcCalls
from ._wasm_info import plugin_stream_info

_LOG = logging.getLogger("wasmesh.wasm")
_T = TypeVar("_T")
_PY_LEVEL = {
    LogLevel.TRACE: 5,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.CRITICAL: logging.CRITICAL,
}
_RUNTIMES = {"", "envoy.wasm.runtime.v8", "envoy.wasm.runtime.wasmtime", "envoy.wasm.runtime.wamr",
             "envoy.wasm.runtime.wavm"}
_POLICIES = {
    wasm_pb2.FailurePolicy.FAIL_RELOAD: FailurePolicy.FAIL_RELOAD,
    wasm_pb2.FailurePolicy.FAIL_CLOSED: FailurePolicy.FAIL_CLOSED,
    wasm_pb2.FailurePolicy.FAIL_OPEN: FailurePolicy.FAIL_OPEN,
}
_NO_TIMEOUT_S = 24 * 3600.0
#: how often plugin-defined metrics are copied into the worker's stats (what /stats shows)
METRICS_SYNC_S = 1.0
#: how often items other worker processes enqueued on this process's shared queues are looked for
QUEUE_POLL_S = 0.02
_U64 = 1 << 64


class SidecarEnvironment(Environment):
    """What plugins may ask of this sidecar: its clusters, its node, its logger."""

    def __init__(self) -> None:
        self.clusters: frozenset[str] = frozenset()
        self.node: dict[str, object] = {}
        self.log_level = _level_from_logger()

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        _LOG.log(_PY_LEVEL[level], "wasm log %s %s %s: %s", spec.name, spec.root_id, spec.vm_id, message)

    def has_cluster(self, name: str) -> bool:
        return name in self.clusters

    def node_properties(self) -> dict[str, object]:
        return self.node


def _level_from_logger() -> LogLevel:
    effective = _LOG.getEffectiveLevel()
    for level in (LogLevel.TRACE, LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR):
        if effective <= _PY_LEVEL[level]:
            return level
    return LogLevel.CRITICAL


@dataclass(eq=False)
class PluginBinding:
    """One pooled plugin and the worker-side state around it (timers, users)."""

    key: tuple[str, PluginSpec]
    plugin: Plugin
    #: whether the module exports any response callback (else its filter skips the response path)
    encodes: bool = True
    #: whether the module exports a callback that runs at log time (else the maps need no refresh then)
    logs: bool = True
    users: int = 0
    tick: Cancellable | None = None
    tick_period_ms: int = 0
    error: str = ""


@dataclass(eq=False)
class PluginMetricsMirror:
    """Copies plugin-defined metrics into the worker's stats as Envoy names them (``wasmcustom.<name>``).

    The proxy-wasm core keeps metrics in its own store; the admin reads the worker's
    ``StatsStore``. Copying off the request path, once per ``METRICS_SYNC_S``, keeps the
    hostcalls at one attribute update each.
    """

    synced: dict[tuple[str, MetricType], int] = field(default_factory=dict)

    def sync(self, runtime: Runtime, stats: Any) -> None:
        for metric in runtime.metrics.all():
            key = (metric.name, metric.type)
            name = "wasmcustom." + metric.name
            if metric.type is MetricType.COUNTER:
                delta = (metric.value - self.synced.get(key, 0)) % _U64
                stats.counter(name).inc(delta)
                self.synced[key] = metric.value
            elif metric.type is MetricType.GAUGE:
                stats.gauge(name).set(metric.value)
            else:
                new = metric.sample_count - self.synced.get(key, 0)
                histogram = stats.histogram(name)
                for value in metric.samples[max(0, len(metric.samples) - new):]:
                    histogram.observe(value)
                self.synced[key] = metric.sample_count


@dataclass(eq=False)
class WasmHost:
    """Per worker process: the runtime, the plugin pool and the command pump."""

    runtime: Runtime
    environment: SidecarEnvironment
    services: WorkerServices | None = None
    pool: dict[tuple[str, PluginSpec], PluginBinding] = field(default_factory=dict)
    by_root: dict[int, PluginBinding] = field(default_factory=dict)
    shared_vms: dict[object, Any] = field(default_factory=dict)
    metrics: PluginMetricsMirror = field(default_factory=PluginMetricsMirror)
    metrics_timer: Cancellable | None = None
    queue_timer: Cancellable | None = None
    grpc: WasmGrpcCalls = field(default_factory=WasmGrpcCalls)

    # -- plugins ---------------------------------------------------------------------------
    def acquire(self, compiled: CompiledModule, spec: PluginSpec) -> PluginBinding:
        key = (compiled.sha256, spec)
        binding = self.pool.get(key)
        if binding is None or binding.plugin.failed is not None and spec.failure_policy is not FailurePolicy.FAIL_RELOAD:
            plugin = Plugin(self.runtime, compiled, spec, shared_vms=self.shared_vms)
            plugin.start()
            binding = PluginBinding(key, plugin, encodes=_has_response_callbacks(compiled),
                                    logs=not _LOG_CALLBACKS.isdisjoint(compiled.exports))
            self.pool[key] = binding
        binding.users += 1
        root = binding.plugin.root
        if root is not None:
            self.by_root[id(root)] = binding
        return binding

    def release(self, binding: PluginBinding) -> None:
        binding.users -= 1
        if binding.users > 0:
            return
        if self.pool.get(binding.key) is binding:
            del self.pool[binding.key]
        self._retire(binding)

    def _retire(self, binding: PluginBinding) -> None:
        vm = binding.plugin.vm
        if vm is not None and vm.active_streams > 0 and self.services is not None:
            self.services.call_later(0.5, lambda: self._retire(binding))
            return
        if binding.tick is not None:
            binding.tick.cancel()
            binding.tick = None
        root = binding.plugin.root
        if root is not None:
            self.grpc.forget_root(root)
        binding.plugin.shutdown()
        if root is not None and not root.pending_done:
            self.by_root.pop(id(root), None)
        self.drain()

    def activate(self) -> None:
        """On the worker's loop thread: run what plugin starts asked for; keep the metrics mirror going."""
        self.drain()
        if self.metrics_timer is None:
            self._sync_metrics()
        if self.queue_timer is None and self.runtime.shared.state_path is not None:
            self._poll_queues()

    def _sync_metrics(self) -> None:
        services = self.services
        if services is None:
            return
        self.metrics.sync(self.runtime, services.stats)
        self.metrics_timer = services.call_later(METRICS_SYNC_S, self._sync_metrics)

    def _poll_queues(self) -> None:
        """Shared state across worker processes: deliver what other workers enqueued for roots here."""
        services = self.services
        if services is None:
            return
        for root, queue_id in self.runtime.shared.poll_queues():
            self._execute(NotifyQueueReady(root, queue_id))
        self.queue_timer = services.call_later(QUEUE_POLL_S, self._poll_queues)

    def binding_for(self, root: RootContext) -> PluginBinding | None:
        return self.by_root.get(id(root))

    # -- commands ---------------------------------------------------------------------------
    def drain(self) -> None:
        """Carry out every command the plugins produced (never re-entrantly into a plugin)."""
        if not self.runtime.commands:  # checked after every callback: most produce nothing
            return
        for command in self.runtime.take_commands():
            self._execute(command)

    def _execute(self, command: Command) -> None:
        if isinstance(command, SendLocalReply):
            target = command.stream.embedder
            if isinstance(target, WasmHttpFilter):
                target.send_local_reply(command)
        elif isinstance(command, ResumeStream):
            target = command.stream.embedder
            if isinstance(target, WasmHttpFilter):
                self._soon(lambda: target.resume(command.direction))
        elif isinstance(command, CloseStream):
            target = command.stream.embedder
            if isinstance(target, WasmHttpFilter):
                target.callbacks.reset_stream("wasm_close_stream")
        elif isinstance(command, ClearRouteCache):
            target = command.stream.embedder
            if isinstance(target, WasmHttpFilter):
                target.callbacks.clear_route_cache()
        elif isinstance(command, DispatchHttpCall):
            self._dispatch_http_call(command)
        elif isinstance(command, DispatchGrpcCall):
            self._dispatch_grpc(command)
        elif isinstance(command, SendGrpcMessage):
            self.grpc.send(command)
        elif isinstance(command, CancelGrpc):
            self.grpc.cancel(command)
        elif isinstance(command, SetTickPeriod):
            self._set_tick(command.root, command.period_ms)
        elif isinstance(command, NotifyQueueReady):
            binding = self.binding_for(command.root)
            if binding is not None:
                plugin, queue_id = binding.plugin, command.queue_id
                self._soon(lambda: self._run(lambda: plugin.on_queue_ready(queue_id)))
        elif isinstance(command, DeleteRootContext):
            binding = self.binding_for(command.root)
            if binding is not None:
                binding.plugin.delete_root()
                self.by_root.pop(id(command.root), None)

    def _run(self, action: Callable[[], None]) -> None:
        action()
        self.drain()

    def _soon(self, action: Callable[[], None]) -> None:
        if self.services is not None:
            self.services.call_soon(action)
        else:
            action()

    def _dispatch_http_call(self, command: DispatchHttpCall) -> None:
        binding = self.binding_for(command.root)
        if binding is None:
            return
        plugin, token = binding.plugin, command.token

        def on_result(result: HttpCallResult) -> None:
            if result.headers is None:
                self._run(lambda: plugin.on_http_call_response(token, None, failure=result.failure or "reset"))
                return
            headers = list(result.headers.items())
            trailers = list(result.trailers.items()) if result.trailers is not None else []
            self._run(lambda: plugin.on_http_call_response(token, headers, result.body, trailers))

        if self.services is None:
            self._soon(lambda: on_result(HttpCallResult(None, b"", None, "no worker")))
            return
        timeout = command.timeout_ms / 1000.0 if command.timeout_ms else _NO_TIMEOUT_S
        headers = command.headers
        if command.body:
            # Envoy's proxy_http_call frames a request body with content-length
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(command.body)).encode()))
        try:
            self.services.dispatch_http_call(
                command.cluster, headers, command.body, command.trailers, timeout, on_result
            )
        except UnknownClusterError:
            self._soon(lambda: on_result(HttpCallResult(None, b"", None, "unknown cluster")))

    def _dispatch_grpc(self, command: DispatchGrpcCall) -> None:
        binding = self.binding_for(command.root)
        if binding is not None:
            self.grpc.dispatch(self.services, binding.plugin, command, self._run, self._soon)

    def _set_tick(self, root: RootContext, period_ms: int) -> None:
        binding = self.binding_for(root)
        if binding is None or self.services is None:
            return
        if binding.tick is not None:
            binding.tick.cancel()
            binding.tick = None
        binding.tick_period_ms = period_ms
        if period_ms > 0:
            self._arm_tick(binding)

    def _arm_tick(self, binding: PluginBinding) -> None:
        services = self.services
        assert services is not None
        period = binding.tick_period_ms

        def fire() -> None:
            binding.tick = None
            self._run(binding.plugin.on_tick)
            if binding.tick is None and binding.tick_period_ms == period and binding.users > 0:
                self._arm_tick(binding)

        binding.tick = services.call_later(period / 1000.0, fire)


_RESPONSE_CALLBACKS = (
    "proxy_on_response_headers", "proxy_on_response_body", "proxy_on_response_trailers",
    "proxy_on_response_metadata",
)


_LOG_CALLBACKS = frozenset(("proxy_on_log", "proxy_on_done", "proxy_on_delete"))


def _has_response_callbacks(compiled: CompiledModule) -> bool:
    return any(name in compiled.exports for name in _RESPONSE_CALLBACKS)


_HOST: WasmHost | None = None


def wasm_host() -> WasmHost:
    """This worker process's host (created on first use; one per process)."""
    global _HOST
    if _HOST is None:
        environment = SidecarEnvironment()
        cache_dir = os.environ.get("WASMESH_CACHE_DIR") or str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wasmesh" / "compiled"
        )
        _HOST = WasmHost(Runtime(environment=environment, cache_dir=cache_dir), environment)
    return _HOST


class WasmHttpFilter(HttpFilter):
    """One stream through one plugin.

    As Envoy's filter: a stream whose request headers never reached this filter (an earlier
    filter answered locally) has no plugin context, so the response passes untouched; and
    once the VM has failed, the 503 it answered with passes this filter's encoder side.
    """

    __slots__ = ("callbacks", "stream", "host", "decoded", "logs", "held_request", "held_response")

    def __init__(self, callbacks: FilterCallbacks, binding: PluginBinding, host: WasmHost) -> None:
        self.callbacks = callbacks
        self.host = host
        self.stream = PluginHttpStream(binding.plugin, plugin_stream_info(callbacks.stream_info))
        self.decoded = False
        self.held_request = self.held_response = 0  # body bytes the plugin holds (the core buffers them)
        self.logs = binding.logs
        if not binding.encodes:
            self.encodes = False  # the module has no response callbacks: stay off the response path

    def _bypass_encoder(self) -> bool:
        """The filter never saw the request (an earlier filter answered): leave the response alone."""
        return not self.decoded

    # -- helpers ---------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Point the plugin's view at the chain's live maps (a filter may have replaced one);
        the stream facts need no refresh, the plugin reads them live."""
        stream = self.stream
        ctx = stream.ctx
        cb = self.callbacks
        if ctx is None:
            return
        ctx.embedder = self
        request, response = cb.request_headers, cb.response_headers
        if request is not None:
            ctx.request_headers = request.items()
        if response is not None:
            ctx.response_headers = response.items()
        trailers = cb.request_trailers
        if trailers is not None:
            ctx.request_trailers = trailers.items()
        trailers = cb.response_trailers
        if trailers is not None:
            ctx.response_trailers = trailers.items()

    def _after(self) -> None:
        ctx = self.stream.ctx
        if ctx is not None and ctx.embedder is None:
            ctx.embedder = self
        self.host.drain()

    # -- request ---------------------------------------------------------------------------------
    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        self.decoded = True
        stream = self.stream
        if stream.ctx is not None:
            self._sync()
        status = stream.on_request_headers(headers.items(), end_stream)
        self._after()
        return _HEADERS_STATUS[status]

    def decode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        held = self.held_request + len(data)
        if held > self.callbacks.buffer_limit:
            return self._payload_too_large(413, b"Payload Too Large", "request_payload_too_large")
        self._sync()
        verdict = self.stream.on_request_body(data.to_bytes(), end_stream)
        self._after()
        if verdict.forward is not None:
            self.held_request = 0
            data.replace(verdict.forward)
            return DataStatus.Continue
        self.held_request = held
        return DataStatus.StopIterationNoBuffer

    def decode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        self._sync()
        status = self.stream.on_request_trailers(trailers.items())
        self._after()
        return _TRAILERS_STATUS[status]

    # -- response --------------------------------------------------------------------------------
    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        if self._bypass_encoder():
            return HeadersStatus.Continue
        self._sync()
        status = self.stream.on_response_headers(headers.items(), end_stream)
        self._after()
        return _HEADERS_STATUS[status]

    def encode_data(self, data: Buffer, end_stream: bool) -> DataStatus:
        if self._bypass_encoder():
            return DataStatus.Continue
        held = self.held_response + len(data)
        if held > self.callbacks.buffer_limit:
            return self._payload_too_large(500, b"Internal Server Error", "response_payload_too_large")
        self._sync()
        verdict = self.stream.on_response_body(data.to_bytes(), end_stream)
        self._after()
        if verdict.forward is not None:
            self.held_response = 0
            data.replace(verdict.forward)
            return DataStatus.Continue
        self.held_response = held
        return DataStatus.StopIterationNoBuffer

    def _payload_too_large(self, status: int, body: bytes, details: str) -> DataStatus:
        """A body the plugin buffers outgrew the stream's buffer limit: Envoy's local reply (a reset once answered)."""
        self.callbacks.send_local_reply(status, body, (), details)
        return DataStatus.StopIterationNoBuffer

    def encode_trailers(self, trailers: HeaderMap) -> TrailersStatus:
        if self._bypass_encoder():
            return TrailersStatus.Continue
        self._sync()
        status = self.stream.on_response_trailers(trailers.items())
        self._after()
        return _TRAILERS_STATUS[status]

    # -- end -----------------------------------------------------------------------------------------
    def on_log(self) -> None:
        if not self.decoded:
            return
        stream = self.stream
        ctx = stream.ctx
        if ctx is not None:
            if self.logs:  # a log-time callback may read the maps and properties: refresh them
                self._sync()
            stream.finish()
            if ctx.filter_state:  # span tags are filter state the plugin set
                collect_plugin_span_tags(self.callbacks.stream_info, ctx.filter_state)
        self.host.drain()

    def on_destroy(self) -> None:
        stream = self.stream
        ctx = stream.ctx
        if ctx is not None:
            if not ctx.done:
                stream.finish()
            ctx.embedder = None
        self.host.drain()

    # -- commands aimed at this stream -------------------------------------------------------------
    def send_local_reply(self, reply: SendLocalReply) -> None:
        self.callbacks.send_local_reply(reply.status, reply.body, reply.headers, reply.details, reply.grpc_status)

    def resume(self, direction: StreamType) -> None:
        if direction == StreamType.HTTP_REQUEST:
            held = self.stream.resume_body(request=True)
            if held:
                self.callbacks.add_decoded_data(held)
            self.callbacks.continue_decoding()
        elif direction == StreamType.HTTP_RESPONSE:
            held = self.stream.resume_body(request=False)
            if held:
                self.callbacks.add_encoded_data(held)
            self.callbacks.continue_encoding()


_HEADERS_STATUS = tuple(HeadersStatus)  # indexed by the core's status: cheaper than the enum's constructor
_TRAILERS_STATUS = tuple(TrailersStatus)


# -- configuration ------------------------------------------------------------------------------------

def _configuration_bytes(value: Any, path: str) -> bytes:
    """Envoy hands StringValue/BytesValue configuration to the plugin as raw bytes."""
    if not value.type_url:
        return b""
    if value.Is(wrappers_pb2.StringValue.DESCRIPTOR):
        text = wrappers_pb2.StringValue()
        value.Unpack(text)
        return text.value.encode()
    if value.Is(wrappers_pb2.BytesValue.DESCRIPTOR):
        raw = wrappers_pb2.BytesValue()
        value.Unpack(raw)
        return bytes(raw.value)
    if value.Is(struct_pb2.Struct.DESCRIPTOR):
        data = struct_pb2.Struct()
        value.Unpack(data)
        return json_format.MessageToJson(data, indent=None).encode()
    raise ConfigError(path, f"unsupported configuration type {value.type_url!r} (use StringValue or BytesValue)")


def _module_bytes(vm: Any, path: str) -> bytes:
    code = vm.code
    which = code.WhichOneof("specifier")
    if which == "local":
        local = code.local
        kind = local.WhichOneof("specifier")
        if kind == "filename":
            try:
                return Path(local.filename).read_bytes()
            except OSError as err:
                raise ConfigError(f"{path}.code.local.filename", f"cannot read module: {err.strerror}") from None
        if kind == "inline_bytes":
            return bytes(local.inline_bytes)
        if kind == "inline_string":
            return local.inline_string.encode()
        raise ConfigError(f"{path}.code.local", f"unsupported module source {kind!r}")
    raise ConfigError(f"{path}.code", "no module given (code.local or code.remote)")


# istiod passes the pull settings to the agent in these VM env vars; they never reach the module
_AGENT_ENV = {
    "ISTIO_META_WASM_IMAGE_PULL_SECRET",
    "ISTIO_META_WASM_IMAGE_PULL_POLICY",
    "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION",
}


class ModuleFetchFailed(ConfigError):
    """The module agent could not provide the module; the plugin's fail strategy applies."""


#: plugin name → the module agent's last word on its module (shown by /config_dump)
MODULE_STATUS: dict[str, dict[str, object]] = {}
_AGENT: Any = None


def module_agent() -> Any:
    """This process's module agent (trust policy from ``WASMESH_TRUST_POLICY``, if set)."""
    global _AGENT
    if _AGENT is None:
        from registry import TrustPolicy

        from ..agent import ModuleAgent, ModuleStore
        from ._module_trust import load_trust

        policy_path = os.environ.get("WASMESH_TRUST_POLICY")
        policy = load_trust(policy_path).policy if policy_path else TrustPolicy()
        root = Path(os.environ.get("WASMESH_CACHE_DIR") or Path.home() / ".cache" / "wasmesh") / "modules"
        _AGENT = ModuleAgent(ModuleStore(root), policy)
    return _AGENT


def _run_to_completion(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run the agent's coroutine from plan building, which may itself run on an event loop thread
    (a worker process builds its first plan there): then it runs on a helper thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wasm-fetch") as helper:
        return helper.submit(asyncio.run, coroutine).result()


def _fetch_remote(remote: Any, agent_env: dict[str, str], path: str, plugin_name: str,
                  cluster_plan: Callable[[str], Any] | None = None) -> bytes:
    """Resolve ``code.remote`` (oci://, https://, http://, file://) through the module agent;
    http(s) through the cluster ``http_uri`` names, with its TLS settings (`_module_remote`)."""
    from ..agent import FetchError, ModuleRequest, PullPolicy
    from ._module_remote import cluster_transport

    url = remote.http_uri.uri
    sha256 = remote.sha256 if remote.sha256 not in ("", "nil") else None
    try:
        request = ModuleRequest(
            url=url,
            sha256=sha256,
            pull_policy=PullPolicy.parse(agent_env.get("ISTIO_META_WASM_IMAGE_PULL_POLICY")),
            pull_secret=agent_env.get("ISTIO_META_WASM_IMAGE_PULL_SECRET") or None,
            resource_version=agent_env.get("ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION", ""),
            transport=cluster_transport(remote.http_uri.cluster, cluster_plan) if url.startswith("http") else None,
        )
    except ValueError as err:
        MODULE_STATUS[plugin_name] = {"url": url, "ok": False, "message": str(err)}
        raise ModuleFetchFailed(path, str(err)) from None
    try:
        cached = _run_to_completion(module_agent().get(request))
    except FetchError as err:
        MODULE_STATUS[plugin_name] = {"url": url, "ok": False, "message": str(err)}
        raise ModuleFetchFailed(path, f"cannot fetch {url}: {err}") from None
    refusal = (MODULE_STATUS.get(plugin_name) or {}).get("last_refused")
    MODULE_STATUS[plugin_name] = {
        "url": url, "ok": True, "message": "stale cache (source down)" if cached.stale else "ok",
        "checksum": cached.checksum, "module_sha256": cached.module_sha256, "signers": list(cached.signers),
        **({"last_refused": refusal} if refusal else {}),  # the provenance check below decides whether it stays
    }
    return Path(cached.path).read_bytes()


# the carrier of `_module_provenance.CARRIER`, spelled here so that the registry package (and its
# cryptography) loads only once a module actually carries provenance
PROVENANCE_CARRIER = "WASMESH_MODULE_PROVENANCE:"


class _FetchFailedFilter(HttpFilter):
    """What Istio's agent puts in place of a plugin whose module it could not fetch:
    an RBAC deny-all (FAIL_CLOSE) — or nothing at all (FAIL_OPEN, see build_wasm_filter)."""

    encodes = False

    def __init__(self, callbacks: FilterCallbacks) -> None:
        self.callbacks = callbacks

    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> HeadersStatus:
        self.callbacks.send_local_reply(403, b"RBAC: access denied", (), "rbac_access_denied_matched_policy[none]")
        return HeadersStatus.StopAllIterationAndWatermark


class _PassFilter(HttpFilter):
    decodes = False
    encodes = False


def plugin_spec_from_proto(config: Any, path: str = "config",
                           cluster_plan: Callable[[str], Any] | None = None) -> tuple[PluginSpec, bytes]:
    """Translate an ``envoy.extensions.wasm.v3.PluginConfig`` into a spec and the module bytes
    (``cluster_plan`` finds the cluster a remote module is fetched through)."""
    vm = config.vm_config
    if config.WhichOneof("vm") != "vm_config":
        raise ConfigError(path, "vm_config is required (vm references are not supported)")
    if vm.runtime not in _RUNTIMES:
        raise ConfigError(f"{path}.vm_config.runtime", f"unsupported runtime {vm.runtime!r}; wasmesh runs modules on wasmtime")
    if config.capability_restriction_config.ByteSize():
        raise ConfigError(f"{path}.capability_restriction_config", "capability restrictions are not supported yet")
    agent_env = {k: v for k, v in vm.environment_variables.key_values.items() if k in _AGENT_ENV}
    if vm.code.WhichOneof("specifier") == "remote":
        wasm = _fetch_remote(vm.code.remote, agent_env, f"{path}.vm_config.code.remote", config.name, cluster_plan)
    else:
        wasm = _module_bytes(vm, f"{path}.vm_config")
    provenance = [k for k in vm.environment_variables.host_env_keys if k.startswith(PROVENANCE_CARRIER)]
    host_env_keys = [k for k in vm.environment_variables.host_env_keys if not k.startswith(PROVENANCE_CARRIER)]
    if provenance:
        from ._module_trust import check_provenance

        check_provenance(MODULE_STATUS, provenance, wasm, f"{path}.vm_config.environment_variables.host_env_keys",
                         config.name)
    elif os.environ.get("WASMESH_TRUST_POLICY"):  # stripped provenance looks like none: see _module_trust
        from ._module_trust import check_unsigned

        agent_verified = vm.code.WhichOneof("specifier") == "remote" and vm.code.remote.http_uri.uri.startswith("oci://")
        check_unsigned(MODULE_STATUS, wasm, f"{path}.vm_config.code", config.name, agent_verified)
    env: list[tuple[str, str]] = sorted(
        (k, v) for k, v in vm.environment_variables.key_values.items() if k not in _AGENT_ENV
    )
    for key in host_env_keys:
        value = os.environ.get(key)
        if value is not None:
            env.append((key, value))
    if config.failure_policy in _POLICIES:
        policy = _POLICIES[config.failure_policy]
    else:
        policy = FailurePolicy.FAIL_OPEN if config.fail_open else FailurePolicy.FAIL_CLOSED
    spec = PluginSpec(
        name=config.name,
        root_id=config.root_id,
        vm_id=vm.vm_id,
        configuration=_configuration_bytes(config.configuration, f"{path}.configuration"),
        vm_configuration=_configuration_bytes(vm.configuration, f"{path}.vm_config.configuration"),
        failure_policy=policy,
        fail_open=config.fail_open,
        env=tuple(env),
        allow_on_headers_stop_iteration=config.allow_on_headers_stop_iteration.value
        if config.HasField("allow_on_headers_stop_iteration") else False,
    )
    return spec, wasm


def _call_on_loop(services: object, action: Callable[[], _T]) -> _T:
    """Run ``action`` on the worker's event loop thread and return its result (or raise its error).

    Plans are built in an executor thread on reload (and on start in single-process mode), while
    the loop thread keeps serving streams on the same VMs: a plugin with the same vm_id and module
    shares its VM with the running one, and a wasmtime store must never be entered from two
    threads. So module compilation stays on the build thread, and everything that runs guest code
    or uses worker services (plugin start, timers, callouts) is handed to the loop thread. The
    worker's ``loop`` attribute is used for the hand-over until the services offer a thread-safe call.
    """
    loop = getattr(services, "loop", None)
    if not _needs_hand_over(loop):
        return action()
    assert isinstance(loop, asyncio.AbstractEventLoop)
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(action())
        except BaseException as err:  # handed back to the build thread
            done.set_exception(err)

    loop.call_soon_threadsafe(run)
    return done.result()


def _needs_hand_over(loop: object) -> bool:
    """True on a thread other than the worker's running loop (nothing to hand over to otherwise)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running() and not loop.is_closed()
    return False


def build_wasm_filter(config: Any, context: FilterBuildContext) -> Callable[[FilterCallbacks], HttpFilter]:
    """Config factory for ``envoy.extensions.filters.http.wasm.v3.Wasm`` (runs off the request path)."""
    if not isinstance(config, http_wasm_pb2.Wasm):
        raise ConfigError("", f"expected envoy.extensions.filters.http.wasm.v3.Wasm, got {type(config).__name__}")
    try:
        spec, wasm = plugin_spec_from_proto(config.config, "config", context.cluster_plan)
    except ModuleFetchFailed as err:
        _LOG.error("wasm plugin %s: %s", config.config.name, err)
        fail_open = config.config.fail_open or config.config.failure_policy == wasm_pb2.FailurePolicy.FAIL_OPEN
        if fail_open:
            return lambda callbacks: _PassFilter()
        return _FetchFailedFilter
    host = wasm_host()
    try:
        compiled = host.runtime.compile(wasm)
    except ModuleError as err:
        raise ConfigError("config.vm_config.code", f"module {hashlib.sha256(wasm).hexdigest()[:12]}: {err}") from None
    node = json_format.MessageToDict(context.node, preserving_proto_field_name=True) \
        if context.node is not None and context.node.ByteSize() else None

    def start() -> PluginBinding:
        if context.services is not None:
            host.services = context.services
        host.environment.clusters = context.cluster_names
        if node is not None:
            host.environment.node = node
        binding = host.acquire(compiled, spec)
        host.activate()
        return binding

    try:
        binding = _call_on_loop(context.services, start)
    except PluginStartError as err:
        raise ConfigError("config", str(err)) from None
    context.on_retire(lambda: host.release(binding))

    def create(callbacks: FilterCallbacks) -> HttpFilter:
        return WasmHttpFilter(callbacks, binding, host)

    create.filter_class = WasmHttpFilter  # type: ignore[attr-defined]
    return create


register_http_filter("envoy.extensions.filters.http.wasm.v3.Wasm", build_wasm_filter)

__all__ = ["SidecarEnvironment", "WasmHost", "WasmHttpFilter", "build_wasm_filter", "wasm_host"]
