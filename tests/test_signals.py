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


def start_run(tmp_path, *extra, policy=True):
    """`vla-runtime -v run` on the sim with the scripted policy (policy=False: the robot and bundle in extra)."""
    robot = ["--robot", "sim", "--policy", "scripted"] if policy else []
    args = ["-v", "run", *robot, "--steps", "100000", "--max-misses", "100000",
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


# -- a real robot file on a simulated bus: what the servos are left in ------------------------------
ROBOT_FILES = {"dynamixel": "koch_dynamixel.toml", "feetech": "so101_feetech.toml"}


def still_images(folder):
    import cv2
    import numpy as np

    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((64, 64, 3), 60 * i, np.uint8))
    return folder


@pytest.mark.parametrize(
    "family, signum, code, on_stop, torque",
    [
        ("dynamixel", signal.SIGTERM, 143, "hold", True),
        ("dynamixel", signal.SIGHUP, 129, "limp", False),
        ("feetech", signal.SIGTERM, 143, "hold", True),  # no device watchdog: only this path can decide
        ("feetech", signal.SIGHUP, 129, "limp", False),
    ],
)
def test_signal_on_a_servo_robot_leaves_the_servos_as_on_stop_says(tmp_path, tiny_bundle, family, signum, code,
                                                                      on_stop, torque):  # fmt: skip
    from pathlib import Path

    import vla_runtime
    from vla_runtime.drivers.dynamixel.sim import DynamixelSim
    from vla_runtime.drivers.feetech.sim import FeetechSim

    sim_cls = DynamixelSim if family == "dynamixel" else FeetechSim
    robot_file = Path(vla_runtime.__file__).parent / "drivers" / "robots" / ROBOT_FILES[family]
    images = still_images(tmp_path / "frames")
    with sim_cls(ids=(1, 2, 3, 4, 5, 6)) as sim:
        sets = [f"arm.port={sim.port}", f"gripper.port={sim.port}", "cameras.front.kind=video",
                f"cameras.front.path={images}", f"safety.on_stop={on_stop}"]  # fmt: skip
        proc = start_run(tmp_path, "--robot", str(robot_file), "--bundle", str(tiny_bundle("parallel")),
                         *[a for s in sets for a in ("--set", s)], policy=False)  # fmt: skip
        lines, reader = wait_until_ticking(proc)
        assert all(s.torque for s in sim.servos.values())  # energised while it runs
        proc.send_signal(signum)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        err = "".join(lines)
        assert proc.returncode == code, err[-3000:]
        assert [s.torque for _, s in sorted(sim.servos.items())] == [torque] * 6
        word = "on" if torque else "off"
        assert f"arm: torque {word} at ids [1, 2, 3, 4, 5] (read back); gripper: torque {word} at ids [6]" in err
        assert json.loads((tmp_path / "profile.json").read_text())["episode"]["signal"] == signal.Signals(signum).name


@pytest.mark.parametrize(
    "fault", [["--bad-crc-rate", "0.05"], ["--drop-rate", "0.05"], ["--duplicate-rate", "0.05"],
              ["--late-rate", "0.05", "--late-ms", "30"]],  # fmt: skip
)
def test_a_koch_episode_on_a_faulty_sim_device_bus_completes(tmp_path, tiny_bundle, fault):
    from pathlib import Path

    import vla_runtime

    device = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.runtime.cli", "sim-device", "dynamixel", "--ids", "1-6", "--seed", "3",
         *fault], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        banner = device.stdout.readline()  # "simulated Dynamixel ...: ids [1, ...] (XL430-W250) on /dev/pts/N"
        port = banner.rsplit(" on ", 1)[-1].strip()
        assert port.startswith("/dev/"), banner
        robot_file = Path(vla_runtime.__file__).parent / "drivers" / "robots" / "koch_dynamixel.toml"
        sets = [f"arm.port={port}", f"gripper.port={port}", "cameras.front.kind=video",
                f"cameras.front.path={still_images(tmp_path / 'frames')}",
                "safety.max_consecutive_rejects=1000",  # a random policy may aim out of reach; this is about the bus
                "arm.timeout_ms=40"]  # a pty on a loaded 2-core CI runner can answer later than a USB adapter
        proc = subprocess.run(
            [sys.executable, "-m", "vla_runtime.runtime.cli", "run", "--robot", str(robot_file),
             "--bundle", str(tiny_bundle("parallel")), "--steps", "30", "--max-misses", "100000",
             *[a for s in sets for a in ("--set", s)]],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "episode: completed after 30 ticks" in proc.stdout
        assert "stopped: on_stop = hold; arm: torque on at ids [1, 2, 3, 4, 5] (read back)" in proc.stdout
    finally:
        device.send_signal(signal.SIGINT)
        device.wait(timeout=10)


def test_ur5e_robotiq_file_waits_out_a_slow_gripper_activation_then_stops_on_sigterm(tmp_path, tiny_bundle):
    """Both controllers are `vla-runtime sim-device` processes; the 2F-85 sweep (2.5 s) outlasts the
    RTDE watchdog window (watchdog_hz = 2 in the file: 0.5 s) and must not stop the UR program."""
    import re
    from pathlib import Path

    import vla_runtime

    def device(*args):
        return subprocess.Popen([sys.executable, "-m", "vla_runtime.runtime.cli", "sim-device", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip

    ur = device("ur-rtde", "--port", "0", "--script-port", "0")
    gripper = device("robotiq", "--activation-s", "2.5")
    try:
        rtde_port, script_port = re.findall(r"127\.0\.0\.1:(\d+)", ur.stdout.readline())
        pty = gripper.stdout.readline().rsplit(" on ", 1)[-1].strip()
        robot_file = Path(vla_runtime.__file__).parent / "drivers" / "robots" / "ur5e_robotiq.toml"
        sets = ["arm.host=127.0.0.1", f"arm.port={rtde_port}", f"arm.script_port={script_port}",
                f"gripper.port={pty}", "cameras.front.kind=video", f"cameras.front.path={still_images(tmp_path / 'f')}",
                "safety.max_consecutive_rejects=1000"]  # fmt: skip
        t0 = time.monotonic()
        proc = start_run(tmp_path, "--robot", str(robot_file), "--bundle", str(tiny_bundle("parallel")),
                         *[a for s in sets for a in ("--set", s)], policy=False)  # fmt: skip
        lines, reader = wait_until_ticking(proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        err = "".join(lines)
        assert proc.returncode == 143, err[-3000:]
        assert time.monotonic() - t0 > 2.5  # the activation really waited for the sweep
        assert "RTDE watchdog" not in err  # the controller never stopped the program on its own
        assert "arm: control program stopped" in err and "gripper: activated=True" in err
        assert json.loads((tmp_path / "profile.json").read_text())["episode"]["ticks"] >= 1
    finally:
        for p in (ur, gripper):
            p.send_signal(signal.SIGINT)
            p.wait(timeout=10)
