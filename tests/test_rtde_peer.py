"""ur-rtde (the SDU C++ client from PyPI) streams from our controller simulator while our arm drives it.

ur-rtde blocks while holding the GIL, so it runs in its own process, and the simulator in a
third, each with a deadline. RTDEReceiveInterface has no port argument, so the simulator binds
127.0.0.1:30004; the test is skipped if that port is taken.
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from vla_runtime.drivers.ur.arm import URConfig, open_arm

pytest.importorskip("rtde_receive", reason="ur-rtde (the [peers] extra) is not installed")

RTDE_PORT = 30004

READER = r"""
import json, sys, time
import rtde_receive
r = rtde_receive.RTDEReceiveInterface("127.0.0.1")
print("connected", flush=True)
samples = []
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    samples.append((r.getTimestamp(), r.getActualQ(), r.getRobotMode(), r.getSafetyMode(), r.getRuntimeState()))
    time.sleep(0.05)
r.disconnect()
print(json.dumps(samples), flush=True)
"""


def _readline(proc: subprocess.Popen, deadline: float) -> str:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            return proc.stdout.readline()
    raise AssertionError("no output before the deadline")


@pytest.fixture
def sim_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.drivers.ur.sim", "--port", str(RTDE_PORT), "--script-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = _readline(proc, time.monotonic() + 15)
        if not banner:
            err = proc.stderr.read()
            proc.wait(timeout=5)
            if "cannot listen" in err:
                pytest.skip(f"127.0.0.1:{RTDE_PORT} is busy; ur-rtde cannot be pointed at another port")
            raise AssertionError(f"simulator did not start: {err}")
        script_port = int(re.search(r"accepted on 127\.0\.0\.1:(\d+)", banner).group(1))
        yield proc, script_port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_ur_rtde_streams_from_our_simulator_while_our_arm_moves_it(sim_process):
    sim, script_port = sim_process
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, "2.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert _readline(reader, time.monotonic() + 15).strip() == "connected"
        arm = open_arm(URConfig(host="127.0.0.1", port=RTDE_PORT, script_port=script_port))
        try:
            arm.configure()
            arm.activate()
            start = arm.read(now=0.0).positions
            target = start + np.array([0.3, 0, 0, 0, 0, -0.3])
            for i in range(12):  # 1.2 s at 10 Hz; the simulated joints move at 1 rad/s
                arm.command(target, now=i * 0.1, period=0.1)
                time.sleep(0.1)
            reached = arm.read(now=1.2).positions
            arm.deactivate()
        finally:
            arm.close()
        out, err = reader.communicate(timeout=20)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait(timeout=5)
    assert reader.returncode == 0, err
    samples = json.loads(out.strip().splitlines()[-1])
    stamps = [s[0] for s in samples]
    assert len(samples) > 20 and all(b >= a for a, b in zip(stamps, stamps[1:], strict=False))
    assert stamps[-1] - stamps[0] > 1.5  # the controller clock advanced while we watched
    assert {s[2] for s in samples} == {7} and {s[3] for s in samples} == {1}  # RUNNING, NORMAL
    assert 2 in {s[4] for s in samples}  # the program was PLAYING at some point
    np.testing.assert_allclose(reached, target, atol=1e-3)
    seen = np.array([s[1] for s in samples])
    assert seen[:, 0].max() == pytest.approx(target[0], abs=1e-3)  # ur-rtde saw the motion we commanded
    assert seen[:, 5].min() == pytest.approx(target[5], abs=1e-3)

    sim.send_signal(signal.SIGINT)
    assert sim.wait(timeout=5) == 0  # Ctrl-C is a clean exit
