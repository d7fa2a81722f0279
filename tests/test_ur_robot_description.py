"""The shipped UR5e + Robotiq description builds working drivers, and the sim-device CLI serves them."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import pytest
from vla_runtime.drivers.robotiq import make_gripper
from vla_runtime.drivers.robotiq.gripper import RobotiqConfig, open_gripper
from vla_runtime.drivers.robotiq.sim import GripperModel, RobotiqSim
from vla_runtime.drivers.ur.arm import UR_JOINTS, URArm, URConfig, open_arm
from vla_runtime.drivers.ur.sim import URSim
from vla_runtime.drivers.ur_rtde import make_arm
from vla_runtime.runtime.robot import DriverRobot
from vla_runtime.runtime.robot_description import load_robot_description


def _with(spec, **options):
    return replace(spec, options=MappingProxyType({**spec.options, **options}))


def test_description_drives_both_simulators_through_driver_robot():
    desc = load_robot_description("ur5e_robotiq")
    assert desc.arm.driver == "ur-rtde" and desc.gripper.driver == "robotiq"
    assert tuple(j.name for j in desc.arm.joints) == UR_JOINTS and desc.mapping == "ee_delta"
    with URSim(port=0, script_port=0) as ur, RobotiqSim(model=GripperModel(activation_s=0.05)) as hand:
        arm = make_arm(_with(desc.arm, host="127.0.0.1", port=ur.port, script_port=ur.script_port))
        gripper = make_gripper(_with(desc.gripper, port=hand.port))
        assert isinstance(arm, URArm)
        robot = DriverRobot(desc.name, arm, gripper)
        try:
            robot.activate()
            state = robot.read_state(now=0.0)
            target = state.joint_positions + 0.05
            for i in range(5):
                sent_q, sent_g = robot.command(target, 0.4, now=i * 0.1, period=0.1)
                time.sleep(0.1)
            np.testing.assert_array_equal(sent_q, target)
            assert sent_g == pytest.approx(1 - 153 / 255)  # 0.4 open = count 153
            np.testing.assert_allclose(robot.read_state(now=0.5).joint_positions, target, atol=1e-3)
            robot.deactivate()
        finally:
            robot.close()


def test_description_mistakes_are_one_line_value_errors():
    desc = load_robot_description("ur5e_robotiq")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['hots'\]"):
        make_arm(_with(desc.arm, hots="127.0.0.1"))
    with pytest.raises(ValueError, match="lookahead"):
        make_arm(_with(desc.arm, lookahead=5.0))
    with pytest.raises(ValueError, match="unknown key"):
        make_gripper(_with(desc.gripper, baudrate=9600))
    with pytest.raises(ConnectionError, match="cannot open serial port"):
        make_gripper(_with(desc.gripper, port="/nonexistent/tty"))
    with pytest.raises(ConnectionError, match="cannot connect"):
        make_arm(_with(desc.arm, host="127.0.0.1", port=1))


def _connect_and_read(kind: str, where: str) -> None:
    """Our driver, in this process, on the device another process serves."""
    if kind == "robotiq":
        driver = open_gripper(RobotiqConfig(port=where))
    else:
        host, port = where.split(":")
        driver = open_arm(URConfig(host=host, port=int(port)))
    try:
        driver.configure()
        driver.read(now=0.0)
    finally:
        driver.close()


@pytest.mark.parametrize(
    "argv,pattern",
    [
        (["robotiq"], r"on (/dev/\S+)"),
        (["ur-rtde", "--port", "0", "--script-port", "0"], r"RTDE on (127\.0\.0\.1:\d+)"),
    ],
)
def test_sim_device_cli_prints_where_to_connect_and_exits_cleanly(argv, pattern):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vla_runtime.runtime.cli", "sim-device", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no banner within 20 s"
        found = re.search(pattern, proc.stdout.readline())
        assert found
        _connect_and_read(argv[0], found.group(1))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
