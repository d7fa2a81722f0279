"""The robot as the control loop sees it: read a state, command joint targets, reach a safe state.

The loop talks only to `Robot` and `Camera`, so the MuJoCo tabletop and a real arm on a serial
bus are interchangeable. `DriverRobot` composes an `ArmDriver` and an optional `GripperDriver`
that were built elsewhere (the CLI's main); it never opens a port itself.

Lifecycle, as the loop drives it: configure() (open, verify; reads allowed, nothing moves) ->
read_state() -> the policy's warm-up -> activate() (torque, device watchdogs, the UR program)
-> ticks -> stop(hold) as the robot file's `on_stop` says -> confirm_stop() (read back).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from vla_runtime.drivers.cameras.base import Camera  # noqa: F401 - the camera seam, re-exported for the loop
from vla_runtime.runtime.types import RobotState

logger = logging.getLogger(__name__)

ON_STOP = ("hold", "park", "limp")
STOP_KEYS = ("on_stop", "hold_s", "park", "park_timeout_s", "max_failed_ticks")  # lifecycle keys in [safety]


class TransientRobotError(RuntimeError):
    """One tick's exchange with the hardware failed (timeout, corrupt reply) but nothing latched.

    The devices keep their last goal; the loop counts such ticks and stops the robot only after
    `max_failed_ticks` of them in a row.
    """


@dataclass(frozen=True)
class StopConfig:
    """How an episode ends, whatever ends it (its length, Ctrl-C, SIGTERM/SIGHUP, an error).

    The default holds: a Koch or SO-101 that has an object in its jaws at the end keeps it.
    """

    on_stop: str = "hold"  # "hold": torque stays on at the measured pose; "park": move to `park`, then hold;
    #                        "limp": torque off at once (the arm sags under gravity, the jaws let go)
    hold_s: float | None = None  # seconds to hold before torque goes off; None: keep holding after exit
    park: tuple[float, ...] = ()  # joint positions of the park pose (rad or m), inside the joint limits
    park_timeout_s: float = 10.0  # seconds allowed to reach the park pose; then it holds where it got to
    max_failed_ticks: int = 3  # consecutive ticks whose bus exchange failed before the robot is stopped

    def __post_init__(self):
        if self.on_stop not in ON_STOP:
            raise ValueError(f"[safety] on_stop = {self.on_stop!r}: use one of {', '.join(ON_STOP)}")
        if self.hold_s is not None and not (math.isfinite(self.hold_s) and self.hold_s >= 0):
            raise ValueError(f"[safety] hold_s must be >= 0 seconds, got {self.hold_s}")
        if self.on_stop == "park" and not self.park:
            raise ValueError('[safety] on_stop = "park" needs park = [one position per joint] inside the limits')
        if not all(math.isfinite(v) for v in self.park):
            raise ValueError(f"[safety] park must be finite joint positions, got {list(self.park)}")
        if not self.park_timeout_s > 0:
            raise ValueError(f"[safety] park_timeout_s must be > 0 seconds, got {self.park_timeout_s}")
        if self.max_failed_ticks < 1:
            raise ValueError(f"[safety] max_failed_ticks must be >= 1, got {self.max_failed_ticks}")

    @classmethod
    def from_safety(cls, safety: Mapping) -> StopConfig:
        """The lifecycle keys of a robot file's [safety] table (the rest are limits)."""
        keys = {k: safety[k] for k in STOP_KEYS if k in safety}
        if "park" in keys:
            keys["park"] = tuple(float(v) for v in keys["park"])
        if "hold_s" in keys:
            keys["hold_s"] = float(keys["hold_s"])
        return cls(**keys)

    def check_pose(self, joint_min, joint_max) -> None:
        """The park pose has one value per joint, each inside the joint's limits."""
        if not self.park:
            return
        if len(self.park) != len(joint_min):
            raise ValueError(f"[safety] park has {len(self.park)} values for {len(joint_min)} joints")
        limits = zip(self.park, joint_min, joint_max, strict=True)
        outside = [i for i, (v, lo, hi) in enumerate(limits) if not lo <= v <= hi]
        if outside:
            raise ValueError(f"[safety] park: joint #{outside[0] + 1} = {self.park[outside[0]]} is outside its limits")


# The rotation helpers run several times per tick inside safety and IK on 3-vectors and 3x3
# matrices, where numpy's per-call overhead (~1 us a ufunc on a scalar) is the whole cost, so
# they use `math` on Python floats and build one array at the end.


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Roll/pitch/yaw (rad, fixed axes x then y then z) -> rotation matrix [3, 3]."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def matrix_to_rpy(m: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> roll/pitch/yaw (rad), the inverse of `rpy_to_matrix`."""
    pitch = math.asin(min(max(-float(m[2, 0]), -1.0), 1.0))
    roll = math.atan2(float(m[2, 1]), float(m[2, 2]))
    yaw = math.atan2(float(m[1, 0]), float(m[0, 0]))
    return np.array([roll, pitch, yaw])


