"""Per-graph calibration inputs, captured from the FP32 policy running the runtime's own path.

Ranges must be measured on the tensors each graph really receives on the robot: the same
preprocessing, tokenizer, KV cache growth and flow noise. So calibration does not rebuild
inputs itself; it runs the FP32 `BundlePolicy` over the chosen frames with a `graph_tap`
that copies every graph's inputs as it is called. That gives prefill and decode their own
sample sets (every decode step, with a realistic past), and the flow velocity graph one
sample per Euler step, i.e. every timestep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm
from vla_runtime.calibration.sampling import FrameRef
from vla_runtime.runtime.episodes.frames import CalibFrame, CalibSource
from vla_runtime.runtime.state_input import recorded_state, resting_state
from vla_runtime.runtime.types import Frame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphSample:
    frame: int  # position of the frame in the replayed sequence
    step: int  # call index of this graph within one inference (decode step, flow step; 0 otherwise)
    inputs: dict  # input name -> float32/int64 numpy array, exactly as the graph received it


@dataclass(frozen=True)
class Replay:
    """What the policy produced for each replayed frame, for the gate's comparisons."""

    actions: list  # float64 [H, D] per frame, physical units
    normalized: list  # float32 [H, D] per frame, model units
    bins: list  # int64 [H, D] per frame, or None (flow head)
    samples: dict  # role -> list[GraphSample], empty unless recording


class GraphRecorder:
    """A `graph_tap` that keeps each graph's inputs, tagged by frame and step."""

    def __init__(self, roles: Sequence[str] | None = None):
        self.roles = set(roles) if roles is not None else None
        self.samples: dict[str, list[GraphSample]] = {}
        self._frame = -1
        self._steps: dict[str, int] = {}

    def next_frame(self) -> None:
        self._frame += 1
        self._steps = {}

    def __call__(self, role: str, inputs: dict[str, np.ndarray]) -> None:
        if self.roles is not None and role not in self.roles:
            return
        step = self._steps.get(role, 0)
        self._steps[role] = step + 1
        owned = {k: np.array(v, copy=True) for k, v in inputs.items()}  # the policy reuses its buffers
        self.samples.setdefault(role, []).append(GraphSample(self._frame, step, owned))


def load_frames(source: CalibSource, refs: Iterable[FrameRef], desc: str, progress: bool = True) -> list[CalibFrame]:
    """Decode the planned frames once (videos and PNGs are not free to decode twice)."""
    refs = list(refs)
    return [source.frame(e, i) for e, i in tqdm(refs, desc=desc, unit="frame", disable=not progress)]


def replay(policy, frames: Sequence[CalibFrame], record: bool, desc: str, progress: bool = True,
           roles: Sequence[str] | None = None) -> Replay:
    """Run `policy.infer` over `frames` in order; optionally record every graph's inputs."""
    recorder = GraphRecorder(roles) if record else None
    previous_tap: Callable | None = policy.graph_tap
    policy.graph_tap = recorder
    out = Replay([], [], [], {})
    try:
        for f in tqdm(frames, desc=desc, unit="frame", disable=not progress):
            if recorder is not None:
                recorder.next_frame()
            state = recorded_state(f.state) if f.state is not None else resting_state(policy.manifest.state)
            chunk = policy.infer(_frames(policy, f), f.task, state)
            out.actions.append(np.array(chunk.actions, dtype=np.float64))
            out.normalized.append(np.array(policy.last_normalized, dtype=np.float32))
            out.bins.append(None if policy.last_bins is None else np.array(policy.last_bins))
    finally:
        policy.graph_tap = previous_tap
    if recorder is not None:
        out.samples.update(recorder.samples)
    return out


def _frames(policy, f: CalibFrame):
    """Every view the policy reads when the source kept them all, else the one image for each view."""
    views = getattr(policy, "views", ())
    if f.views and all(v in f.views for v in views):
        return {v: Frame(image=f.views[v], t_capture=0.0) for v in views}
    return Frame(image=f.image, t_capture=0.0)


def representative(samples: Sequence[GraphSample], limit: int) -> list[GraphSample]:
    """At most `limit` samples, an equal share for every step index, spread over the frames.

    Plain striding would alias with the step count (10 flow steps and a stride of 10 keep a
    single timestep); stratifying by step keeps every decode position and every timestep.
    """
    if len(samples) <= limit:
        return list(samples)
    by_step: dict[int, list[GraphSample]] = {}
    for s in samples:
        by_step.setdefault(s.step, []).append(s)
    steps = sorted(by_step)
    share = max(1, limit // len(steps))
    chosen: list[GraphSample] = []
    for step in steps:
        group = by_step[step]
        idx = np.unique(np.linspace(0, len(group) - 1, min(share, len(group))).round().astype(int))
        chosen.extend(group[i] for i in idx)
    if len(chosen) > limit:  # more steps than the limit: spread over steps instead
        idx = np.unique(np.linspace(0, len(chosen) - 1, limit).round().astype(int))
        chosen = [chosen[i] for i in idx]
    return chosen


def sample_counts(samples: dict[str, list[GraphSample]]) -> dict[str, dict]:
    """role -> {samples, frames, steps}: what the report says calibration covered."""
    return {
        role: {"samples": len(s), "frames": len({x.frame for x in s}), "steps": len({x.step for x in s})}
        for role, s in sorted(samples.items())
    }
