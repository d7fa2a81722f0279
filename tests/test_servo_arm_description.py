"""The shipped robot descriptions build working servo arms and grippers against the simulators."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from vla_runtime.drivers.arm import _OPEN_BUSES
from vla_runtime.drivers.base import DriverState
from vla_runtime.drivers.dynamixel.sim import DynamixelSim
from vla_runtime.drivers.feetech.sim import FeetechSim
from vla_runtime.runtime import robot_description

pytestmark = pytest.mark.timeout(60)

CASES = [
    ("koch_dynamixel.toml", "/dev/ttyUSB0", DynamixelSim, "dynamixel"),
    ("so101_feetech.toml", "/dev/ttyACM0", FeetechSim, "feetech"),
]


@pytest.mark.parametrize("filename,port,sim_cls,family", CASES, ids=[c[3] for c in CASES])
def test_description_builds_a_shared_bus_arm_and_gripper(filename, port, sim_cls, family):
    text = resources.files("vla_runtime.drivers").joinpath("robots", filename).read_text()
    with sim_cls(ids=(1, 2, 3, 4, 5, 6)) as sim:
        desc = robot_description.parse_robot_description(text.replace(port, sim.port), filename)
        module = __import__(f"vla_runtime.drivers.{desc.arm.driver}", fromlist=["make_arm"])
        arm = module.make_arm(desc.arm)
        gripper = module.make_gripper(desc.gripper)
        assert arm.bus is gripper.bus  # one adapter, opened once
        assert arm.joint_names == tuple(j.name for j in desc.arm.joints)
        for device in (arm, gripper):
            device.configure()
            device.activate()
        sent = arm.command(np.full(5, 0.2), 0.0, 0.1)
        assert np.allclose(sent, 0.2, atol=np.pi / 4096)
        assert gripper.command(0.5, 0.0, 0.1) == pytest.approx(0.5, abs=1e-3)
        arm.close()
        assert gripper.read(0.0).fault is None  # the shared port stays open for the gripper
        gripper.close()
        assert arm.state is gripper.state is DriverState.INACTIVE
        assert all(not s.torque for s in sim.servos.values())
    assert not _OPEN_BUSES


def test_missing_port_and_gripper_keys_are_one_line_errors():
    from vla_runtime.drivers.dynamixel import make_arm

    text = (
        '[robot]\nname="x"\n[arm]\ndriver="dynamixel"\nport="/dev/null"\n'
        '[[arm.joints]]\nname="a"\nmin=-1\nmax=1\nmax_velocity=1\n'
        '[gripper]\ndriver="dynamixel"\nport="/dev/null"\nid=6\nopen_ticks=1\nclosed_ticks=2\n'
        '[cameras.front]\nkind="v4l2"\n'
    )
    desc = robot_description.parse_robot_description(text, "x.toml")
    with pytest.raises(robot_description.RobotDescriptionError, match=r"x.toml: \[arm\] missing key 'port'"):
        robot_description.parse_robot_description(text.replace('port="/dev/null"\n[[', "[["), "x.toml")
    with pytest.raises(robot_description.RobotDescriptionError, match=r"\[gripper\] missing key 'id'"):
        robot_description.parse_robot_description(text.replace("id=6\n", ""), "x.toml")
    bad = desc.arm.__class__("dynamixel", {"port": "/nonexistent/ttyUSB7"}, desc.arm.joints)
    with pytest.raises(ConnectionError, match="cannot open serial port /nonexistent/ttyUSB7"):
        make_arm(bad)
