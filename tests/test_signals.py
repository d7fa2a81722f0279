"""SIGTERM, SIGHUP and Ctrl-C on a real `vla-runtime` process: safe stop, outputs written, exit code.

The process runs the simulated robot; once it reports that it is activated and ticking, the
signal arrives the way `kill`, `systemctl stop`, `docker stop` or a closed terminal deliver it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

# found, not imported: importing MuJoCo here would fix its GL backend before the simulator chooses one
if importlib.util.find_spec("mujoco") is None:
    pytest.skip("the simulated robot needs MuJoCo (pip install vla-runtime[sim])", allow_module_level=True)
pytestmark = pytest.mark.timeout(240)


def start_run(tmp_path, *extra):
    args = ["-v", "run", "--robot", "sim", "--policy", "scripted", "--steps", "100000", "--max-misses", "100000",
            "--profile", str(tmp_path / "profile.json"), "--trace", str(tmp_path / "trace.json"),
            "--record", str(tmp_path / "episode"), *extra]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.runtime.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def wait_until_ticking(proc, timeout=180.0) -> tuple[list[str], threading.Thread]:
    """Read stderr (in a thread, to the end) until the loop says it is activated, then a few ticks more."""
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if "activated after" in line:
                ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if not ready.wait(timeout):
        proc.kill()
        pytest.fail("the run never reported activation:\n" + "".join(lines[-30:]))
    time.sleep(0.5)  # a few ticks at 10 Hz: the signal lands mid-run
    return lines, reader


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_signal_mid_run_stops_safely_writes_outputs_and_exits_with_the_shell_code(tmp_path, signum, code):
    proc = start_run(tmp_path)
    lines, reader = wait_until_ticking(proc)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    stdout, err = proc.stdout.read(), "".join(lines)
    assert proc.returncode == code, err[-3000:]
    name = signal.Signals(signum).name
    assert f"interrupted ({name}): on_stop = hold; sim: inactive, actuators holding the measured pose" in err
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert profile["episode"]["signal"] == name and profile["episode"]["stop_reason"] == "interrupted"
    assert profile["episode"]["ticks"] >= 1
    assert (tmp_path / "trace.json").stat().st_size > 0
    assert "recorded:" in stdout and any((tmp_path / "episode").iterdir())
