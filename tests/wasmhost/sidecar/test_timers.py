"""The timer wheel on a real event loop: firing, cancelling, and timers that cancel each other."""

from __future__ import annotations

import asyncio

from wasmhost.sidecar._commands import Timer
from wasmhost.sidecar._timers import TimerWheel


def run_wheel(body: object) -> None:
    """Run ``body(loop)``; any error raised inside a loop callback (the wheel's own) fails the test."""
    loop = asyncio.new_event_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        loop.run_until_complete(body(loop))  # type: ignore[operator]
    finally:
        loop.close()
    assert errors == []


def test_timers_fire_in_time_and_cancelled_ones_never_fire() -> None:
    fired: list[str] = []
    drained: list[int] = []

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        wheel = TimerWheel(loop, lambda: drained.append(1))
        early, late, cancelled = (Timer(0.01, lambda: fired.append("early")), Timer(0.05, lambda: fired.append("late")),
                                  Timer(0.01, lambda: fired.append("cancelled")))
        for timer in (early, late, cancelled):
            wheel.add(timer)
        cancelled.cancel()
        await asyncio.sleep(0.03)
        assert fired == ["early"]
        await asyncio.sleep(0.05)
        assert fired == ["early", "late"] and drained
        wheel.close()

    run_wheel(body)


def test_a_timer_may_cancel_another_of_the_same_bucket_while_firing() -> None:
    fired: list[str] = []

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        wheel = TimerWheel(loop, lambda: None)
        timers: dict[str, Timer] = {}

        def fire(name: str) -> None:
            fired.append(name)
            for other in timers.values():
                other.cancel()  # the first to fire cancels the rest

        for name in ("a", "b", "c"):
            timers[name] = Timer(0.01, lambda name=name: fire(name))  # type: ignore[misc]
            wheel.add(timers[name])
        await asyncio.sleep(0.05)
        assert len(fired) == 1 and all(timer.cancelled for timer in timers.values())
        wheel.close()

    run_wheel(body)
