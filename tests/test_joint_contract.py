"""Bundle <-> robot contract: names, order and units checked before any driver opens; explicit reorder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import vla_runtime.runtime.sim  # noqa: F401 - MuJoCo's offscreen GL platform, before any test imports MuJoCo
from bundle_factory import write_manifest
from vla_runtime.runtime.cli import main
from vla_runtime.runtime.joint_contract import (
    EE_DELTA_NAMES,
    EE_DELTA_UNITS,
    ContractError,
    ReorderedPolicy,
    RobotLayout,
    check_contract,
    parse_joint_map,
)
from vla_runtime.runtime.types import ActionChunk, Frame, Policy, RobotState

SO101 = RobotLayout.of(("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"))
RAD5 = ("rad",) * 5


def joint_action(names, units=None):
    names = tuple(names) + ("gripper",)
    return "joint_position", names, tuple(units or ("rad",) * (len(names) - 1)) + ("open",), (), ()


def test_matching_layouts_need_no_mapping():
    assert check_contract(*joint_action(SO101.joints), SO101) is None
    assert check_contract("ee_delta", EE_DELTA_NAMES, EE_DELTA_UNITS, (), (), SO101) is None


@pytest.mark.parametrize(
    "names, units, message",
    [
        (("shoulder_pan", "elbow_flex", "shoulder_lift", "wrist_flex", "wrist_roll"), RAD5,
         "bundle action joint 2 is 'elbow_flex' in rad but the robot's is 'shoulder_lift' in rad; rename or reorder"),
        (SO101.joints, ("rad", "rad", "deg", "rad", "rad"),
         "bundle action joint 3 is 'elbow_flex' in deg but the robot's is 'elbow_flex' in rad"),
        (SO101.joints[:4], RAD5[:4], "the bundle has 4 action joints"),
        (("shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll"), RAD5,
         "joint 3 is 'elbow' in rad but the robot's is 'elbow_flex'"),
    ],
)
def test_a_mismatch_is_refused_naming_the_first_difference(names, units, message):
    with pytest.raises(ContractError, match=message):
        check_contract(*joint_action(names, units), SO101)


def test_ee_bundles_must_use_the_cartesian_layout():
    with pytest.raises(ContractError, match="bundle action 6 is 'yaw' in deg but the robot's is 'dyaw' in rad"):
        check_contract("ee_delta", (*EE_DELTA_NAMES[:5], "yaw", "gripper"), (*EE_DELTA_UNITS[:5], "deg", "open"),
                       (), (), SO101)
    with pytest.raises(ContractError, match="reorders joint-position bundles"):
        check_contract("ee_delta", EE_DELTA_NAMES, EE_DELTA_UNITS, (), (), SO101, joint_map=())


def test_ee_bundles_need_the_arms_kinematics():
    blind = RobotLayout.of(SO101.joints, kinematics=False)
    with pytest.raises(ContractError, match="needs the arm's kinematic model; add \\[arm\\] kinematics"):
        check_contract("ee_delta", EE_DELTA_NAMES, EE_DELTA_UNITS, (), (), blind)
    assert check_contract(*joint_action(SO101.joints), blind) is None


def test_a_state_reading_bundle_is_checked_like_its_actions():
    with pytest.raises(ContractError, match="bundle state joint 1 is 'pan'"):
        check_contract("ee_delta", EE_DELTA_NAMES, EE_DELTA_UNITS, ("pan", *SO101.joints[1:]), RAD5, SO101)


def test_a_joint_map_renames_and_reorders_explicitly():
    bundle = ("shoulder_lift", "shoulder_pan", "elbow", "wrist_flex", "wrist_roll")
    mapping = check_contract(*joint_action(bundle), SO101, joint_map=parse_joint_map("elbow=elbow_flex", "--joint-map"))
    assert mapping.columns == (1, 0, 2, 3, 4) and mapping.names == (*SO101.joints, "gripper")
    actions = np.array([[10.0, 20.0, 30.0, 40.0, 50.0, 0.7]])  # bundle order: lift, pan, elbow, ..., gripper
    np.testing.assert_array_equal(mapping.to_robot(actions), [[20.0, 10.0, 30.0, 40.0, 50.0, 0.7]])
    with pytest.raises(ContractError, match="robot joint 'elbow_flex' is driven by no bundle action joint"):
        check_contract(*joint_action(bundle), SO101, joint_map=())
    with pytest.raises(ContractError, match="names bundle joint 'wrist', which the bundle does not have"):
        check_contract(*joint_action(bundle), SO101, joint_map=(("wrist", "wrist_flex"),))


@pytest.mark.parametrize("text", ["elbow", "a=b,a=c", "=x"])
def test_bad_joint_maps_are_one_line(text):
    with pytest.raises(ContractError, match="--joint-map"):
        parse_joint_map(text, "--joint-map")


class FixedPolicy(Policy):
    """Returns one fixed chunk in bundle order and remembers the state it was given."""

    def __init__(self, actions, names):
        self.actions, self.names, self.seen = np.asarray(actions, float), names, None

    def infer(self, frame, task, state=None):
        self.seen = state
        return ActionChunk(self.actions.copy(), self.names, frame.t_capture)


def test_reordered_policy_hands_chunks_in_robot_order_and_state_in_bundle_order():
    bundle = ("shoulder_lift", "shoulder_pan", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
    mapping = check_contract("joint_position", bundle, RAD5 + ("open",), (), (), SO101, joint_map=())
    inner = FixedPolicy([[1.0, 2.0, 3.0, 4.0, 5.0, 0.5]], bundle)
    policy = ReorderedPolicy(inner, mapping)
    state = RobotState(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), np.zeros(3), np.zeros(3), 1.0, 0.0)
    chunk = policy.infer(Frame(np.zeros((4, 4, 3), np.uint8), 0.0), "task", state)
    np.testing.assert_array_equal(chunk.actions, [[2.0, 1.0, 3.0, 4.0, 5.0, 0.5]])
    assert chunk.names == (*SO101.joints, "gripper")
    np.testing.assert_array_equal(inner.seen.joint_positions, [0.2, 0.1, 0.3, 0.4, 0.5])


SIM_JOINTS = ("base_yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "wrist_yaw")


def joint_bundle(tiny_bundle_copy, joints):
    """The tiny bundle relabelled as a joint-position policy for the sim arm (its graphs do not care)."""
    path = tiny_bundle_copy("parallel")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["action"].update(kind="joint_position", names=[*joints, "gripper"], units=["rad"] * 6 + ["open"])
    write_manifest(path, manifest)  # sealed again, as an exporter writing this layout would
    return path


def sim_joint_robot(tmp_path):
    from importlib import resources

    text = resources.files("vla_runtime.runtime").joinpath("robots", "sim.toml").read_text()
    path = tmp_path / "sim_joints.toml"
    path.write_text(text.replace('mapping = "ee_delta"', 'mapping = "joint_position"'))
    return path


def test_run_refuses_a_reordered_bundle_before_opening_anything(tiny_bundle_copy, tmp_path, capsys):
    pytest.importorskip("mujoco", reason="the simulated arm runs on MuJoCo")
    swapped = ("shoulder", "base_yaw", *SIM_JOINTS[2:])
    bundle = joint_bundle(tiny_bundle_copy, swapped)
    robot = sim_joint_robot(tmp_path)
    rc = main(["--bundle", str(bundle), "--robot", str(robot), "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "bundle action joint 1 is 'shoulder' in rad but the robot's is 'base_yaw' in rad" in err
    assert "nothing was opened" in err
    rc = main(["--bundle", str(bundle), "--robot", str(robot), "--steps", "2", "--joint-map", "by-name",
               "--max-misses", "1000"])
    out = capsys.readouterr().out
    assert rc == 0 and "episode: completed after 2 ticks" in out


def test_an_ee_bundle_on_an_arm_without_a_model_is_refused_before_any_port_opens(tiny_bundle, tmp_path, capsys):
    robot = tmp_path / "arm.toml"
    robot.write_text(
        '[robot]\nname = "bench"\n[arm]\ndriver = "feetech"\nport = "/nonexistent/tty"\n'
        '[[arm.joints]]\nname = "j1"\nmin = -1.0\nmax = 1.0\nmax_velocity = 1.0\n'
        '[cameras.front]\nkind = "video"\npath = "/nonexistent/clip"\n[action]\nmapping = "ee_delta"\n'
    )
    rc = main(["--bundle", str(tiny_bundle("parallel")), "--robot", str(robot)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "needs the arm's kinematic model" in err and "nothing was opened on the robot" in err
