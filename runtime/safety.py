"""The first safety layer: a pure filter between the action decoder and the drivers.

A learned policy can emit NaN, a jump, or a target outside the table. Every action therefore
passes here before anything moves, in a fixed order: finiteness first (NaN must never reach a
`min`/`max`, where it silently survives), then the per-step translation/rotation caps, the
workspace box and the gripper range in action space, then inverse kinematics, then joint
position and velocity limits, then, wherever the arm has a kinematic model (the sim and real
arms alike, for joint-position actions too), the workspace box and the Cartesian step limits
once more on the pose the joint targets actually reach. A target inverse kinematics cannot
reach is rejected (held), never approximated. The velocity window is taken around the *measured* position,
which keeps the filter pure (no memory of past commands) and also bounds how far a command may
lead a lagging servo. Every change is named in the returned `SafetyReport`; a rejected action
becomes "hold where you are".
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np
from vla_runtime.runtime.manifest import SafetyDefaults
from vla_runtime.runtime.robot import Kinematics, matrix_to_rpy, rotation_vector, rpy_to_matrix
from vla_runtime.runtime.types import RobotState

logger = logging.getLogger(__name__)

# Names of the limits, as they appear in reports and in the final summary.
LIMITS = (
    "non_finite",
    "translation_step",
    "rotation_step",
    "workspace",
    "gripper",
    "ik_failed",
    "joint_position",
    "joint_velocity",
)
WORKSPACE_MARGIN = 0.005  # metres an IK solution may land outside the box or step (solver residual)
ROTATION_MARGIN = 0.02  # radians an IK solution may exceed the rotation step by (solver residual)


class SafetyConfigError(ValueError):
    """Limits are contradictory or do not fit the robot; the message names the field."""


@dataclass(frozen=True)
class SafetyLimits:
    max_translation_step: float  # metres the end effector may move in one tick
    max_rotation_step: float  # radians the end effector may rotate in one tick
    workspace_min: tuple[float, float, float]  # metres, base frame; end-effector targets stay above
    workspace_max: tuple[float, float, float]  # metres, base frame; ... and below
    gripper_min: float  # opening, 0 = closed
    gripper_max: float  # opening, 1 = open
    joint_min: tuple[float, ...] = ()  # radians per joint; empty = no position limit
    joint_max: tuple[float, ...] = ()  # radians per joint
    joint_max_velocity: tuple[float, ...] = ()  # rad/s per joint; empty = no velocity limit
    max_consecutive_rejects: int = 3  # rejected (held) actions in a row before the loop safe-stops

    def __post_init__(self):
        if self.max_translation_step <= 0 or self.max_rotation_step <= 0:
            raise SafetyConfigError("safety: max_translation_step and max_rotation_step must be > 0")
        if len(self.workspace_min) != 3 or len(self.workspace_max) != 3:
            raise SafetyConfigError("safety: workspace_min and workspace_max need 3 values (x, y, z in m)")
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max, strict=True)):
            raise SafetyConfigError("safety: workspace_min must be below workspace_max on every axis")
        if not (0.0 <= self.gripper_min < self.gripper_max <= 1.0):
            raise SafetyConfigError("safety: need 0 <= gripper_min < gripper_max <= 1")
        if len(self.joint_min) != len(self.joint_max):
            raise SafetyConfigError("safety: joint_min and joint_max need one value per joint")
        if any(lo >= hi for lo, hi in zip(self.joint_min, self.joint_max, strict=True)):
            raise SafetyConfigError("safety: every joint's min must be below its max")
        if any(v <= 0 for v in self.joint_max_velocity):
            raise SafetyConfigError("safety: joint max_velocity values must be > 0 rad/s")
        if self.max_consecutive_rejects < 1:
            raise SafetyConfigError("safety: max_consecutive_rejects must be >= 1")

    def cartesian_summary(self) -> str:
        """One line: the end-effector limits in force (shown when the arm has kinematics)."""
        box = ", ".join(f"{axis} {lo:.2f}..{hi:.2f}" for axis, lo, hi in zip("xyz", self.workspace_min,
                                                                                self.workspace_max, strict=True))
        return (f"end effector in {box} m, at most {self.max_translation_step:g} m and "
                f"{self.max_rotation_step:g} rad per tick")

    @classmethod
    def from_sources(
        cls,
        defaults: SafetyDefaults,
        overrides: Mapping | None = None,
        joint_min: tuple[float, ...] = (),
        joint_max: tuple[float, ...] = (),
        joint_max_velocity: tuple[float, ...] = (),
    ) -> SafetyLimits:
        """Bundle defaults, then joint limits, then the robot description's [safety] overrides."""
        base = {f.name: getattr(defaults, f.name) for f in fields(SafetyDefaults)}
        base.update(
            joint_min=tuple(joint_min), joint_max=tuple(joint_max), joint_max_velocity=tuple(joint_max_velocity)
        )
        known = {f.name for f in fields(cls)}
        for key, value in (overrides or {}).items():
            if key not in known:
                raise SafetyConfigError(f"[safety] {key}: unknown limit; expected one of {sorted(known)}")
            base[key] = tuple(value) if isinstance(value, list) else value
        return cls(**base)


