"""The measured robot state a model reads, with its statistics, taken from a robot file.

A reference model built with a state input reads the arm's joint positions in the robot
file's order and, when the file has a gripper, the gripper opening last. Without recorded
data the statistics are the joint limits themselves (q01/q99 = min/max, so a joint at either
limit normalises to -1 or +1) and 0..1 for the gripper; `vla-export build --state ROBOT`
writes them into the bundle's `state` so the runtime normalises exactly as the model expects.
"""

from __future__ import annotations

import logging

from vla_runtime.export.norm_stats import NormStats
from vla_runtime.runtime.joint_contract import GRIPPER, RobotLayout
from vla_runtime.runtime.manifest import StateSpace

logger = logging.getLogger(__name__)


def robot_state_stats(robot: str = "sim") -> NormStats:
    """State layout and q01/q99 statistics of a built-in robot name or a robot TOML path."""
    from vla_runtime.runtime.kinematics_files import arm_kinematics
    from vla_runtime.runtime.robot_description import load_robot_description

    desc = load_robot_description(robot, [])
    kinematics = arm_kinematics(desc)
    joints = tuple(j.name for j in desc.arm.joints)
    layout = RobotLayout.of(joints, kinematics.chain.kinds if kinematics is not None else None)
    names, units = layout.joints, layout.units
    low, high = tuple(desc.joint_min), tuple(desc.joint_max)
    if desc.gripper is not None:
        names, units = names + (GRIPPER[0],), units + (GRIPPER[1],)
        low, high = low + (0.0,), high + (1.0,)  # 0 closed .. 1 open
    return NormStats(kind="q01_q99", names=names, units=units, low=low, high=high, space="joint_position")


def state_space_stats(space: StateSpace) -> NormStats | None:
    """A bundle's `state` back as statistics (to rebuild its source model); None when it reads none."""
    if not space.names:
        return None
    n = space.normalization
    return NormStats(kind=n.kind, names=space.names, units=space.units, low=n.low, high=n.high, mean=n.mean,
                     std=n.std, mask=n.mask, space="joint_position")
