"""The Wasm filter's per-process host: plugins pooled by (module digest, spec), and the core's
commands (callouts, timers, queues, metrics) carried out with the worker's services.

Plugins are pooled per worker process: a plan rebuilt with the same plugin keeps the running
plugin (and its state), a changed module or configuration gets a new one, and a plugin no plan
uses any more is shut down once its last stream has ended — in-flight streams always finish on
the plugin they started on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
    NotifyQueueReady,
    Plugin,
    PluginSpec,
    ResumeStream,
    RootContext,
    Runtime,
    SendGrpcMessage,
    SendLocalReply,
    SetTickPeriod,
    StreamType,
)
from .._environment import PY_LOG_LEVELS
from ._filter_api import (
    FilterCallbacks,
    HttpCallResult,
    UnknownClusterError,
)
from ._filter_registry import Cancellable, WorkerServices
from ._wasm_grpc import WasmGrpcCalls

_LOG = logging.getLogger("wasmesh.wasm")
_T = TypeVar("_T")
_NO_TIMEOUT_S = 24 * 3600.0
#: how often plugin-defined metrics are copied into the worker's stats (what /stats shows)
METRICS_SYNC_S = 1.0
#: how often items other worker processes enqueued on this process's shared queues are looked for
QUEUE_POLL_S = 0.02
_U64 = 1 << 64


class StreamOwner:
    """What owns a plugin's stream in the sidecar (the Wasm filter): the host hands it the stream
    commands its plugin produced."""

    __slots__ = ()
    callbacks: FilterCallbacks

    def send_local_reply(self, reply: SendLocalReply) -> None:
        raise NotImplementedError

    def resume(self, direction: StreamType) -> None:
        raise NotImplementedError


class SidecarEnvironment(Environment):
    """What plugins may ask of this sidecar: its clusters, its node, its logger."""

    def __init__(self) -> None:
        self.clusters: frozenset[str] = frozenset()
        self.node: dict[str, object] = {}
        self.log_level = _level_from_logger()

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        _LOG.log(PY_LOG_LEVELS[level], "wasm log %s %s %s: %s", spec.name, spec.root_id, spec.vm_id, message)

    def has_cluster(self, name: str) -> bool:
        return name in self.clusters

    def node_properties(self) -> dict[str, object]:
        return self.node


def _level_from_logger() -> LogLevel:
    effective = _LOG.getEffectiveLevel()
    for level in (LogLevel.TRACE, LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR):
        if effective <= PY_LOG_LEVELS[level]:
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
            if isinstance(target, StreamOwner):
                target.send_local_reply(command)
        elif isinstance(command, ResumeStream):
            target = command.stream.embedder
            if isinstance(target, StreamOwner):
                self._soon(lambda: target.resume(command.direction))
        elif isinstance(command, CloseStream):
            target = command.stream.embedder
            if isinstance(target, StreamOwner):
                target.callbacks.reset_stream("wasm_close_stream")
        elif isinstance(command, ClearRouteCache):
            target = command.stream.embedder
            if isinstance(target, StreamOwner):
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
