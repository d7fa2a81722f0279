"""Which frames calibrate and which judge: spread across episodes, never the same ones.

Consecutive frames of one episode are nearly identical, so taking the first N frames would
calibrate on one scene. The plan spreads picks over every episode in proportion to its
length and over each episode's whole duration (stratified, with seeded jitter). The gate
must be judged on frames the ranges never saw: whole episodes are held out when there are
at least two, otherwise the tail of the single episode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from vla_runtime.runtime.episodes.frames import CalibDataError

logger = logging.getLogger(__name__)

FrameRef = tuple[int, int]  # (episode, frame index within the episode)


@dataclass(frozen=True)
class SamplePlan:
    calibration: tuple[FrameRef, ...]  # frames whose graph inputs set the INT8 ranges
    held_out: tuple[FrameRef, ...]  # frames the accuracy gate compares FP32 and INT8 on
    held_out_episodes: tuple[int, ...]  # episodes used only by the gate (empty: tail split)

    def __post_init__(self):
        overlap = set(self.calibration) & set(self.held_out)
        assert not overlap, f"calibration and held-out frames overlap: {sorted(overlap)[:3]}"


def plan_samples(lengths: list[int], calib_frames: int, held_out_frames: int, seed: int = 0) -> SamplePlan:
    """Choose calibration and held-out frames from episodes of the given lengths."""
    if calib_frames < 1 or held_out_frames < 1:
        raise CalibDataError("--calib-frames and --gate-frames must be at least 1")
    episodes = [e for e, n in enumerate(lengths) if n > 0]
    if not episodes:
        raise CalibDataError("the calibration data has no frames")
    rng = np.random.default_rng(seed)
    if len(episodes) >= 2:
        share = held_out_frames / (calib_frames + held_out_frames)
        n_hold = int(np.clip(round(len(episodes) * share), 1, len(episodes) - 1))
        order = rng.permutation(episodes)
        hold = sorted(int(e) for e in order[:n_hold])
        calib = sorted(int(e) for e in order[n_hold:])
        plan = SamplePlan(
            calibration=_spread({e: (0, lengths[e]) for e in calib}, calib_frames, rng),
            held_out=_spread({e: (0, lengths[e]) for e in hold}, held_out_frames, rng),
            held_out_episodes=tuple(hold),
        )
    else:
        (e,) = episodes
        n = lengths[e]
        if n < 2:
            raise CalibDataError("one frame cannot be both calibration and held-out data; add frames or episodes")
        cut = int(np.clip(round(n * calib_frames / (calib_frames + held_out_frames)), 1, n - 1))
        plan = SamplePlan(
            calibration=_spread({e: (0, cut)}, calib_frames, rng),
            held_out=_spread({e: (cut, n)}, held_out_frames, rng),
            held_out_episodes=(),
        )
    if len(plan.calibration) < calib_frames or len(plan.held_out) < held_out_frames:
        logger.warning("asked for %d calibration + %d held-out frames, the data gives %d + %d",
                       calib_frames, held_out_frames, len(plan.calibration), len(plan.held_out))
    return plan


def _spread(spans: dict[int, tuple[int, int]], count: int, rng: np.random.Generator) -> tuple[FrameRef, ...]:
    """`count` frames over episodes (episode -> [start, stop)), proportional to length, stratified in time."""
    sizes = {e: stop - start for e, (start, stop) in spans.items()}
    total = sum(sizes.values())
    count = min(count, total)
    if count < len(spans):  # fewer picks than episodes: evenly spaced episodes, one frame each
        chosen = [sorted(spans)[int(i)] for i in np.linspace(0, len(spans) - 1, count).round()]
        quota = {e: (1 if e in chosen else 0) for e in spans}
    else:
        quota = _largest_remainder(sizes, count)
    refs: list[FrameRef] = []
    for e, (start, _stop) in sorted(spans.items()):
        k = quota[e]
        if k == 0:
            continue
        # one frame per equal-width stratum of the episode, at a seeded position inside it
        edges = np.linspace(0, sizes[e], k + 1)
        picks = np.floor(edges[:-1] + rng.random(k) * np.diff(edges)).astype(int)
        refs.extend((e, start + int(p)) for p in np.unique(np.clip(picks, 0, sizes[e] - 1)))
    return tuple(refs)


def _largest_remainder(sizes: dict[int, int], count: int) -> dict[int, int]:
    """Split `count` over episodes proportionally to size, at least one each, never above size."""
    total = sum(sizes.values())
    raw = {e: count * n / total for e, n in sizes.items()}
    quota = {e: max(1, min(sizes[e], int(r))) for e, r in raw.items()}
    by_remainder = sorted(sizes, key=lambda e: raw[e] - int(raw[e]), reverse=True)
    while sum(quota.values()) < count:
        grown = False
        for e in by_remainder:
            if sum(quota.values()) >= count:
                break
            if quota[e] < sizes[e]:
                quota[e] += 1
                grown = True
        if not grown:
            break
    while sum(quota.values()) > count:  # the "at least one" floor overshot
        e = max(quota, key=lambda k: quota[k])
        quota[e] -= 1
    return quota
