"""Each example robot file runs an ee_delta bundle for 50 ticks on `sim-device` buses and a video camera.

The robot files are used as shipped; only `--set` points them at the simulated devices (the
same processes a user starts with `vla-runtime sim-device ...`) and at a clip instead of the
USB camera. End-effector actions go through each arm's kinematic model with the file's
Cartesian limits (workspace box, translation and rotation steps) active.
"""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest
from vla_runtime.runtime.cli import main

pytestmark = pytest.mark.timeout(300)

LENIENT = ["--max-misses", "100000"]  # a loaded test machine overruns; this test is about the robot path


@contextmanager
def sim_device(*argv: str):
    """`vla-runtime sim-device ARGV` in its own process; yields its banner line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.runtime.cli", "sim-device", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, f"sim-device {argv[0]}: no banner within 60 s"
        yield proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def pty_of(banner: str) -> str:
    return re.search(r"on (/dev/\S+)", banner).group(1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A short 'video': a folder of frames of a moving block, which the video camera loops."""
    cv2 = pytest.importorskip("cv2", reason="the video camera decodes through OpenCV")
    folder = tmp_path_factory.mktemp("clip")
    for i in range(8):
        frame = np.full((96, 128, 3), 90, np.uint8)
        frame[30:60, 10 + 10 * i:40 + 10 * i] = (40, 40, 200)  # BGR: a red block sliding right
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), frame)
    return folder


def run_robot(robot: str, sets: list[str], bundle, clip, capsys) -> str:
    sets = [*sets, "cameras.front.kind=video", f"cameras.front.path={clip}"]
    argv = ["--robot", f"drivers/robots/{robot}.toml", "--bundle", str(bundle), "--task", "pick up the red block",
            "--steps", "50", *LENIENT]
    for item in sets:
        argv += ["--set", item]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def check_episode(out: str, robot_name: str, box: str) -> None:
    assert f"robot: {robot_name} (ee_delta)" in out
    assert f"limits: end effector in {box}" in out  # the robot file's Cartesian limits are active
    assert "episode: completed after 50 ticks" in out
    held = int(re.search(r"safety: 50 commands, (\d+) held", out).group(1))
    assert held < 50


@pytest.mark.parametrize("robot, kind", [("koch_dynamixel", "dynamixel"), ("so101_feetech", "feetech")])
def test_servo_arm_robot_files_run_an_ee_bundle(robot, kind, tiny_bundle, clip, capsys, monkeypatch):
    monkeypatch.chdir(__file__.rsplit("/tests/", 1)[0])
    with sim_device(kind, "--ids", "1-6") as banner:
        port = pty_of(banner)
        out = run_robot(robot, [f"arm.port={port}", f"gripper.port={port}"], tiny_bundle("parallel"), clip, capsys)
    box = {"koch_dynamixel": "x 0.10..0.26, y -0.20..0.20, z 0.03..0.22 m",
           "so101_feetech": "x 0.15..0.40, y -0.25..0.25, z 0.03..0.30 m"}[robot]
    check_episode(out, robot.replace("_", "-"), box)


def test_ur5e_robotiq_robot_file_runs_an_ee_bundle(tiny_bundle, clip, capsys, monkeypatch):
    monkeypatch.chdir(__file__.rsplit("/tests/", 1)[0])
    with ExitStack() as stack:
        ur = stack.enter_context(sim_device("ur-rtde", "--port", "0", "--script-port", "0"))
        hand = stack.enter_context(sim_device("robotiq"))
        rtde, script = re.search(r"RTDE on 127\.0\.0\.1:(\d+), control program accepted on 127\.0\.0\.1:(\d+)",
                                 ur).groups()
        sets = ["arm.host=127.0.0.1", f"arm.port={rtde}", f"arm.script_port={script}", f"gripper.port={pty_of(hand)}"]
        out = run_robot("ur5e_robotiq", sets, tiny_bundle("parallel"), clip, capsys)
    check_episode(out, "ur5e-robotiq", "x -0.70..-0.30, y -0.40..0.10, z 0.25..0.60 m")
