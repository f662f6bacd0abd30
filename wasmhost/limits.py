"""Every resource cap of the proxy-wasm host, in one place.

A plugin is untrusted code: each limit below bounds what one module can make the host
do. They are defaults; :class:`wasmhost.Limits` lets an embedder override any of them
per runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest module accepted for compilation (bytes).
MAX_MODULE_SIZE = 64 * 1024 * 1024
#: Linear memory cap per VM (bytes). cpp-host uses 1 GiB; a sidecar wants far less.
MAX_VM_MEMORY = 256 * 1024 * 1024
#: CPU deadline for one callback into the guest (milliseconds), enforced by epoch interruption.
CALLBACK_DEADLINE_MS = 100
#: How often the epoch ticker advances (milliseconds); the deadline resolution.
EPOCH_TICK_MS = 5
#: Header pairs blob the guest may hand us (bytes), and the number of pairs in it.
MAX_PAIRS_BYTES = 1024 * 1024
MAX_PAIRS_COUNT = 1024
#: Largest header name+value total a plugin may add to one map (bytes).
MAX_HEADER_MAP_BYTES = 96 * 1024
#: Largest body a plugin may make the host buffer (bytes), per direction.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Largest single log message kept (bytes); longer ones are truncated.
MAX_LOG_MESSAGE = 64 * 1024
#: `random_get` request cap (bytes), as cpp-host.
MAX_RANDOM_BYTES = 64 * 1024
#: Shared data: value size and number of keys per vm_id.
MAX_SHARED_VALUE_BYTES = 1024 * 1024
MAX_SHARED_KEYS = 64 * 1024
#: Shared queue depth; enqueue beyond it drops the oldest item.
MAX_QUEUE_DEPTH = 16 * 1024
#: Outstanding HTTP/gRPC callouts per root context.
MAX_PENDING_CALLOUTS = 1024
#: FAIL_RELOAD backoff: first delay (Envoy's reload_config default) and cap (seconds).
RELOAD_BACKOFF_INITIAL_S = 1.0
RELOAD_BACKOFF_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps one runtime applies to every VM it creates."""

    max_module_size: int = MAX_MODULE_SIZE
    max_vm_memory: int = MAX_VM_MEMORY
    callback_deadline_ms: int = CALLBACK_DEADLINE_MS
    epoch_tick_ms: int = EPOCH_TICK_MS
    max_pairs_bytes: int = MAX_PAIRS_BYTES
    max_pairs_count: int = MAX_PAIRS_COUNT
    max_header_map_bytes: int = MAX_HEADER_MAP_BYTES
    max_body_bytes: int = MAX_BODY_BYTES
    max_log_message: int = MAX_LOG_MESSAGE
    max_random_bytes: int = MAX_RANDOM_BYTES
    max_shared_value_bytes: int = MAX_SHARED_VALUE_BYTES
    max_shared_keys: int = MAX_SHARED_KEYS
    max_queue_depth: int = MAX_QUEUE_DEPTH
    max_pending_callouts: int = MAX_PENDING_CALLOUTS
    reload_backoff_initial_s: float = RELOAD_BACKOFF_INITIAL_S
    reload_backoff_max_s: float = RELOAD_BACKOFF_MAX_S


DEFAULT_LIMITS = Limits()

#: WASI ``fd_write``/``fd_pwrite``: most iovecs accepted in one call (wasi-libc's IOV_MAX).
MAX_WASI_IOVECS = 1024
#: Foreign functions: largest result a built-in (``uncompress``) may produce (bytes).
MAX_FOREIGN_RESULT_BYTES = 16 * 1024 * 1024
#: Plugin metrics: distinct metrics per runtime, and the longest metric name (bytes).
MAX_METRICS = 16 * 1024
MAX_METRIC_NAME_BYTES = 1024

#: On-disk compiled-module cache: total artifact bytes kept before the least recently used go.
MODULE_CACHE_MAX_BYTES = 1024 * 1024 * 1024
