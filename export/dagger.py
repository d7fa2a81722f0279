"""DAgger: the trained policy drives, the scripted expert says what it should have done.

Behaviour cloning only ever sees the expert's own states; a cloned policy that closes its
fingers 2 cm beside a block is somewhere no demonstration went, and nothing tells it to open
and try again. Here the learner (an exported bundle, run exactly as on the robot) drives the
simulated arm on demonstration seeds (below the held-out range) while the expert, which reads
the true block pose, labels every observation the learner planned from with the chunk it would
have sent (`GraspScript(recover=True)`: its phase follows the measured state). Training on the
demonstrations plus these labels (`vla-export train --relabelled FILE`) teaches the recovery.

On disk one `.npz` (no pickle) per collection round:
  images   uint8 [N, S, S, 3]  the frame each inference saw, resized by the runtime's preprocessor
                               ([N, V, S, S, 3]: every camera view, for a learner that reads several)
  tasks    str [N]             the instruction
  labels   float32 [N, H, D]   the expert's chunk for that observation, physical units
  past     int64 [N, D]        the bins the learner's head was conditioned on (its own last step)
  episode  int64 [N]           episode index within the file
  states   float32 [N, J+1]    the measured joints then the gripper opening (models that read the state)
  image_size, bins             int: the learner's input size and bin count (checked on load)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vla_runtime.runtime.preprocess import Preprocessor
from vla_runtime.runtime.scripted import GraspScript, ScriptedGraspPolicy
from vla_runtime.runtime.state_input import state_vector
from vla_runtime.runtime.types import ActionChunk, Frames, Policy, RobotState, view_frames

logger = logging.getLogger(__name__)


@dataclass
class RelabelledSamples:
    """What a collection round gathered; `save` writes the .npz described above."""

    image_size: int
    bins: int
    images: list[np.ndarray] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    past: list[np.ndarray] = field(default_factory=list)
    episode: list[int] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        if not self.images:
            raise ValueError("no observations were labelled")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, images=np.stack(self.images), tasks=np.asarray(self.tasks, dtype=np.str_),
            labels=np.stack(self.labels).astype(np.float32), past=np.stack(self.past).astype(np.int64),
            episode=np.asarray(self.episode, dtype=np.int64), image_size=self.image_size, bins=self.bins,
            states=np.stack(self.states).astype(np.float32),
        )
        return path


class RelabelPolicy(Policy):
    """Runs the learner's chunk; records the observation with the expert's chunk as its label."""

    def __init__(self, learner, expert: ScriptedGraspPolicy, samples: RelabelledSamples, episode: int):
        self.learner, self.expert, self.samples, self.episode = learner, expert, samples, episode
        decode = learner.manifest.decode
        self._conditioned = bool(getattr(decode, "condition_on_past_action", False))
        self._carry_row = min(learner.manifest.control.replan_every, learner.manifest.action.horizon) - 1
        self._past = np.zeros(learner.manifest.action.dim, dtype=np.int64)  # [D] as the decoder starts
        self._pre = Preprocessor(learner.manifest.preprocess)  # the runtime's resize, as the learner saw it
        self.stage_times: dict[str, float] = {}

    def infer(self, frame: Frames, task: str, state: RobotState | None = None) -> ActionChunk:
        label = self.expert.infer(frame, task, state)  # [H, D] what the expert would send from here
        chunk = self.learner.infer(frame, task, state)
        s = self.samples
        seen = [self._pre.resize(f.image).copy() for f in view_frames(frame, self.learner.views)]  # the resizer
        s.images.append(seen[0] if len(seen) == 1 else np.stack(seen))  # reuses its buffer; [S, S, 3] / [V, ...]
        s.tasks.append(task)
        s.labels.append(label.actions.astype(np.float32))
        s.past.append(self._past.copy())
        s.episode.append(self.episode)
        s.states.append(state_vector(state))  # [J + 1]
        if self._conditioned and self.learner.last_bins is not None:
            self._past = np.asarray(self.learner.last_bins[self._carry_row], dtype=np.int64)  # what the head saw next
        self.stage_times = getattr(self.learner, "stage_times", {})
        return chunk

    def reset(self) -> None:
        self.learner.reset()
        self._past[:] = 0


def collect(learner, desc, seeds: list[int], tasks: list[str], steps: int,
            on_episode=None) -> tuple[RelabelledSamples, list]:
    """Roll `learner` (a loaded BundlePolicy) out on `seeds`; returns the labelled samples and outcomes."""
    from vla_runtime.runtime.cmd_eval import loaded_setup, run_batch

    m = learner.manifest
    samples = RelabelledSamples(image_size=m.preprocess.image_size, bins=m.action.bins)
    script = GraspScript(horizon=m.action.horizon, recover=True)
    setup = loaded_setup(learner, "dagger")
    counter = iter(range(len(seeds)))

    def make(world, block):
        expert = ScriptedGraspPolicy(lambda: world.body_position(block), script)
        return RelabelPolicy(learner, expert, samples, next(counter))

    setup.make = make
    outcomes = run_batch(setup, desc, seeds, tasks, steps, on_episode=on_episode)
    return samples, outcomes
