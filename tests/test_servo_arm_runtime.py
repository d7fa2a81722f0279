"""Servo arm + jaw on one simulated bus, driven through the runtime's DriverRobot like a control loop."""

from __future__ import annotations

import time

import numpy as np
import pytest
from vla_runtime.drivers.arm import JointCalibration, ServoArm, ServoArmConfig
from vla_runtime.drivers.base import DriverState
from vla_runtime.drivers.dynamixel import protocol as dxl
from vla_runtime.drivers.dynamixel.bus import DynamixelBus
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.gripper_servo import ServoGripper, ServoGripperConfig
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.transport import SerialConfig, SerialTransport
from vla_runtime.runtime import robot as robot_module

pytestmark = pytest.mark.timeout(60)


def test_ten_hz_ticks_track_targets_and_record_what_was_sent():
    with DynamixelSim(ids=(1, 2, 3, 4, 5, 6)) as sim:
        transport = SerialTransport(SerialConfig(sim.port))
        bus = DynamixelBus(Link(transport, dxl.decode_status, LinkConfig(timeout=0.2, retries=2)))
        joints = tuple(JointCalibration(name=f"j{i}", id=i, min=-1.0, max=1.0) for i in range(1, 6))
        arm = ServoArm(bus, ServoArmConfig(joints=joints, watchdog_s=0.5))
        jaw = ServoGripper(bus, ServoGripperConfig(id=6, open_ticks=2600, closed_ticks=2000))
        robot = robot_module.DriverRobot("koch-sim", arm, jaw)
        robot.activate()
        assert arm.state is jaw.state is DriverState.ACTIVE
        start = robot.read_state(time.monotonic()).joint_positions
        target = np.array([0.2, -0.2, 0.1, 0.0, 1.5])  # the last joint asks beyond its limit
        period = 0.1
        sent_log = []
        for k in range(8):  # 0.8 s at 10 Hz: enough for the simulated servos to arrive
            now = time.monotonic()
            step = start + (target - start) * min(1.0, (k + 1) / 4)
            sent, sent_jaw = robot.command(step, 0.25, now, period)
            sent_log.append(sent)
            time.sleep(period)
        state = robot.read_state(time.monotonic())
        np.testing.assert_allclose(sent_log[-1], np.clip(target, -1.0, 1.0), atol=np.pi / 4096)
        np.testing.assert_allclose(state.joint_positions, sent_log[-1], atol=1e-9)
        assert sent_jaw == pytest.approx(0.25, abs=1e-3) and state.gripper == pytest.approx(0.25, abs=1e-3)
        assert all(sim.servos[i].memory[98] == 25 for i in range(1, 7))  # 500 ms watchdog armed while running
        robot.deactivate()
        assert all(not s.torque and s.memory[98] == 0 for s in sim.servos.values())
        transport.close()
