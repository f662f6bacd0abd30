"""What the embedder tells the host: logging, clusters, clocks, foreign functions.

Hosts differ in these answers (a sidecar knows its clusters, ``wasmesh plugin run``
serves callouts from flags, a test fixes the clock). :class:`Environment` answers with
safe defaults; an embedder subclasses it and overrides what it knows.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._abi import LogLevel

if TYPE_CHECKING:
    from ._plugin import PluginSpec

_LOGGER = logging.getLogger("wasmhost.plugin")
#: proxy-wasm log levels as Python logging levels (TRACE below DEBUG)
PY_LOG_LEVELS = {
    LogLevel.TRACE: 5,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.CRITICAL: logging.CRITICAL,
}

#: A foreign function takes the argument bytes and returns (status, result bytes).
ForeignFunction = Callable[[bytes], tuple[int, bytes]]


class Environment:
    """Default answers; subclass and override per embedder."""

    #: plugin logs below this level are dropped before formatting (Envoy's wasm logger level)
    log_level: LogLevel = LogLevel.INFO

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        """A plugin log line (``proxy_log``, WASI stdout/stderr)."""
        _LOGGER.log(PY_LOG_LEVELS[level], "wasm log %s %s %s: %s", spec.name, spec.root_id, spec.vm_id, message)

    def has_cluster(self, name: str) -> bool:
        """Whether ``proxy_http_call`` / ``proxy_grpc_call`` may target this upstream."""
        return False

    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def host_env(self, key: str) -> str | None:
        """A proxy environment variable a plugin may copy (vmConfig.env valueFrom HOST)."""
        return os.environ.get(key)

    def foreign_function(self, name: str) -> ForeignFunction | None:
        """Host-registered functions reachable by ``proxy_call_foreign_function``."""
        return None

    def node_properties(self) -> dict[str, object]:
        """The proxy's node (id, cluster, metadata) for ``xds.node`` / ``node`` properties."""
        return {}
