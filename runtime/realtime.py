"""Real-time settings for the control process: SCHED_FIFO, locked memory, CPU affinity.

On a PREEMPT_RT (or low-latency) kernel three things keep a 10-100 Hz loop punctual under load:
a real-time scheduling class for the loop thread (it preempts everything else when its deadline
comes), memory locked into RAM (a page fault in the tick costs milliseconds), and cores of its
own (drivers and inference threads elsewhere). Each needs a privilege a default install lacks,
so each is checked before anything opens a port and refused in one line naming the fix, never
silently ignored: a user who asked for real time must not get a loop that only looks like it.

The scheduler enters SCHED_FIFO on the loop thread itself (runtime/scheduler.py) so inference
and driver threads keep normal scheduling; here it is only checked by entering and leaving it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_MCL_CURRENT, _MCL_FUTURE = 1, 2  # <sys/mman.h> on Linux
FIFO_FIX = ("run as root, grant CAP_SYS_NICE (sudo setcap cap_sys_nice+ep \"$(readlink -f \"$(which python3)\")\") "
            "or allow it with an rtprio limit (/etc/security/limits.d: '@robot - rtprio 99'), or drop --rt-priority")
MLOCK_FIX = ("raise the memlock limit (ulimit -l unlimited, or '@robot - memlock unlimited' in "
             "/etc/security/limits.d), grant CAP_IPC_LOCK, or drop --mlockall")


class RealtimeError(RuntimeError):
    """A requested real-time setting is not permitted or not possible here; one line with the fix."""


@dataclass(frozen=True)
class RealtimeConfig:
    priority: int = 0  # SCHED_FIFO priority 1..99 for the loop thread; 0 = normal scheduling
    lock_memory: bool = False  # mlockall(MCL_CURRENT | MCL_FUTURE): no page faults in a tick
    cpus: tuple[int, ...] = ()  # CPU cores this process may run on; () = leave the affinity alone

    def __post_init__(self):
        if not 0 <= self.priority <= 99:
            raise RealtimeError(f"--rt-priority {self.priority}: must be 0 (off) or 1..99")
        if any(c < 0 for c in self.cpus) or len(set(self.cpus)) != len(self.cpus):
            raise RealtimeError(f"--cpus {','.join(map(str, self.cpus))}: list distinct core numbers >= 0")


def parse_cpus(text: str) -> tuple[int, ...]:
    """"2,3" or "2-3" or "0,2-3" -> (0, 2, 3); RealtimeError naming the format otherwise."""
    cpus: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise RealtimeError(f"--cpus {text!r}: expected core numbers like 2,3 or 2-3") from None
    if not cpus:
        raise RealtimeError(f"--cpus {text!r}: expected core numbers like 2,3 or 2-3")
    return tuple(cpus)


def check_fifo(priority: int) -> None:
    """Enter SCHED_FIFO at `priority` on this thread and leave it again; RealtimeError if refused."""
    if not hasattr(os, "sched_setscheduler"):
        raise RealtimeError("--rt-priority needs Linux (os.sched_setscheduler is unavailable here)")
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        raise RealtimeError(f"SCHED_FIFO priority {priority} is not permitted for this user; {FIFO_FIX}") from None
    except OSError as exc:
        raise RealtimeError(f"SCHED_FIFO priority {priority} failed ({exc.strerror}); {FIFO_FIX}") from None
    os.sched_setscheduler(0, before[0], before[1])


def lock_memory() -> None:
    """mlockall(MCL_CURRENT | MCL_FUTURE) through libc; RealtimeError if the limit or privilege is missing."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
        err = ctypes.get_errno()
        raise RealtimeError(f"mlockall failed ({os.strerror(err)}); {MLOCK_FIX}")


def set_affinity(cpus: tuple[int, ...]) -> None:
    """Pin this process (and the threads it starts later) to `cpus`; RealtimeError naming the cores there are."""
    if not hasattr(os, "sched_setaffinity"):
        raise RealtimeError("--cpus needs Linux (os.sched_setaffinity is unavailable here)")
    online = os.cpu_count() or 1
    missing = [c for c in cpus if c >= online]
    if missing:
        raise RealtimeError(f"--cpus: core(s) {missing} do not exist; this machine has cores 0-{online - 1}")
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:  # e.g. outside this container's cpuset
        allowed = sorted(os.sched_getaffinity(0))
        raise RealtimeError(f"--cpus {list(cpus)} refused ({exc.strerror}); this process may use {allowed}") from None


def apply(config: RealtimeConfig) -> list[str]:
    """Check and apply every requested setting before the robot is touched; what was done, for the log."""
    done = []
    if config.cpus:
        set_affinity(config.cpus)
        done.append(f"pinned to CPU(s) {','.join(map(str, config.cpus))}")
    if config.lock_memory:
        lock_memory()
        done.append("memory locked (mlockall)")
    if config.priority:
        check_fifo(config.priority)
        done.append(f"loop thread will run SCHED_FIFO {config.priority}")
    for line in done:
        logger.info("real time: %s", line)
    return done
