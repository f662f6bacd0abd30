"""The epoch ticker counts time the process both lived and ran: a CPU deadline, not a wall one."""

from __future__ import annotations

from wasmhost._vm import EpochClock


def test_a_running_process_ticks_with_the_clock() -> None:
    clock = EpochClock(0.005, wall=0.0, cpu=0.0)
    assert clock.ticks(0.005, 0.005) == 1
    assert clock.ticks(0.0201, 0.0201) == 3


def test_a_process_that_did_not_run_does_not_tick() -> None:
    """Preempted, stopped or idle: wall time passes, CPU time does not, so no deadline moves."""
    clock = EpochClock(0.005, wall=0.0, cpu=0.0)
    assert clock.ticks(1.0, 0.0) == 0
    assert clock.ticks(1.004, 0.004) == 0  # 4 ms of running is not yet a tick
    assert clock.ticks(1.006, 0.006) == 1


def test_busy_threads_cannot_speed_the_deadline_past_the_clock() -> None:
    """Several threads burning CPU (module compilation) add up to more CPU than wall time."""
    clock = EpochClock(0.005, wall=0.0, cpu=0.0)
    assert clock.ticks(0.010, 0.040) == 2


def test_fractions_carry_over_between_ticks() -> None:
    clock = EpochClock(0.005, wall=0.0, cpu=0.0)
    assert [clock.ticks(t / 1000, t / 1000) for t in (3, 6, 9, 12)] == [0, 1, 0, 1]


def test_clocks_that_step_back_add_nothing() -> None:
    clock = EpochClock(0.005, wall=1.0, cpu=1.0)
    assert clock.ticks(0.5, 0.5) == 0
    assert clock.ticks(0.506, 0.506) == 1
