"""The robot as the control loop sees it: read a state, command joint targets, reach a safe state.

The loop talks only to `Robot` and `Camera`, so the MuJoCo tabletop and a real arm on a serial
bus are interchangeable. `DriverRobot` composes an `ArmDriver` and an optional `GripperDriver`
that were built elsewhere (the CLI's main); it never opens a port itself.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np
from vla_runtime.drivers.cameras.base import Camera  # noqa: F401 - the camera seam, re-exported for the loop
from vla_runtime.runtime.types import RobotState

logger = logging.getLogger(__name__)


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Roll/pitch/yaw (rad, fixed axes x then y then z) -> rotation matrix [3, 3]."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def matrix_to_rpy(m: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> roll/pitch/yaw (rad), the inverse of `rpy_to_matrix`."""
    pitch = np.arcsin(np.clip(-m[2, 0], -1.0, 1.0))
    roll = np.arctan2(m[2, 1], m[2, 2])
    yaw = np.arctan2(m[1, 0], m[0, 0])
    return np.array([roll, pitch, yaw])


def rotation_vector(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> axis * angle (rad) [3]; its norm is the rotation angle."""
    angle = np.arccos(np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0))
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # angle near pi: take the axis from the symmetric part
        axis = np.sqrt(np.clip((np.diag(m) + 1.0) / 2.0, 0.0, None))
        norm = np.linalg.norm(axis)
    return axis / norm * angle


class Kinematics(ABC):
    """Forward and inverse kinematics of the arm's end effector in the base frame."""

    @abstractmethod
    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions [J] -> (position [3] in m, roll/pitch/yaw [3] in rad)."""

    @abstractmethod
    def inverse(self, q_seed: np.ndarray, position: np.ndarray, rpy: np.ndarray) -> np.ndarray:
        """Joint positions [J] near `q_seed` reaching the pose as closely as possible."""


class Robot(ABC):
    """An arm with a gripper, commanded in joint targets plus a gripper opening (0 closed .. 1 open)."""

    name: str = "robot"

    @property
    @abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """Order of every joint array."""

    @property
    def kinematics(self) -> Kinematics | None:
        """Needed for end-effector action spaces; None when the robot has no kinematic model."""
        return None

    @abstractmethod
    def activate(self) -> None:
        """Enable motion; commands are refused before this."""

    @abstractmethod
    def read_state(self, now: float) -> RobotState:
        """Measured joints, end-effector pose and gripper opening."""

    @abstractmethod
    def command(self, joint_targets: np.ndarray, gripper: float, now: float, period: float) -> tuple[np.ndarray, float]:
        """Send targets for one period; returns (joint targets, gripper opening) actually sent."""

    @abstractmethod
    def hold(self, now: float, period: float) -> None:
        """Safe state while active: hold the measured position, stop the gripper where it is."""

    @abstractmethod
    def deactivate(self) -> None:
        """Stop accepting commands and leave the hardware in its safe state."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release ports; deactivates first."""


class DriverRobot(Robot):
    """A `Robot` over an `ArmDriver` and an optional `GripperDriver` (joint units pass through)."""

    def __init__(self, name: str, arm, gripper=None, kinematics: Kinematics | None = None):
        self.name = name
        self.arm = arm  # vla_runtime.drivers.base.ArmDriver, configured or not
        self.gripper = gripper  # vla_runtime.drivers.base.GripperDriver or None
        self._kinematics = kinematics

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(self.arm.joint_names)

    @property
    def kinematics(self) -> Kinematics | None:
        return self._kinematics

    def activate(self) -> None:
        for driver in (self.arm, self.gripper):
            if driver is None:
                continue
            if driver.state.value == "unconfigured":
                driver.configure()
            if driver.state.value == "inactive":
                driver.activate()

    def read_state(self, now: float) -> RobotState:
        joints = self.arm.read(now)
        q = np.asarray(joints.positions, dtype=np.float64)
        gripper = self.gripper.read(now).position if self.gripper is not None else 1.0
        if self._kinematics is not None:
            pos, rpy = self._kinematics.forward(q)
        else:
            pos, rpy = np.full(3, np.nan), np.full(3, np.nan)
        return RobotState(q, pos, rpy, float(gripper), now)

    def command(self, joint_targets, gripper, now, period):
        sent = self.arm.command(joint_targets, now, period)
        sent_gripper = gripper
        if self.gripper is not None:
            sent_gripper = self.gripper.command(gripper, now, period)
        return np.asarray(sent, dtype=np.float64), float(sent_gripper)

    def hold(self, now: float, period: float) -> None:
        state = self.read_state(now)
        self.command(state.joint_positions, state.gripper, now, period)

    def deactivate(self) -> None:
        for driver in (self.arm, self.gripper):
            if driver is not None:
                driver.deactivate()

    def close(self) -> None:
        for driver in (self.arm, self.gripper):
            if driver is not None:
                driver.close()
