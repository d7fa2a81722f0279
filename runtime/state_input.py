"""The measured robot state as a policy input: RobotState -> normalised float32 [1, S].

A bundle that reads the state lists it in `manifest.state` (joint names in the bundle's order,
then "gripper" when the opening is read, units, normalisation statistics). The joint order and
units are checked against the robot by `joint_contract` before any port opens (which also
permutes the measured joints into the bundle's order); what this module adds is the vector
itself, normalised exactly as `conventions.ActionNormalizer` normalises actions, and the
refusal of a state the robot cannot measure.
"""

from __future__ import annotations

import logging

import numpy as np
from vla_runtime.runtime.conventions import ActionNormalizer
from vla_runtime.runtime.manifest import StateSpace
from vla_runtime.runtime.types import RobotState

logger = logging.getLogger(__name__)


def resting_state(space: StateSpace) -> RobotState | None:
    """A fixed state (every joint at 0, the gripper open) for inferences with nothing measured
    (profiling, the health sample, verify); None for a bundle that reads no state."""
    if not space.names:
        return None
    return RobotState(np.zeros(space.dim - int(space.has_gripper)), np.zeros(3), np.zeros(3), 1.0, 0.0)


def recorded_state(vector: np.ndarray | None, t: float = 0.0) -> RobotState | None:
    """A recording's measured state vector [J + 1] (joints, then the gripper opening) as a RobotState."""
    if vector is None:
        return None
    vector = np.asarray(vector, dtype=np.float64)
    return RobotState(vector[:-1], np.zeros(3), np.zeros(3), float(vector[-1]), t)


def state_vector(state: RobotState) -> np.ndarray:
    """The measured state as the vector a recording keeps, float32 [J + 1]: joints, then the gripper opening
    (the inverse of `recorded_state`)."""
    return np.append(np.asarray(state.joint_positions, dtype=np.float32), np.float32(state.gripper))


def unmet_state(space: StateSpace, has_gripper: bool) -> str | None:
    """Why a robot cannot provide this state (one line with the fix), or None when it can."""
    if space.has_gripper and not has_gripper:
        return ("the bundle reads the gripper opening as its last state value but the robot file has no "
                "[gripper]; add the gripper table or use a bundle built without the gripper in its state")
    return None


class StateInput:
    """Builds the state vector the graphs read, into one buffer reused every inference."""

    def __init__(self, space: StateSpace):
        if not space.names:
            raise ValueError("StateInput needs a bundle whose manifest lists state.names")
        self.space = space
        self._joints = space.dim - int(space.has_gripper)  # J measured joint positions
        self._normalizer = ActionNormalizer(space.normalization, space.dim)
        self._raw = np.zeros((1, space.dim), dtype=np.float64)  # [1, S] physical units
        self._vector = np.zeros((1, space.dim), dtype=np.float32)  # [1, S] model space

    def __call__(self, state: RobotState | None) -> np.ndarray:
        """Measured state (joints in the bundle's order) -> float32 [1, S]; reused by the next call."""
        if state is None:
            raise ValueError(f"this bundle reads the robot state {list(self.space.names)}; pass the measured state")
        q = np.asarray(state.joint_positions, dtype=np.float64)  # [J]
        if q.shape != (self._joints,):
            raise ValueError(f"the bundle's state lists {self._joints} joints {list(self.space.names[:self._joints])} "
                             f"but the robot measured {q.shape[0]}")
        self._raw[0, : self._joints] = q
        if self.space.has_gripper:
            self._raw[0, -1] = state.gripper
        self._vector[...] = self._normalizer.normalize(self._raw)
        return self._vector

    def physical(self) -> np.ndarray:
        """The last state in physical units, float64 [S] (a copy)."""
        return self._raw[0].copy()
