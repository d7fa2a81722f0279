"""Cartesian safety on real arms: kinematics from the robot file, limits on the post-IK pose, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from vla_runtime.runtime.kinematics_files import arm_kinematics
from vla_runtime.runtime.manifest import SafetyDefaults
from vla_runtime.runtime.robot import STOP_KEYS
from vla_runtime.runtime.robot_description import RobotDescriptionError, load_robot_description, parse_robot_description
from vla_runtime.runtime.safety import ActionSafety, SafetyLimits
from vla_runtime.runtime.types import RobotState

ROBOTS = ("koch_dynamixel", "so101_feetech", "ur5e_robotiq")
UR_HOME = (0.0, -1.57, 1.57, -1.57, -1.57, 0.0)  # rad, the RTDE simulator's start pose


def arm(robot, kind="ee_delta"):
    desc = load_robot_description(robot)
    kin = arm_kinematics(desc)
    limits_only = {k: v for k, v in desc.safety.items() if k not in STOP_KEYS}  # not the on_stop settings
    limits = SafetyLimits.from_sources(SafetyDefaults(), limits_only, desc.joint_min, desc.joint_max,
                                       desc.joint_max_velocity)
    dim = 7 if kind == "ee_delta" else len(desc.arm.joints) + 1
    return desc, kin, limits, ActionSafety(limits, kind, dim, kin, len(desc.arm.joints))


def measured(kin, q, gripper=0.5):
    pos, rpy = kin.forward(q)
    return RobotState(np.asarray(q, float), pos, rpy, gripper, 0.0)


def start(robot, kin):
    return np.array(UR_HOME) if robot.startswith("ur5e") else np.zeros(len(kin.joint_names))


@pytest.mark.parametrize("robot", ROBOTS)
def test_example_robots_ship_a_model_and_cartesian_limits(robot):
    desc, kin, limits, _ = arm(robot)
    assert desc.mapping == "ee_delta" and kin.joint_names == tuple(j.name for j in desc.arm.joints)
    assert limits.max_translation_step == desc.safety["max_translation_step"] == 0.02
    pos, _ = kin.forward(start(robot, kin))
    assert np.all(pos > limits.workspace_min) and np.all(pos < limits.workspace_max)  # the sim starts inside


@pytest.mark.parametrize("robot", ROBOTS)
def test_ee_steps_are_limited_and_land_where_asked(robot):
    _, kin, limits, safety = arm(robot)
    current = measured(kin, start(robot, kin))
    inward = -np.sign(current.ee_position[0])  # towards the base along x: inside every example box
    command, report = safety.enforce(current, np.array([0.05 * inward, 0.0, 0.0, 0, 0, 0, 0.3]), 0.1)
    assert "translation_step" in report.interventions and not report.held
    reached, _ = kin.forward(command.joint_targets)
    step = reached - current.ee_position
    assert np.linalg.norm(step) <= limits.max_translation_step + 0.005 and step[0] * inward > 0.01


@pytest.mark.parametrize("robot", ROBOTS)
def test_an_unreachable_target_holds_the_arm(robot):
    _, kin, _, safety = arm(robot)
    current = measured(kin, start(robot, kin))
    outward = current.ee_position / np.linalg.norm(current.ee_position)
    lim = safety.limits
    # stretch the arm's reach: a box so large that only reach and joint limits stop the target
    wide = SafetyLimits(lim.max_translation_step, lim.max_rotation_step, (-3.0, -3.0, -3.0), (3.0, 3.0, 3.0),
                        lim.gripper_min, lim.gripper_max, lim.joint_min, lim.joint_max, lim.joint_max_velocity)
    safety = ActionSafety(wide, "ee_delta", 7, kin, len(kin.joint_names))
    q = current.joint_positions
    for _ in range(200):  # walk outwards until the arm cannot follow
        command, report = safety.enforce(measured(kin, q), np.concatenate([0.02 * outward, [0, 0, 0, 0.5]]), 0.1)
        if report.held:
            break
        q = command.joint_targets
    else:
        pytest.fail("the arm followed a target 4 m away")
    assert report.interventions == ("ik_failed",)
    np.testing.assert_array_equal(command.joint_targets, q)  # hold = the measured joints


def test_joint_actions_on_a_real_arm_obey_the_box_and_cartesian_step():
    desc, kin, limits, safety = arm("so101_feetech", kind="joint_position")
    q = np.zeros(5)
    current = measured(kin, q)
    # a joint jump that would swing the tip far: shortened until the tip moves at most one step
    command, report = safety.enforce(current, np.array([0.0, 0.0, 0.0, 0.6, 0.0, 0.5]), 1.0)
    assert set(report.interventions) & {"translation_step", "rotation_step"} and not report.held
    reached, _ = kin.forward(command.joint_targets)
    assert np.linalg.norm(reached - current.ee_position) <= limits.max_translation_step + 0.005


MINIMAL = """
[robot]
name = "bench"
[arm]
driver = "feetech"
port = "/dev/null"
[[arm.joints]]
name = "j1"
min = -1.0
max = 1.0
max_velocity = 1.0
[cameras.front]
kind = "v4l2"
[action]
mapping = "joint_position"
"""


@pytest.mark.parametrize("key", ["workspace_min = [0.0, 0.0, 0.0]", "max_translation_step = 0.01",
                                 "max_rotation_step = 0.1", "workspace_max = [1.0, 1.0, 1.0]"])
def test_cartesian_safety_keys_without_kinematics_are_refused(key):
    with pytest.raises(RobotDescriptionError) as err:
        parse_robot_description(MINIMAL + f"[safety]\n{key}\n", "bench.toml")
    message = str(err.value)
    assert message.startswith("bench.toml: [safety] " + key.split()[0]) and "[arm] kinematics" in message
    assert "\n" not in message


def test_non_cartesian_safety_keys_need_no_model():
    desc = parse_robot_description(MINIMAL + "[safety]\ngripper_max = 0.9\n", "bench.toml")
    assert desc.safety["gripper_max"] == 0.9 and not desc.has_kinematics


def test_a_model_whose_joints_differ_is_refused_in_one_line(tmp_path):
    path = tmp_path / "arm.toml"
    path.write_text(MINIMAL.replace('port = "/dev/null"', 'port = "/dev/null"\nkinematics = "so101.urdf"\n'
                                    'ee_link = "gripper_tip"'))
    from vla_runtime.runtime.kinematics_files import KinematicModelError

    with pytest.raises(KinematicModelError, match="joint 1 from the base to 'gripper_tip' is 'shoulder_pan'"):
        arm_kinematics(load_robot_description(str(path)))
    with pytest.raises(RobotDescriptionError, match="needs ee_link"):
        parse_robot_description(MINIMAL.replace('port = "/dev/null"', 'port = "/dev/null"\nkinematics = "so101.urdf"'),
                                "x.toml")
