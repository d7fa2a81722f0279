"""The servo arm and gripper drivers operating our simulated Dynamixel and Feetech buses on a pty."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from vla_runtime.drivers.arm import JointCalibration, ServoArm, ServoArmConfig
from vla_runtime.drivers.base import DeviceTimeout, DriverState, LifecycleError, PortLost
from vla_runtime.drivers.dynamixel import protocol as dxl
from vla_runtime.drivers.dynamixel.bus import DynamixelBus
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.dynamixel.tables import Reg as DReg
from vla_runtime.drivers.feetech import protocol as ft
from vla_runtime.drivers.feetech.bus import FeetechBus
from vla_runtime.drivers.feetech.sim import FeetechSim
from vla_runtime.drivers.feetech.tables import Reg as FReg
from vla_runtime.drivers.gripper_servo import ServoGripper, ServoGripperConfig
from vla_runtime.drivers.link import Link, LinkConfig
from vla_runtime.drivers.transport import SerialConfig, SerialTransport

pytestmark = pytest.mark.timeout(60)

FAMILIES = {
    "dynamixel": (DynamixelSim, DynamixelBus, dxl.decode_status, DReg.TORQUE_ENABLE),
    "feetech": (FeetechSim, FeetechBus, ft.decode, FReg.TORQUE_ENABLE),
}
TICK = 2 * math.pi / 4096


@pytest.fixture(params=sorted(FAMILIES))
def rig(request):
    sim_cls, bus_cls, decode, torque_reg = FAMILIES[request.param]
    sim = sim_cls(ids=(1, 2, 3, 4, 5, 6)).start()
    transport = SerialTransport(SerialConfig(sim.port))
    bus = bus_cls(Link(transport, decode, LinkConfig(timeout=0.2, retries=2)))
    yield sim, bus, torque_reg
    transport.close()
    sim.stop()


def make_arm(bus, **overrides) -> ServoArm:
    joints = tuple(
        JointCalibration(name=f"j{i}", id=i, min=-1.5, max=1.5, direction=1 if i % 2 else -1) for i in range(1, 6)
    )
    return ServoArm(bus, ServoArmConfig(joints=joints, **overrides))


def wait_until(predicate, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_lifecycle_gates_reads_and_writes(rig):
    sim, bus, torque_reg = rig
    arm = make_arm(bus)
    with pytest.raises(LifecycleError, match="configure"):
        arm.read(0.0)
    with pytest.raises(LifecycleError, match="activate"):
        arm.command(np.zeros(5), 0.0, 0.1)
    arm.configure()
    assert arm.state is DriverState.INACTIVE
    reading = arm.read(1.0)
    assert reading.t == 1.0 and reading.positions.shape == (5,)
    with pytest.raises(LifecycleError):
        arm.command(np.zeros(5), 0.0, 0.1)  # configured but torque off: still refused
    assert not any(sim.servos[i].get(torque_reg) for i in range(1, 6))
    arm.activate()
    assert all(sim.servos[i].get(torque_reg) == 1 for i in range(1, 6))
    arm.deactivate()
    assert arm.state is DriverState.INACTIVE
    assert not any(sim.servos[i].get(torque_reg) for i in range(1, 6))


def test_calibrated_positions_match_the_servo_ticks(rig):
    sim, bus, _ = rig
    arm = make_arm(bus)
    arm.configure()
    q = arm.read(0.0).positions
    ticks = np.array([2048 + 16 * i for i in range(1, 6)])  # the simulator's start positions
    direction = np.array([1, -1, 1, -1, 1])
    np.testing.assert_allclose(q, direction * (ticks - 2048) * TICK)


def test_command_moves_the_servos_and_returns_what_was_sent(rig):
    sim, bus, _ = rig
    arm = make_arm(bus)
    arm.configure()
    arm.activate()
    target = np.array([0.3, -0.2, 0.0001, 2.5, -9.0])  # last two beyond the 1.5 rad limits
    sent = arm.command(target, now=0.0, period=0.1)
    expected = np.clip(target, -1.5, 1.5)
    assert np.max(np.abs(sent - expected)) <= TICK / 2 + 1e-12  # quantised to one encoder tick
    assert sent[2] == 0.0  # 0.0001 rad is less than half a tick
    assert wait_until(lambda: np.allclose(arm.read(0.0).positions, sent, atol=1e-9))
    arm.deactivate()


def test_nan_command_sends_nothing(rig):
    sim, bus, _ = rig
    arm = make_arm(bus)
    arm.configure()
    arm.activate()
    before = bus.link.stats.sends
    with pytest.raises(ValueError, match="non-finite"):
        arm.command(np.array([0.0, np.nan, 0.0, 0.0, 0.0]), 0.0, 0.1)
    with pytest.raises(ValueError, match="5 targets"):
        arm.command(np.zeros(4), 0.0, 0.1)
    assert bus.link.stats.sends == before
    assert arm.state is DriverState.ACTIVE


def test_activation_holds_position_instead_of_jumping(rig):
    sim, bus, _ = rig
    arm = make_arm(bus)
    arm.configure()
    before = arm.read(0.0).positions
    arm.activate()
    time.sleep(0.1)
    np.testing.assert_allclose(arm.read(0.0).positions, before)


def test_homing_shift_has_one_meaning_for_both_families(rig):
    sim, bus, _ = rig
    before = bus.read_state([3])[0][0]
    bus.set_homing_shift(3, 100)
    assert bus.read_state([3])[0][0] == before + 100


def test_offset_and_direction_round_trip(rig):
    sim, bus, _ = rig
    joint = JointCalibration(name="wrist", id=4, min=-1.0, max=2.0, offset=0.5, direction=-1, zero_ticks=1000)
    arm = ServoArm(bus, ServoArmConfig(joints=(joint,)))
    arm.configure()
    ticks = 2048 + 16 * 4
    assert arm.read(0.0).positions[0] == pytest.approx(-(ticks - 1000) * TICK + 0.5)
    arm.activate()
    sent = arm.command(np.array([0.7]), 0.0, 0.1)
    goal = round(1000 - (0.7 - 0.5) / TICK)
    assert wait_until(lambda: bus.read_state([4])[0][0] == goal)
    assert sent[0] == pytest.approx(0.7, abs=TICK / 2)


def test_prismatic_joint_in_metres(rig):
    sim, bus, _ = rig
    joint = JointCalibration(name="lift", id=2, min=0.0, max=0.2, zero_ticks=2000, unit="m", metres_per_rev=0.04)
    arm = ServoArm(bus, ServoArmConfig(joints=(joint,)))
    arm.configure()
    assert arm.read(0.0).positions[0] == pytest.approx((2048 + 32 - 2000) * 0.04 / 4096)


def test_port_loss_latches_fault_and_refuses_commands(rig):
    sim, bus, _ = rig
    arm = make_arm(bus)
    arm.configure()
    arm.activate()
    sim.vanish()
    # The kernel may still accept one write after the far end closed; a tick's read then fails.
    with pytest.raises((PortLost, DeviceTimeout)):
        for _ in range(10):
            arm.command(np.zeros(5), 0.0, 0.1)
            arm.read(0.0)
    assert arm.state is DriverState.FAULT and arm.fault.split(":")[0] in ("command", "read")
    with pytest.raises(LifecycleError, match="fault"):
        arm.command(np.zeros(5), 0.0, 0.1)
    arm.deactivate()  # best effort, must not raise
    arm.acknowledge_fault()
    assert arm.state is DriverState.UNCONFIGURED


def test_servo_gripper_opens_closes_and_feels_an_object(rig):
    sim, bus, torque_reg = rig
    gripper = ServoGripper(bus, ServoGripperConfig(id=6, open_ticks=3000, closed_ticks=2000))
    gripper.configure()
    gripper.activate()
    assert gripper.command(1.0, 0.0, 0.1) == 1.0
    assert wait_until(lambda: gripper.read(0.0).position == 1.0)
    sim.servos[6].blocked_below = 2400.0  # an object 40 % open
    assert gripper.command(0.0, 0.0, 0.1, force=0.8) == 0.0
    assert wait_until(lambda: gripper.read(0.0).object_detected)
    if isinstance(bus, FeetechBus):
        assert sim.servos[6].get(FReg.TORQUE_LIMIT) == 400  # force 0.8 x max_torque 0.5 x 1000
    reading = gripper.read(0.0)
    assert reading.position == pytest.approx(0.4, abs=0.01) and reading.fault is None
    assert gripper.command(7.0, 0.0, 0.1) == 1.0  # clipped
    gripper.deactivate()
    assert sim.servos[6].get(torque_reg) == 0
