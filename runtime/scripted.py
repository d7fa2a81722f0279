"""A scripted reach-and-grasp policy for the simulated tabletop.

It knows where the target block is (privileged simulator state), so it needs no model: a
reference for what a competent chunked ee_delta policy looks like to the loop, a demo that
actually picks the block up, and a source of bounded, meaningful actions for tests. It speaks
the bundle action space: dx, dy, dz (m), droll, dpitch, dyaw (rad), gripper (0 closed .. 1 open).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from vla_runtime.runtime.joint_contract import EE_DELTA_NAMES
from vla_runtime.runtime.types import ActionChunk, Frames, Policy, RobotState, capture_time

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class GraspScript:
    horizon: int = 4  # actions per chunk
    step: float = 0.015  # metres per action towards the current goal, at most
    gain: float = 0.5  # fraction of the remaining distance one action covers; < 1 so every step moves
    approach_height: float = 0.12  # metres above the block centre before descending
    grasp_height: float = 0.012  # metres above the block centre where the fingers close
    lift_height: float = 0.2  # metres above the table after grasping
    tolerance: float = 0.008  # metres; a goal closer than this counts as reached
    close_ticks: int = 2  # inferences spent closing the fingers before lifting; short, so a cloned policy never waits
    # Labelling states another policy visits (DAgger): the phase follows the measured state, so a
    # gripper that closed beside or above the block is told to open and go back, never to lift.
    recover: bool = False
    held_radius: float = 0.03  # metres; fingers this far beside or above an unlifted block do not hold it
    lifted_margin: float = 0.01  # metres above its resting height at which the block counts as in hand

    def __post_init__(self):
        if self.horizon < 1 or self.step <= 0 or not 0 < self.gain <= 1 or self.tolerance <= 0 or self.close_ticks < 1:
            raise ValueError("GraspScript: horizon, step, tolerance, close_ticks must be > 0 and gain in (0, 1]")


class ScriptedGraspPolicy(Policy):
    """reach above -> descend -> close -> lift, replanned from the measured state at every call."""

    def __init__(self, block_position: Callable[[], np.ndarray], script: GraspScript = GraspScript()):
        self.block_position = block_position  # returns the target block centre [3] in m, base frame
        self.script = script
        self.phase = "reach"
        self._closing = 0
        self._start_z: float | None = None  # the block's height at the first call (recover mode)
        self.stage_times: dict[str, float] = {}

    def infer(self, frame: Frames, task: str, state: RobotState | None = None) -> ActionChunk:
        if state is None:
            raise ValueError("the scripted policy needs the robot state")
        t = time.perf_counter()
        s = self.script
        block = self.block_position()
        pos = state.ee_position
        gripper = 1.0
        if s.recover:
            self._recover(pos, block)
        if self.phase == "reach":
            goal = block + [0.0, 0.0, s.approach_height]
            if np.linalg.norm(goal - pos) < s.tolerance:
                self.phase = "descend"
        if self.phase == "descend":
            goal = block + [0.0, 0.0, s.grasp_height]
            if np.linalg.norm(goal - pos) < s.tolerance:
                self.phase = "close"
        if self.phase == "close":
            goal, gripper = pos.copy(), 0.0
            self._closing += 1
            if self._closing >= s.close_ticks:
                self.phase = "lift"
        if self.phase == "lift":
            goal, gripper = np.array([pos[0], pos[1], s.lift_height]), 0.0
        actions = np.zeros((s.horizon, len(EE_DELTA_NAMES)))  # [H, 7]
        p = pos.copy()
        for i in range(s.horizon):
            delta = goal - p
            dist = float(np.linalg.norm(delta))
            # proportional steps: a chunk whose first steps go stale (asynchronous inference)
            # still ends up at the goal, because no step assumes an earlier one already covered it
            delta *= min(s.gain, s.step / dist) if dist > 0 else 0.0
            actions[i, :3] = delta
            actions[i, 6] = gripper
            p = p + delta
        self.stage_times = {"decode_actions": time.perf_counter() - t}
        return ActionChunk(actions, EE_DELTA_NAMES, capture_time(frame))  # one view or several

    def _recover(self, pos: np.ndarray, block: np.ndarray) -> None:
        """Re-derive the phase from where the fingers and the block are, for states this script did not lead to."""
        s = self.script
        if self._start_z is None:
            self._start_z = float(block[2])  # m, the block's resting height
        if block[2] - self._start_z > s.lifted_margin:
            self.phase = "lift"  # the block rises with the fingers, however they got there: keep lifting
            return
        sideways = float(np.linalg.norm((pos - block)[:2]))  # m
        if self.phase == "reach" and sideways < s.tolerance and pos[2] <= block[2] + s.approach_height + s.tolerance:
            self.phase = "descend"  # already lined up lower than the approach point: go straight down
        elif self.phase == "descend" and sideways > 2 * s.tolerance:
            self.phase = "reach"  # drifted sideways on the way down
        elif self.phase in ("close", "lift") and max(sideways, pos[2] - block[2]) > s.held_radius:
            self.phase, self._closing = "reach", 0  # closed on nothing, or rose without it: open and go again