def rotation_vector(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> axis * angle (rad) [3]; its norm is the rotation angle."""
    trace = float(m[0, 0]) + float(m[1, 1]) + float(m[2, 2])
    angle = math.acos(min(max((trace - 1.0) / 2.0, -1.0), 1.0))
    if angle < 1e-9:
        return np.zeros(3)
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    norm = math.sqrt(float(axis @ axis))
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

    def configure(self) -> None:  # noqa: B027 - optional hook
        """Open and verify the hardware; reads are allowed afterwards, nothing moves, no watchdog runs."""

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

    def stop(self, hold: bool) -> None:
        """End of episode: refuse commands; hold=True keeps torque on where it is, False goes limp."""
        self.deactivate()

    def release(self) -> None:  # noqa: B027 - optional hook
        """End a hold (torque off)."""

    def confirm_stop(self) -> str:
        """The output state as read back from the devices, or "could not confirm: <why>"."""
        return f"{self.name}: could not confirm: no read-back for this robot"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release ports; deactivates first."""


class DriverRobot(Robot):
    """A `Robot` over an `ArmDriver` and an optional `GripperDriver` (joint units pass through)."""

    def __init__(self, name: str, arm, gripper=None, kinematics: Kinematics | None = None):
        self.name = name
        self.arm = arm  # vla_runtime.drivers.base.ArmDriver, configured or not
        self.gripper = gripper  # vla_runtime.drivers.base.GripperDriver or None
        self._kinematics = kinematics
        for driver in self._drivers:
            driver.tolerate_transient = True  # the loop counts failed ticks (StopConfig.max_failed_ticks)

    @property
    def _drivers(self) -> list:
        return [d for d in (self.arm, self.gripper) if d is not None]

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(self.arm.joint_names)

    @property
    def kinematics(self) -> Kinematics | None:
        return self._kinematics

    @property
    def worst_io_s(self) -> float:
        """Longest one driver's tick I/O (read + command) can block when every attempt times out, seconds.

        The largest, not the sum: arm and gripper both exhausting every retry in the same tick is
        a dead bus, which the failed-tick count stops, not a budget to plan for."""
        return max((getattr(d, "worst_io_s", 0.0) for d in self._drivers), default=0.0)

    def configure(self) -> None:
        for driver in self._drivers:
            if driver.state.value == "unconfigured":
                driver.configure()

    def activate(self) -> None:
        """Gripper first, arm last: a Robotiq's activation sweep (2-5 s) runs before any arm watchdog
        (Dynamixel bus watchdog, the UR program's RTDE watchdog) is armed, so none can starve."""
        self.configure()
        for driver in reversed(self._drivers):
            if driver.state.value == "inactive":
                driver.activate()

    def _io(self, fn, *args):
        """Run one driver call; a timeout or corrupt reply that latched nothing is a TransientRobotError."""
        from vla_runtime.drivers.base import TRANSIENT_ERRORS, DriverState

        try:
            return fn(*args)
        except TRANSIENT_ERRORS as exc:
            if any(d.state is DriverState.FAULT for d in self._drivers):
                raise
            raise TransientRobotError(str(exc)) from exc

    def read_state(self, now: float) -> RobotState:
        joints = self._io(self.arm.read, now)
        q = np.asarray(joints.positions, dtype=np.float64)
        gripper = self._io(self.gripper.read, now).position if self.gripper is not None else 1.0
        if self._kinematics is not None:
            pos, rpy = self._kinematics.forward(q)
        else:
            pos, rpy = np.full(3, np.nan), np.full(3, np.nan)
        return RobotState(q, pos, rpy, float(gripper), now)

    def command(self, joint_targets, gripper, now, period):
        sent = self._io(self.arm.command, joint_targets, now, period)
        sent_gripper = gripper
        if self.gripper is not None:
            sent_gripper = self._io(self.gripper.command, gripper, now, period)
        return np.asarray(sent, dtype=np.float64), float(sent_gripper)

    def hold(self, now: float, period: float) -> None:
        """The arm holds its measured joints; the gripper keeps its last goal, so a grip is not loosened."""
        q = self.arm.read(now).positions
        self.arm.command(q, now, period)

    def deactivate(self) -> None:
        for driver in self._drivers:
            driver.deactivate()

    def stop(self, hold: bool) -> None:
        for driver in self._drivers:
            try:
                driver.deactivate(hold=hold)
            except Exception as exc:  # noqa: BLE001 - the other driver must still be stopped
                logger.error("%s: stop failed: %s", driver.name, exc)

    def release(self) -> None:
        for driver in self._drivers:
            try:
                driver.release()
            except Exception as exc:  # noqa: BLE001
                logger.error("%s: release failed: %s", driver.name, exc)

    def confirm_stop(self) -> str:
        return "; ".join(driver.read_back() for driver in self._drivers)

    def close(self) -> None:
        for driver in (self.arm, self.gripper):
            if driver is not None:
                driver.close()
