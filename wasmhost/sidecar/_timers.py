"""A hashed timer wheel for the core's timers (route timeouts, retries, fault delays).

Nearly every request starts a timeout timer and cancels it a few milliseconds
later; a wheel makes both O(1) without one event-loop handle per timer.
Resolution is a few milliseconds, which is finer than Envoy's timeouts need.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Callable

from ._commands import Timer

_log = logging.getLogger("wasmesh.main")

RESOLUTION = 0.004


class TimerWheel:
    def __init__(self, loop: asyncio.AbstractEventLoop, after_fire: Callable[[], None],
                 before_fire: Callable[[], object] | None = None) -> None:
        self._loop = loop
        self._after_fire = after_fire
        self._before_fire = before_fire
        self._buckets: dict[int, set[Timer]] = {}
        self._ticks: list[int] = []
        self._scheduled: int | None = None
        self._handle: asyncio.TimerHandle | None = None

    def add(self, timer: Timer) -> None:
        if timer.delay <= 0:
            self._loop.call_soon(self._fire_one, timer)
            return
        tick = math.ceil((self._loop.time() + timer.delay) / RESOLUTION)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            heapq.heappush(self._ticks, tick)
            if self._scheduled is None or tick < self._scheduled:
                self._schedule(tick)
        bucket.add(timer)
        timer.handle = bucket  # Timer.cancel() discards itself from its bucket

    def cancel(self, timer: Timer) -> None:
        timer.cancel()

    def _schedule(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._scheduled = tick
        self._handle = self._loop.call_at(tick * RESOLUTION, self._run)

    def _fire_one(self, timer: Timer) -> None:
        if not timer.cancelled:
            if self._before_fire is not None:
                self._before_fire()
            timer.fire()
            self._after_fire()

    def _run(self) -> None:
        self._handle = None
        self._scheduled = None
        now_tick = math.floor(self._loop.time() / RESOLUTION) + 1
        ticks = self._ticks
        fired = False
        if self._before_fire is not None:
            self._before_fire()
        while ticks and ticks[0] <= now_tick:
            tick = heapq.heappop(ticks)
            bucket = self._buckets.pop(tick, None)
            if not bucket:
                continue
            for timer in bucket:
                timer.handle = None  # from here on a cancel() leaves this bucket alone
            for timer in bucket:
                if not timer.cancelled:
                    try:
                        timer.fire()
                    except Exception:  # one failing timer must not lose the others in its bucket
                        _log.exception("timer callback failed")
                    fired = True
        if fired:
            self._after_fire()
        while ticks and not self._buckets.get(ticks[0]):
            self._buckets.pop(heapq.heappop(ticks), None)
        if ticks:
            self._schedule(ticks[0])

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._buckets.clear()
        self._ticks.clear()
