"""The emulator's host answers: captured logs, a settable clock, clusters, foreign functions."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wasmhost import Environment, LogLevel, PluginSpec

from ._records import LogEntry
from ._state import HostState

_HOST_FAILURE_PREFIX = "VM failed: "

#: What a test may register as a foreign function: bytes in, bytes out (status OK), or an
#: explicit ``(status, bytes)``.
ForeignCallable = Callable[[bytes], "bytes | tuple[int, bytes]"]


class EmulatorEnvironment(Environment):
    """Records every plugin log line; time only moves when the test moves it."""

    def __init__(
        self,
        *,
        log_level: LogLevel,
        clusters: Iterable[str] | None,
        foreign_functions: Mapping[str, ForeignCallable],
        state: HostState,
    ) -> None:
        self.log_level = log_level
        self.entries: list[LogEntry] = []
        self.clusters = None if clusters is None else set(clusters)
        self.node: dict[str, Any] = {}
        self.foreign_functions = dict(foreign_functions)
        self.wall_start_ns = time.time_ns()
        self.monotonic_start_ns = time.monotonic_ns()
        self.state = state  # the clock moves with state.elapsed_ns

    def log(self, spec: PluginSpec, level: LogLevel, message: str) -> None:
        if level == LogLevel.CRITICAL and message.startswith(_HOST_FAILURE_PREFIX):
            return  # the host's report of a failed VM: HostEmulator.trap carries it
        self.entries.append(LogEntry(LogLevel(level), message))

    def has_cluster(self, name: str) -> bool:
        return self.clusters is None or name in self.clusters

    def now_ns(self) -> int:
        return self.wall_start_ns + self.state.elapsed_ns

    def monotonic_ns(self) -> int:
        return self.monotonic_start_ns + self.state.elapsed_ns

    def node_properties(self) -> dict[str, object]:
        return dict(self.node)

    def foreign_function(self, name: str) -> Callable[[bytes], tuple[int, bytes]] | None:
        function = self.foreign_functions.get(name)
        if function is None:
            return None
        bound = function

        def call(args: bytes) -> tuple[int, bytes]:
            result = bound(args)
            return result if isinstance(result, tuple) else (0, result)

        return call
