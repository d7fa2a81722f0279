"""Real-time options: each one applied for real, or refused in one line naming the fix.

Whether SCHED_FIFO and mlockall are permitted depends on the machine (root, capabilities,
limits), so each test checks whichever outcome this machine gives; the memory lock runs in a
child process so the test process itself never locks its pages.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from vla_runtime.runtime.cli import main
from vla_runtime.runtime.realtime import RealtimeConfig, RealtimeError, apply, check_fifo, parse_cpus

linux_only = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="scheduling calls are Linux-only")


def test_cpu_lists_parse_and_bad_ones_name_the_format():
    assert parse_cpus("2,3") == (2, 3) and parse_cpus("0,2-3") == (0, 2, 3) and parse_cpus("1") == (1,)
    for bad in ("", "a", "1-b", ","):
        with pytest.raises(RealtimeError, match="expected core numbers like 2,3 or 2-3"):
            parse_cpus(bad)
    with pytest.raises(RealtimeError, match="distinct core numbers"):
        RealtimeConfig(cpus=(1, 1))
    with pytest.raises(RealtimeError, match="0 \\(off\\) or 1..99"):
        RealtimeConfig(priority=120)


@linux_only
def test_sched_fifo_is_entered_and_left_or_refused_with_the_fix():
    before = os.sched_getscheduler(0)
    try:
        check_fifo(10)
    except RealtimeError as exc:
        text = str(exc)
        assert "CAP_SYS_NICE" in text and "rtprio" in text and "\n" not in text
    assert os.sched_getscheduler(0) == before  # never left in SCHED_FIFO by the check


@linux_only
def test_affinity_pins_and_refuses_cores_that_do_not_exist():
    allowed = tuple(sorted(os.sched_getaffinity(0)))
    assert apply(RealtimeConfig(cpus=allowed)) == [f"pinned to CPU(s) {','.join(map(str, allowed))}"]
    assert tuple(sorted(os.sched_getaffinity(0))) == allowed
    with pytest.raises(RealtimeError, match="do not exist; this machine has cores 0-"):
        apply(RealtimeConfig(cpus=(4096,)))


@linux_only
def test_mlockall_locks_or_names_the_limit_to_raise():
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))\n"
            "from vla_runtime.runtime.realtime import RealtimeError, lock_memory\n"
            "try:\n    lock_memory(); print('locked')\n"
            "except RealtimeError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    line = out.stdout.strip()
    assert line == "locked" or ("mlockall failed" in line and "ulimit -l" in line and "\n" not in line), line


def test_cli_refuses_a_missing_core_in_one_line_before_loading_anything(capsys):
    rc = main(["--policy", "scripted", "--cpus", "4096", "--robot", "no-such-robot"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--cpus" in err and "unknown robot" not in err
