"""Replay a flight recording through a bundle offline and measure how its actions differ.

The question before a new bundle (an INT8 build, another export) drives the robot: on this
robot's own data, how far do its actions move from what the recorded policy wanted? Every
recorded inference is repeated with the same frame, joint state and task, in the same order
(so a head conditioned on its previous chunk sees the same history), and each recorded tick's
desired action is compared with the step of the new chunk that tick would have executed.

What differs besides the bundle: JPEG recordings feed decoded JPEG frames (record with
`--record-raw` for the exact pixels), and the warm-up inference before tick 0 is repeated on
tick 0's frame. The recording holds the joints, not the end-effector pose; the graphs take no
robot state, so the pose passed on is zero.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from vla_runtime.runtime.recording import RecordedTick, Recording
from vla_runtime.runtime.state_input import recorded_state
from vla_runtime.runtime.types import Frame, Policy

logger = logging.getLogger(__name__)


class ReplayError(ValueError):
    """The recording and the bundle cannot be compared; the message says why and what to do."""


@dataclass
class ReplayResult:
    names: tuple[str, ...]  # action dimensions
    units: tuple[str, ...]  # physical unit per dimension ("" when the recording does not say)
    t: np.ndarray  # float64 [N] seconds since the first tick, one per compared tick
    recorded: np.ndarray  # float64 [N, D] the recorded policy's desired action
    replayed: np.ndarray  # float64 [N, D] the bundle's action for the same slot
    inferences: int = 0  # chunks the bundle predicted
    skipped: int = 0  # ticks without a comparable action (starved, beyond the new chunk, no frame)

    @property
    def diff(self) -> np.ndarray:
        return self.replayed - self.recorded  # [N, D]

    def stats(self) -> dict[str, dict[str, float]]:
        """Per dimension: mean, p95 and max of |replayed - recorded|, and the recorded range."""
        out = {}
        err = np.abs(self.diff)
        for i, name in enumerate(self.names):
            e, r = err[:, i], self.recorded[:, i]
            out[name] = {"mean_abs": float(e.mean()), "p95_abs": float(np.percentile(e, 95)),
                         "max_abs": float(e.max()), "recorded_range": float(r.max() - r.min())}
        return out

    def table(self) -> str:
        rows = [f"{'action':<12}{'unit':<8}{'mean |diff|':>13}{'p95 |diff|':>13}{'max |diff|':>13}"
                f"{'recorded range':>16}"]
        for (name, s), unit in zip(self.stats().items(), self.units, strict=True):
            rows.append(f"{name:<12}{unit:<8}{s['mean_abs']:>13.5f}{s['p95_abs']:>13.5f}{s['max_abs']:>13.5f}"
                        f"{s['recorded_range']:>16.5f}")
        return "\n".join(rows)


def replay(recording: Recording, policy: Policy, camera: str | None = None,
           progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Run every recorded inference through `policy` and pair the chunks with the recorded ticks."""
    run = recording.run
    views = _views(recording, policy, camera)
    reset = getattr(policy, "reset", None)
    if reset is not None:
        reset()
    chunks: dict[int, np.ndarray] = {}  # recorded chunk id -> the bundle's chunk for that observation
    t, recorded, replayed = [], [], []
    result = ReplayResult(run.action_names, _units(run), np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)))
    for n, tick in enumerate(recording.ticks(images=True)):
        started = tick.inference if tick.inference >= 0 else (0 if n == 0 else -1)  # the warm-up: tick 0
        if started >= 0 and all(v in tick.images for v in views):
            frames = {v: Frame(tick.images[v].decode(), tick.t) for v in views}
            chunks[started] = _infer(policy, tick, frames, run.task, run.action_names)
            result.inferences += 1
            for old in [c for c in chunks if c < started - 1]:  # one chunk ahead is all the loop keeps
                del chunks[old]
        chunk = chunks.get(tick.chunk)
        if tick.desired is None or chunk is None or not (0 <= tick.chunk_step < len(chunk)):
            result.skipped += 1
            continue
        t.append(tick.t)
        recorded.append(tick.desired)
        replayed.append(chunk[tick.chunk_step])
        if progress is not None:
            progress(n)
    if not t:
        raise ReplayError(f"{recording.path}: no tick could be compared (all starved or without frames)")
    result.t, result.recorded, result.replayed = np.asarray(t), np.stack(recorded), np.stack(replayed)
    return result


def _views(recording: Recording, policy: Policy, camera: str | None) -> tuple[str, ...]:
    """The recorded views to feed: every view a several-view bundle reads, else `camera` (default: the
    bundle's view when it was recorded, else the first recorded)."""
    recorded, wanted = recording.run.cameras, tuple(getattr(policy, "views", ()))
    if len(wanted) > 1:
        if camera is not None:
            raise ReplayError(f"--camera picks the view of a one-view bundle; this bundle reads {list(wanted)}")
        missing = [v for v in wanted if v not in recorded]
        if missing:
            raise ReplayError(f"{recording.path}: the bundle reads camera view {missing[0]!r} but the recording has "
                              f"{list(recorded)}; record with a robot file that names it")
        return wanted
    camera = camera or (wanted[0] if wanted and wanted[0] in recorded else recorded[0])
    if camera not in recorded:
        raise ReplayError(f"{recording.path}: no camera {camera!r}; it recorded {list(recorded)}")
    return (camera,)


def _infer(policy: Policy, tick: RecordedTick, frames: dict[str, Frame], task: str,
           names: tuple[str, ...]) -> np.ndarray:
    """The bundle's chunk for one recorded observation: its views and its measured state (the state input)."""
    state = recorded_state(tick.state, tick.t)
    chunk = policy.infer(next(iter(frames.values())) if len(frames) == 1 else frames, task, state)
    if tuple(chunk.names) != tuple(names):
        raise ReplayError(f"the bundle's actions {list(chunk.names)} differ from the recording's {list(names)}; "
                          "replay it through a bundle with the same action space")
    return chunk.actions


def _units(run) -> tuple[str, ...]:
    units = tuple(run.action_units)
    return units if len(units) == len(run.action_names) else ("",) * len(run.action_names)


def plot(result: ReplayResult, path, title: str) -> None:
    """Recorded vs replayed action per dimension over time, with the difference underneath (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = len(result.names)
    fig, axes = plt.subplots(d, 2, figsize=(11, 1.7 * d + 0.8), sharex=True, squeeze=False)
    for i, (name, unit) in enumerate(zip(result.names, result.units, strict=True)):
        left, right = axes[i]
        left.plot(result.t, result.recorded[:, i], label="recorded", lw=1.2)
        left.plot(result.t, result.replayed[:, i], label="replayed", lw=1.0, ls="--")
        left.set_ylabel(f"{name} [{unit}]" if unit else name, fontsize=8)
        right.plot(result.t, result.diff[:, i], color="tab:red", lw=1.0)
        right.axhline(0.0, color="grey", lw=0.5)
        right.set_ylabel(f"diff [{unit}]" if unit else "diff", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper right")
    axes[0][0].set_title("desired action", fontsize=9)
    axes[0][1].set_title("replayed - recorded", fontsize=9)
    axes[-1][0].set_xlabel("time [s]")
    axes[-1][1].set_xlabel("time [s]")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
