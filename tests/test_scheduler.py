"""The scheduler keeps absolute deadlines, counts every overrun and never bursts to catch up."""

import os
import time

import pytest
from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig


class FakeClock:
    """A clock that only moves when the code under test sleeps or does 'work'."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def make(rate=10.0, misses=3):
    clock = FakeClock()
    sched = Scheduler(SchedulerConfig(rate, spin_s=0.0, max_consecutive_misses=misses), clock=clock, sleep=clock.sleep)
    return sched, clock


def test_ticks_fire_on_the_absolute_grid_whatever_the_work_takes():
    sched, clock = make(rate=10.0)
    t0 = sched.start()
    for k, work in enumerate([0.01, 0.09, 0.0, 0.05, 0.099, 0.02]):
        assert sched.tick() == k
        assert clock() == pytest.approx(t0 + k * 0.1)
        with sched.section("work"):
            clock.sleep(work)
        assert sched.wait() is True
    assert sched.misses == 0
    pacing = sched.profiler.pacing()
    assert pacing["drift_ms"] == pytest.approx(0.0, abs=1e-6)
    assert pacing["period_error_max_ms"] == pytest.approx(0.0, abs=1e-6)


def test_an_overrun_is_counted_and_missed_slots_are_skipped_not_burst():
    sched, clock = make(rate=10.0)
    t0 = sched.start()
    sched.tick()
    clock.sleep(0.25)  # 2.5 periods of work
    assert sched.wait() is False
    assert sched.misses == 1
    assert sched.skipped_slots == 2  # slots 1 and 2 passed during the work
    assert sched.tick() == 3
    assert clock() == pytest.approx(t0 + 0.3)  # the next future deadline, still on the grid
    assert sched.profiler.missed == [0]
    assert sched.profiler.pacing()["skipped_slots"] == 2


def test_consecutive_misses_request_a_stop_and_an_on_time_tick_resets_the_count():
    sched, clock = make(rate=10.0, misses=2)
    sched.start()
    for _ in range(1):
        sched.tick()
        clock.sleep(0.15)
        sched.wait()
    assert not sched.stop_requested
    sched.tick()
    sched.wait()  # on time
    assert sched.consecutive_misses == 0
    for _ in range(2):
        sched.tick()
        clock.sleep(0.12)
        sched.wait()
    assert sched.stop_requested
    assert sched.misses == 3


def test_sections_are_timed_per_stage():
    sched, clock = make(rate=10.0)
    sched.start()
    for _ in range(3):
        sched.tick()
        with sched.section("capture"):
            clock.sleep(0.004)
        with sched.section("infer"):
            clock.sleep(0.03)
        sched.wait()
    stats = sched.profiler.stage_stats()
    assert stats["capture"]["n"] == 3
    assert stats["capture"]["p50"] == pytest.approx(4.0)
    assert stats["infer"]["max"] == pytest.approx(30.0)
    assert stats["slack"]["p50"] == pytest.approx(100.0 - 34.0)


def test_real_clock_keeps_absolute_deadlines_without_accumulating_drift():
    # generous bounds: this checks the invariant (no tick early, lateness does not grow), not speed
    sched = Scheduler(SchedulerConfig(200.0, max_consecutive_misses=1000))
    t0 = sched.start()
    for k in range(40):
        assert sched.tick() >= k
        time.sleep(0.002 * (k % 3))  # uneven work, 2 ms on average, always < one period
        sched.wait()
    starts = sched.profiler.starts
    slots = sched.profiler.slots
    for s, k in zip(starts, slots, strict=True):
        assert s >= t0 + k * sched.period - 1e-6  # never before its deadline
    assert sched.profiler.pacing()["drift_ms"] < 50.0  # a relative sleep(period) loop would be ~80 ms late by now


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rate_hz=0),
        dict(rate_hz=-5),
        dict(rate_hz=10, spin_s=0.2),
        dict(rate_hz=10, max_consecutive_misses=0),
        dict(rate_hz=10, realtime_priority=100),
    ],
)
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        SchedulerConfig(**kwargs)


@pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="POSIX scheduling API only")
def test_realtime_class_is_entered_when_permitted_and_always_released():
    sched = Scheduler(SchedulerConfig(100.0, realtime_priority=10))
    sched.start()
    try:
        if sched.realtime:  # root or CAP_SYS_NICE; otherwise a warning and normal scheduling
            assert os.sched_getscheduler(0) == os.SCHED_FIFO
        sched.tick()
        sched.wait()
    finally:
        sched.release()
    assert not sched.realtime and os.sched_getscheduler(0) == os.SCHED_OTHER
