"""Module status written back to the config source: a WasmPlugin's Resolved, Verified and
Distributed conditions on its Kubernetes object (`status` subresource).

The resolver reports a status each time an object's conditions change (`ModuleResolver.on_status`);
`StatusWriter` writes it from a thread of its own, so a slow or failing API server never
holds up the push loop. Only the latest status of each object is kept: a newer one replaces
one still waiting. A failed write (conflict, API error, lost connection) is retried with
exponential backoff; an object that is gone, or that the source does not hold, is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane._resources import ResourceKey

log = logging.getLogger("wasmesh.controlplane.modules")
Patch = Callable[[ResourceKey, Mapping[str, Any]], None]


class StatusTargetGone(Exception):
    """The object to write to does not exist (deleted, or not from this source): nothing to retry."""


@dataclass
class _Pending:
    status: Mapping[str, Any]
    due: float
    failures: int = 0


class StatusWriter:
    """Writes statuses with `patch(key, status)` in a background thread, retrying failures."""

    def __init__(self, patch: Patch, *, backoff: float = 0.5, max_backoff: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.patch = patch
        self.backoff, self.max_backoff = backoff, max_backoff
        self.clock = clock
        self.written: dict[ResourceKey, Mapping[str, Any]] = {}
        self.failures = 0  # writes that failed and were retried (for tests and logs)
        self._pending: dict[ResourceKey, _Pending] = {}
        self._wake = threading.Condition()
        self._stopping = False
        self._writing = False  # a write is under way (taken off `_pending`, not finished)
        self._thread: threading.Thread | None = None

    def submit(self, key: ResourceKey, status: Mapping[str, Any] | None) -> None:
        """Queue the object's status (never blocks on I/O); an unchanged status is not written again."""
        if status is None:
            return
        with self._wake:
            if key not in self._pending and self.written.get(key) == status:
                return
            previous = self._pending.get(key)
            due = previous.due if previous is not None else self.clock()
            self._pending[key] = _Pending(status, due, previous.failures if previous is not None else 0)
            self._wake.notify()

    def start(self) -> StatusWriter:
        self._thread = threading.Thread(target=self._run, daemon=True, name="module-status-writer")
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def idle(self) -> bool:
        """Nothing waiting and nothing being written."""
        with self._wake:
            return not self._pending and not self._writing

    def _next(self) -> tuple[ResourceKey, _Pending] | None:
        """The next write that is due, waiting for one; None once stopping."""
        with self._wake:
            while not self._stopping:
                now = self.clock()
                due = sorted(self._pending.items(), key=lambda item: item[1].due)
                if due and due[0][1].due <= now:
                    key, pending = due[0]
                    del self._pending[key]
                    self._writing = True
                    return key, pending
                self._wake.wait(min(due[0][1].due - now, 1.0) if due else 1.0)
            return None

    def _run(self) -> None:
        while (item := self._next()) is not None:
            key, pending = item
            try:
                self.patch(key, pending.status)
            except StatusTargetGone:
                pass
            except Exception as err:  # noqa: BLE001 - any API failure is retried
                self._retry(key, pending, err)
            else:
                with self._wake:
                    self.written[key] = pending.status
            with self._wake:
                self._writing = False

    def _retry(self, key: ResourceKey, pending: _Pending, err: Exception) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** pending.failures)
        log.warning("writing the status of %s failed (%s); retrying in %.1fs", key, err, delay)
        with self._wake:
            self.failures += 1
            if key not in self._pending:  # a newer status keeps its place; this one is retried
                self._pending[key] = _Pending(pending.status, self.clock() + delay, pending.failures + 1)
            self._wake.notify()


def attach_status_writer(resolver: Any, patch: Patch, **options: Any) -> StatusWriter:
    """Write every status `resolver` (a `ModuleResolver`) reports with `patch`, starting with the
    statuses it already has; the caller stops the writer."""
    writer = StatusWriter(patch, **options).start()
    resolver.on_status = writer.submit
    for owner in {state.slot.owner for state in resolver.states.values()}:
        writer.submit(owner, resolver.status_of(owner))
    return writer


__all__ = ["StatusTargetGone", "StatusWriter", "attach_status_writer"]
