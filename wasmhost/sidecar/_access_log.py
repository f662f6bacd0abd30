"""Access-log sinks: stdout, stderr or a file, written in batches (Envoy flushes every second)."""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from ._plan import AccessLogPlan


class AccessLogWriter:
    """Buffers formatted lines per target and writes them on ``flush()``."""

    def __init__(self) -> None:
        self._buffers: dict[str, list[str]] = {}
        self._files: dict[str, IO[str]] = {}

    def log(self, plans: tuple[AccessLogPlan, ...], stream: Any) -> None:
        request = stream.dec.headers
        response = stream.enc.headers
        trailers = stream.enc.trailers
        for plan in plans:
            line = plan.formatter.format(stream.info, request, response, trailers)
            buffer = self._buffers.get(plan.target)
            if buffer is None:
                buffer = self._buffers[plan.target] = []
            buffer.append(line)

    def flush(self) -> None:
        for target, lines in self._buffers.items():
            if not lines:
                continue
            text = "".join(lines)
            lines.clear()
            try:
                self._handle(target).write(text)
                self._handle(target).flush()
            except OSError as err:
                print(f"access log {target}: {err}", file=sys.stderr)

    def _handle(self, target: str) -> IO[str]:
        if target == "stdout":
            return sys.stdout
        if target == "stderr":
            return sys.stderr
        handle = self._files.get(target)
        if handle is None:
            directory = os.path.dirname(target)
            if directory:
                os.makedirs(directory, exist_ok=True)
            handle = self._files[target] = open(target, "a", encoding="utf-8")  # noqa: SIM115
        return handle

    def close(self) -> None:
        self.flush()
        for handle in self._files.values():
            handle.close()
        self._files.clear()