@dataclass(frozen=True)
class SafeCommand:
    action: np.ndarray  # float64 [D], the action after the action-space limits (physical units)
    joint_targets: np.ndarray  # float64 [J], what the arm should be sent
    gripper: float  # opening 0..1 the gripper should be sent


@dataclass(frozen=True)
class SafetyReport:
    interventions: tuple[str, ...] = ()  # names from LIMITS that changed this command
    held: bool = False  # the desired action was rejected; the command holds the measured position


@dataclass
class SafetyStats:
    """Episode totals, for the final report."""

    ticks: int = 0
    held: int = 0
    consecutive_held: int = 0
    counts: Counter = field(default_factory=Counter)

    def add(self, report: SafetyReport) -> None:
        self.ticks += 1
        self.counts.update(report.interventions)
        self.held += report.held
        self.consecutive_held = self.consecutive_held + 1 if report.held else 0

    def summary(self) -> str:
        parts = [f"{name} {self.counts[name]}" for name in LIMITS if self.counts[name]]
        clamped = ", ".join(parts) if parts else "none"
        return f"safety: {self.ticks} commands, {self.held} held, interventions: {clamped}"

    def to_json(self) -> dict:
        return {"ticks": self.ticks, "held": self.held, "interventions": {k: self.counts[k] for k in LIMITS}}


class SafetyFilter(ABC):
    """Turns a desired action into a command that respects every limit."""

    @abstractmethod
    def enforce(self, current: RobotState, desired: np.ndarray, dt: float) -> tuple[SafeCommand, SafetyReport]:
        """Limit `desired` (never modified) given the measured state and the tick length dt (s)."""

    @abstractmethod
    def hold(self, current: RobotState) -> SafeCommand:
        """The command that keeps the robot where it is, gripper stopped."""

    @abstractmethod
    def executed_action(self, current: RobotState, joint_targets: np.ndarray, gripper: float) -> np.ndarray:
        """The action-space equivalent of what was actually sent (for recording)."""


