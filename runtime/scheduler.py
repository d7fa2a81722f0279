"""Absolute-deadline pacing for the control loop.

Tick k is due at ``t0 + k * period``, computed from the start and never from the previous wake-up,
so sleep jitter cannot pile up into drift. A tick whose work runs past the next deadline is a
miss: it is counted, the slots it overran are skipped (never burst to catch up, which would send
a flurry of stale commands), and too many misses in a row ask the loop for a safe stop.

Usage (the three calls are the whole API)::

    sched.start()
    while running:
        sched.tick()
        with sched.section("capture"):
            frame = camera.read(now)
        ...
        sched.wait()
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vla_runtime.runtime.profiler import Profiler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerConfig:
    rate_hz: float  # ticks per second; the bundle's control.rate_hz unless the user overrides it
    # seconds before each deadline at which sleeping stops and a yielding spin takes over. Off by
    # default: an absolute OS sleep already wakes within ~0.1-0.2 ms on Linux, and on a busy small
    # board a spinning thread gets preempted and wakes later than a sleeping one (bench_loop.py)
    spin_s: float = 0.0
    # deadline misses in a row after which `stop_requested` turns true (the loop then holds and stops)
    max_consecutive_misses: int = 3
    # SCHED_FIFO priority (1..99) for the loop thread, 0 = normal scheduling. Under CPU contention
    # only a real-time class keeps wake-ups punctual; needs root, CAP_SYS_NICE or an rtprio limit,
    # and falls back to normal scheduling with a warning. The spin is skipped under SCHED_FIFO.
    realtime_priority: int = 0

    def __post_init__(self):
        if not (0 < self.rate_hz <= 1000):
            raise ValueError(f"rate_hz {self.rate_hz} must be in (0, 1000] Hz")
        if not (0 <= self.spin_s < 1.0 / self.rate_hz):
            raise ValueError(f"spin_s {self.spin_s} must be >= 0 and shorter than one period")
        if self.max_consecutive_misses < 1:
            raise ValueError("max_consecutive_misses must be >= 1")
        if not (0 <= self.realtime_priority <= 99):
            raise ValueError(f"realtime_priority {self.realtime_priority} must be 0 (off) or 1..99")

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz  # seconds


class Scheduler:
    """Paces ticks on absolute deadlines, times sections and counts overruns."""

    def __init__(
        self,
        config: SchedulerConfig,
        profiler: Profiler | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.config = config
        self.period = config.period  # seconds
        self.profiler = profiler if profiler is not None else Profiler(self.period)
        self._clock = clock
        self._sleep = sleep
        self._t0: float | None = None
        self._k = 0  # index of the current (or next) tick slot
        self.ticks = 0  # ticks actually run
        self.misses = 0  # ticks whose work overran the next deadline
        self.skipped_slots = 0  # deadline slots passed over because of misses
        self.consecutive_misses = 0
        self.realtime = False  # True while the loop thread runs under SCHED_FIFO

    # -- real-time class -------------------------------------------------------------------------
    def _enter_realtime(self) -> None:
        prio = self.config.realtime_priority
        if not prio or self.realtime:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))  # 0: the calling thread
            self.realtime = True
            logger.info("loop thread runs SCHED_FIFO priority %d", prio)
        except (AttributeError, OSError) as exc:
            logger.warning("SCHED_FIFO unavailable (%s); pacing with normal scheduling", exc)

    def release(self) -> None:
        """Return the calling thread to normal scheduling (after the loop ends)."""
        if self.realtime:
            try:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            except OSError as exc:
                logger.warning("could not leave SCHED_FIFO: %s", exc)
            self.realtime = False

    # -- pacing --------------------------------------------------------------------------------
    def start(self, t0: float | None = None) -> float:
        """Fix tick 0's deadline (now by default); returns it."""
        self._enter_realtime()
        self._t0 = self._clock() if t0 is None else t0
        self._k = 0
        self.profiler.start(self._t0)
        return self._t0

    @property
    def t0(self) -> float | None:
        return self._t0

    @property
    def index(self) -> int:
        """Slot index of the current tick (jumps forward over skipped slots)."""
        return self._k

    def deadline(self, k: int) -> float:
        """Absolute start time of slot k."""
        assert self._t0 is not None, "start() first"
        return self._t0 + k * self.period

    def tick(self) -> int:
        """Mark the start of the current tick; returns its slot index."""
        if self._t0 is None:
            self.start()
        now = self._clock()
        self.ticks += 1
        self.profiler.begin_tick(self._k, self.deadline(self._k), now)
        return self._k

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Time one stage of the tick under `name`."""
        t = self._clock()
        try:
            yield
        finally:
            self.profiler.record(name, t, self._clock() - t)

    def wait(self) -> bool:
        """Sleep until the next slot's deadline; returns False when this tick missed it."""
        now = self._clock()
        next_k = self._k + 1
        slack = self.deadline(next_k) - now  # seconds left in the period; < 0 means a miss
        missed = slack < 0
        if missed:
            next_k = math.floor((now - self._t0) / self.period) + 1
            self.misses += 1
            self.consecutive_misses += 1
            self.skipped_slots += next_k - self._k - 1
            logger.debug("tick %d overran its deadline by %.2f ms", self._k, -slack * 1e3)
        else:
            self.consecutive_misses = 0
        self.profiler.end_tick(now, slack, missed)
        self._k = next_k
        self._sleep_until(self.deadline(next_k))
        return not missed

    @property
    def stop_requested(self) -> bool:
        """True after `max_consecutive_misses` misses in a row: the loop can no longer keep time."""
        return self.consecutive_misses >= self.config.max_consecutive_misses

    def _sleep_until(self, deadline: float) -> None:
        # One OS sleep to the deadline (minus the optional spin window); the spin, and any early
        # wake-up, is covered by sleep(0) calls that still yield the GIL to an inference thread.
        spin = 0.0 if self.realtime else self.config.spin_s  # a spinning FIFO thread starves the core
        remaining = deadline - self._clock()
        if remaining > spin:
            self._sleep(remaining - spin)
        while self._clock() < deadline:
            self._sleep(0)
