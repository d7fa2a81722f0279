"""Demonstrations as training tensors: what the robot saw, what it was told, what the expert did.

Episodes are read only through calibration's reader API (`open_source`), so any recording
format it understands (the runtime's recordings, LeRobot datasets) trains the same way. Every
input is prepared exactly as the runtime will prepare it on the robot: frames are resized by
the control loop's own preprocessor, prompts tokenized with the bundle's template, and
action chunks normalised with statistics measured on these same demonstrations.

One sample is one tick t of one episode:
  image     uint8 [S, S, 3]  the frame at t, resized to the model's input size
  prompt    int64 [T]        BOS + prompt template ids for the episode's instruction
  target    float32 [H, D]   normalised actions t .. t+H-1 (the last action repeats past the end)
  past      int64 [D]        bins of the action executed at t-1 (zeros at t = 0, as the runtime starts)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vla_runtime.export.manifest_writer import MAX_PROMPT_TOKENS, siglip_preprocess
from vla_runtime.export.norm_stats import NormStats, stats_from_actions
from vla_runtime.export.tokenizer import BOS, PROMPT_TEMPLATE
from vla_runtime.runtime.conventions import ActionNormalizer, discretize, prompt_ids
from vla_runtime.runtime.episodes.readers import CalibDataError, open_source
from vla_runtime.runtime.preprocess import Preprocessor

logger = logging.getLogger(__name__)


class TrainDataError(ValueError):
    """Demonstrations cannot be used for training; the message names the fix."""


@dataclass(frozen=True)
class Demonstrations:
    images: np.ndarray  # uint8 [N, S, S, 3]
    prompts: list[np.ndarray]  # N arrays of int64 [T_i]; equal-length prompts batch together
    targets: np.ndarray  # float32 [N, H, D] normalised to [-1, 1]
    past: np.ndarray  # int64 [N, D] bins of the previous action
    episode: np.ndarray  # int64 [N] episode index of each sample
    norm: NormStats  # measured on these demonstrations
    tasks: tuple[str, ...]  # distinct instructions seen

    def __len__(self) -> int:
        return len(self.images)


def load_demonstrations(path: str | Path, tokenizer, image_size: int, horizon: int, bins: int,
                        max_episodes: int | None = None) -> Demonstrations:
    """Read every episode under `path` into training tensors (one pass, frames resized once)."""
    try:
        source = open_source(path)
    except CalibDataError as exc:
        raise TrainDataError(str(exc)) from None
    lengths = source.episode_lengths()[:max_episodes]
    pre = Preprocessor(siglip_preprocess(image_size))
    images, actions, prompts, episode, starts = [], [], [], [], []
    cache: dict[str, np.ndarray] = {}
    for e, n in enumerate(lengths):
        starts.append(len(actions))
        for i in range(n):
            f = source.frame(e, i)
            if f.action is None:
                raise TrainDataError(f"{path}: episode {e} frame {i} has no recorded action; record with --record")
            images.append(pre.resize(f.image).copy())  # uint8 [S, S, 3]
            actions.append(f.action)
            if f.task not in cache:
                ids = prompt_ids(lambda text: tokenizer.encode(text, add_special_tokens=False).ids, PROMPT_TEMPLATE,
                                 f.task, tokenizer.token_to_id(BOS), MAX_PROMPT_TOKENS)  # as the runtime does
                cache[f.task] = np.asarray(ids, dtype=np.int64)
            prompts.append(cache[f.task])
            episode.append(e)
    if not actions:
        raise TrainDataError(f"{path}: the episodes hold no frames; record some demonstrations first")
    raw = np.stack(actions).astype(np.float64)  # [N, D] physical units
    norm = stats_from_actions(raw)
    normalized = np.clip(ActionNormalizer(norm, norm.dim).normalize(raw), -1.0, 1.0).astype(np.float32)  # [N, D]
    ep = np.asarray(episode, dtype=np.int64)
    index = np.arange(len(raw))
    ends = np.r_[starts[1:], len(raw)][ep] - 1  # [N] last sample of each sample's episode
    steps = np.minimum(index[:, None] + np.arange(horizon)[None, :], ends[:, None])  # [N, H]
    past = discretize(normalized[np.maximum(index - 1, 0)], bins)  # [N, D]
    past[np.asarray(starts)] = 0  # first tick of an episode: the runtime's decoder starts from zeros
    logger.info("demonstrations: %d episodes, %d frames, %d instructions", len(lengths), len(raw), len(cache))
    return Demonstrations(
        images=np.stack(images),
        prompts=prompts,
        targets=normalized[steps],  # [N, H, D]
        past=past,
        episode=ep,
        norm=norm,
        tasks=tuple(sorted(cache)),
    )