class ActionSafety(SafetyFilter):
    """Limits for `ee_delta` (dx, dy, dz, droll, dpitch, dyaw, gripper) and `joint_position` actions."""

    def __init__(self, limits: SafetyLimits, kind: str, dim: int, kinematics: Kinematics | None, num_joints: int):
        if kind == "ee_delta" and (dim != 7 or kinematics is None):
            raise SafetyConfigError(
                "ee_delta actions need 7 values and a kinematic model; name the arm's model in [arm] kinematics "
                "(and ee_link), or use [action] mapping = 'joint_position'"
            )
        if kind == "joint_position" and dim not in (num_joints, num_joints + 1):
            raise SafetyConfigError(f"joint_position actions have {dim} values but the robot has {num_joints} joints")
        for name in ("joint_min", "joint_max", "joint_max_velocity"):
            values = getattr(limits, name)
            if values and len(values) != num_joints:
                raise SafetyConfigError(f"safety.{name} has {len(values)} values for {num_joints} joints")
        self.limits = limits
        self.kind = kind
        self.dim = dim
        self.kinematics = kinematics
        self.num_joints = num_joints
        # the limits as arrays once, so a tick does no tuple conversions
        self._box = (np.array(limits.workspace_min, float), np.array(limits.workspace_max, float))  # m
        self._joints = None  # (min, max) in rad
        if limits.joint_min:
            self._joints = (np.array(limits.joint_min, float), np.array(limits.joint_max, float))
        self._joint_speed = np.array(limits.joint_max_velocity, float) if limits.joint_max_velocity else None  # rad/s

    # -- the filter ------------------------------------------------------------------------------
    def enforce(self, current, desired, dt):
        desired = np.asarray(desired, dtype=np.float64)
        if desired.shape != (self.dim,) or not np.all(np.isfinite(desired)) or not _state_finite(current):
            return self._hold(current, "non_finite")
        a = desired.copy()
        hits: list[str] = []
        if self.kind == "ee_delta":
            a = self._limit_ee(current, a, hits)
        if self.dim > self.num_joints or self.kind == "ee_delta":
            g = min(max(float(a[-1]), self.limits.gripper_min), self.limits.gripper_max)
            if g != a[-1]:
                hits.append("gripper")
            a[-1] = g
            gripper = g
        else:
            gripper = float(current.gripper)
        q = self._joint_targets(current, a)
        if q is None or not np.all(np.isfinite(q)):
            return self._hold(current, "ik_failed")
        q = self._limit_joints(current, q, dt, hits)
        breach = self._pose_breach(current, q) if self.kinematics is not None else None
        if breach is not None:
            q = self._shorten(current, q)
            if q is None:  # pressed against the boundary: a zero step, which is a clamp, not a rejection
                return self.hold(current), SafetyReport((*hits, breach), held=False)
            hits.append(breach)
        if self.kind == "joint_position":
            a[: self.num_joints] = q
        return SafeCommand(a, q, gripper), SafetyReport(tuple(hits), held=False)

    def executed_action(self, current, joint_targets, gripper):
        q = np.asarray(joint_targets, dtype=np.float64)
        if self.kind == "joint_position":
            return np.concatenate([q, [gripper]]) if self.dim > self.num_joints else q.copy()
        pos, rpy = self.kinematics.forward(q)
        dpos = pos - current.ee_position
        drot = matrix_to_rpy(rpy_to_matrix(rpy) @ rpy_to_matrix(current.ee_orientation).T)
        return np.concatenate([dpos, drot, [gripper]])

    # -- steps -----------------------------------------------------------------------------------
    def hold(self, current):
        q = np.asarray(current.joint_positions, dtype=np.float64).copy()
        gripper = float(current.gripper) if np.isfinite(current.gripper) else self.limits.gripper_min
        if self.kind == "ee_delta":
            action = np.zeros(self.dim)
            action[-1] = gripper
        else:
            action = np.concatenate([q, [gripper]]) if self.dim > self.num_joints else q.copy()
        return SafeCommand(action, q, gripper)

    def _hold(self, current: RobotState, reason: str) -> tuple[SafeCommand, SafetyReport]:
        return self.hold(current), SafetyReport((reason,), held=True)

    def _limit_ee(self, current: RobotState, a: np.ndarray, hits: list[str]) -> np.ndarray:
        lim = self.limits
        target = current.ee_position + a[:3]
        boxed = _clip(target, *self._box)
        if not np.array_equal(boxed, target):
            hits.append("workspace")
            a[:3] = boxed - current.ee_position
        step = float(np.linalg.norm(a[:3]))
        if step > lim.max_translation_step:
            hits.append("translation_step")
            a[:3] *= lim.max_translation_step / step
        angle = float(np.linalg.norm(rotation_vector(rpy_to_matrix(a[3:6]))))
        if angle > lim.max_rotation_step:
            hits.append("rotation_step")
            a[3:6] *= lim.max_rotation_step / angle
        return a

    def _joint_targets(self, current: RobotState, a: np.ndarray) -> np.ndarray | None:
        if self.kind == "joint_position":
            return a[: self.num_joints].copy()
        target_pos = current.ee_position + a[:3]
        target_rot = rpy_to_matrix(a[3:6]) @ rpy_to_matrix(current.ee_orientation)
        try:
            return self.kinematics.inverse(current.joint_positions, target_pos, matrix_to_rpy(target_rot))
        except (ValueError, np.linalg.LinAlgError) as exc:
            logger.debug("ik failed: %s", exc)
            return None

    def _pose_breach(self, current: RobotState, q: np.ndarray) -> str | None:
        """Final check on what will be sent, by forward kinematics: the limit its pose breaks, or None.

        The box allows the IK margin, or a pose no farther out than now, so a robot started
        outside can still come in; the steps are measured from the measured pose.
        """
        pos, rpy = self.kinematics.forward(q)
        outside = self._box_distance(pos)
        if outside > WORKSPACE_MARGIN and outside > self._box_distance(current.ee_position):
            return "workspace"
        if float(np.linalg.norm(pos - current.ee_position)) > self.limits.max_translation_step + WORKSPACE_MARGIN:
            return "translation_step"
        turn = rpy_to_matrix(rpy) @ rpy_to_matrix(current.ee_orientation).T
        if float(np.linalg.norm(rotation_vector(turn))) > self.limits.max_rotation_step + ROTATION_MARGIN:
            return "rotation_step"
        return None

    def _shorten(self, current: RobotState, q: np.ndarray) -> np.ndarray | None:
        """Shorten the joint step (halving, a few times) until the pose it reaches breaks no limit.

        Joint limits can make inverse kinematics land outside a box whose target was inside, and
        a joint-position action can sweep the tool farther than a step allows; a shorter step
        from the measured position (which is inside) usually does not, so the arm keeps moving
        along the boundary instead of freezing there.
        """
        measured = np.asarray(current.joint_positions, dtype=np.float64)
        for fraction in (0.5, 0.25, 0.125):
            shorter = measured + fraction * (q - measured)
            if self._pose_breach(current, shorter) is None:
                return shorter
        return None

    def _box_distance(self, pos: np.ndarray) -> float:
        return float(np.linalg.norm(pos - _clip(pos, *self._box)))

    def _limit_joints(self, current: RobotState, q: np.ndarray, dt: float, hits: list[str]) -> np.ndarray:
        if self._joints is not None:
            clipped = _clip(q, *self._joints)
            if not np.array_equal(clipped, q):
                hits.append("joint_position")
            q = clipped
        if self._joint_speed is not None:
            reach = self._joint_speed * dt  # rad this tick
            measured = np.asarray(current.joint_positions, dtype=np.float64)
            clipped = _clip(q, measured - reach, measured + reach)
            if not np.array_equal(clipped, q):
                hits.append("joint_velocity")
            q = clipped
            if self._joints is not None:  # the measured position may itself sit just outside a limit
                q = _clip(q, *self._joints)
        return q


def _state_finite(state: RobotState) -> bool:
    return bool(np.all(np.isfinite(state.joint_positions)) and np.isfinite(state.gripper))


def _clip(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """np.clip without its per-call overhead (inputs are finite here)."""
    return np.minimum(np.maximum(x, lo), hi)
