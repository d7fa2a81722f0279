"""Demonstrations as training tensors: what the robot saw, what it was told, what the expert did.

Episodes are read only through calibration's reader API (`open_source`), so any recording
format it understands (the runtime's recordings, LeRobot datasets) trains the same way. Every
input is prepared exactly as the runtime will prepare it on the robot: frames are resized by
the control loop's own preprocessor, prompts tokenized with the bundle's template, and
action chunks normalised with statistics measured on these same demonstrations.

One sample is one tick t of one episode:
  image     uint8 [S, S, 3]  the frame at t, resized to the model's input size ([V, S, S, 3]: one per
                             camera view, in the model's order, for a model that reads several)
  prompt    int64 [T]        BOS + prompt template ids for the episode's instruction
  target    float32 [H, D]   normalised actions t .. t+H-1 (the last action repeats past the end)
  past      int64 [D]        bins of the action executed at t-1 (zeros at t = 0, as the runtime starts)
  state     float32 [S]      measured joints + gripper at t, normalised (models that read the state)
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
    images: np.ndarray  # uint8 [N, S, S, 3], or [N, V, S, S, 3] for several camera views
    prompts: list[np.ndarray]  # N arrays of int64 [T_i]; equal-length prompts batch together
    targets: np.ndarray  # float32 [N, H, D] normalised to [-1, 1]
    past: np.ndarray  # int64 [N, D] bins of the previous action
    episode: np.ndarray  # int64 [N] episode index of each sample
    norm: NormStats  # measured on these demonstrations
    tasks: tuple[str, ...]  # distinct instructions seen
    # float32 [N, D]: 1 where the target supervises the dimension, 0 where it says nothing (the
    # scripted expert never commands rotation, so its relabelled chunks leave those dims to the data)
    dim_weight: np.ndarray | None = None
    states: np.ndarray | None = None  # float32 [N, S] normalised measured state, for models that read it
    state_norm: NormStats | None = None  # the statistics `states` was normalised with

    def weights(self) -> np.ndarray:
        return self.dim_weight if self.dim_weight is not None else np.ones(self.past.shape, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.images)


def task_prompts(tokenizer, tasks) -> dict[str, np.ndarray]:
    """Instruction -> int64 [T] prompt ids, exactly as the runtime tokenizes them."""
    bos = tokenizer.token_to_id(BOS)
    return {t: np.asarray(prompt_ids(lambda text: tokenizer.encode(text, add_special_tokens=False).ids,
                                     PROMPT_TEMPLATE, t, bos, MAX_PROMPT_TOKENS), dtype=np.int64)
            for t in sorted(set(tasks))}


def load_demonstrations(path: str | Path, tokenizer, image_size: int, horizon: int, bins: int,
                        max_episodes: int | None = None, norm: NormStats | None = None,
                        state: NormStats | None = None, measure_state: bool = True,
                        views: tuple[str, ...] = ("front",)) -> Demonstrations:
    """Read every episode under `path` into training tensors (one pass, frames resized once).

    `norm` (a checkpoint's statistics, when training continues from it) keeps its bins; without
    it the statistics are measured on these demonstrations. `state` names the measured state a
    model reads (joints then gripper, e.g. from the robot file); its range is measured on the
    data too unless `measure_state` is False (continuing from a checkpoint keeps its range).
    A model reading several camera `views` gets every one of them per frame, in that order.
    """
    try:
        source = open_source(path)
    except CalibDataError as exc:
        raise TrainDataError(str(exc)) from None
    lengths = source.episode_lengths()[:max_episodes]
    pre = Preprocessor(siglip_preprocess(image_size))
    images, actions, prompts, episode, starts, states = [], [], [], [], [], []
    cache: dict[str, np.ndarray] = {}
    for e, n in enumerate(lengths):
        starts.append(len(actions))
        for i in range(n):
            f = source.frame(e, i)
            if f.action is None:
                raise TrainDataError(f"{path}: episode {e} frame {i} has no recorded action; record with --record")
            if state is not None:
                states.append(_state_row(f, state.dim, path, e, i))
            images.append(_frame_images(f, views, pre, path, e, i))  # uint8 [S, S, 3] or [V, S, S, 3]
            actions.append(f.action)
            if f.task not in cache:
                cache.update(task_prompts(tokenizer, [f.task]))
            prompts.append(cache[f.task])
            episode.append(e)
    if not actions:
        raise TrainDataError(f"{path}: the episodes hold no frames; record some demonstrations first")
    raw = np.stack(actions).astype(np.float64)  # [N, D] physical units
    norm = norm if norm is not None else stats_from_actions(raw)
    normalized = np.clip(ActionNormalizer(norm, norm.dim).normalize(raw), -1.0, 1.0).astype(np.float32)  # [N, D]
    ep = np.asarray(episode, dtype=np.int64)
    index = np.arange(len(raw))
    ends = np.asarray(starts[1:] + [len(raw)], dtype=np.int64)[ep] - 1  # [N] last sample of each sample's episode
    steps = np.minimum(index[:, None] + np.arange(horizon)[None, :], ends[:, None])  # [N, H]
    past = discretize(normalized[np.maximum(index - 1, 0)], bins)  # [N, D]
    past[np.asarray(starts)] = 0  # first tick of an episode: the runtime's decoder starts from zeros
    logger.info("demonstrations: %d episodes, %d frames, %d instructions", len(lengths), len(raw), len(cache))
    state_norm, normal_states = None, None
    if state is not None:
        measured = np.stack(states).astype(np.float64)  # [N, S] physical units
        state_norm = (stats_from_actions(measured, state.names, state.units, space="joint_position")
                      if measure_state else state)
        normal_states = _normalized_states(state_norm, measured)
    return Demonstrations(
        images=np.stack(images),
        prompts=prompts,
        targets=normalized[steps],  # [N, H, D]
        past=past,
        episode=ep,
        norm=norm,
        tasks=tuple(sorted(cache)),
        states=normal_states,
        state_norm=state_norm,
    )


def _frame_images(frame, views: tuple[str, ...], pre: Preprocessor, path, episode: int, index: int) -> np.ndarray:
    """The frame resized the runtime's way; with several views, each of them in the model's order."""
    if len(views) == 1:
        return pre.resize(frame.image).copy()  # the resizer reuses its buffer
    missing = [v for v in views if not frame.views or v not in frame.views]
    if missing:
        have = sorted(frame.views) if frame.views else ["one camera"]
        raise TrainDataError(f"{path}: episode {episode} frame {index} has no {missing[0]!r} view (it holds {have}); "
                             f"record every view the model reads, e.g. --record-views {','.join(views)}")
    return np.stack([pre.resize(frame.views[v]).copy() for v in views])  # [V, S, S, 3]


def _normalized_states(stats: NormStats, measured: np.ndarray) -> np.ndarray:
    """Measured states [N, S] in physical units -> float32 [N, S] as the runtime's StateInput normalises them."""
    return ActionNormalizer(stats, stats.dim).normalize(np.asarray(measured, dtype=np.float64)).astype(np.float32)


def _state_row(frame, dim: int, path, episode: int, index: int) -> np.ndarray:
    """The frame's measured state [S]; one clear line when the recording has none or another size."""
    if frame.state is None:
        raise TrainDataError(f"{path}: episode {episode} frame {index} has no measured state; the model reads the "
                             "robot state, so record with `vla-runtime --record` (it stores the state)")
    row = np.asarray(frame.state, dtype=np.float64).reshape(-1)
    if row.shape[0] != dim:
        raise TrainDataError(f"{path}: episode {episode} holds {row.shape[0]} state values but the model reads {dim}"
                             " (joints then gripper); train with the --state robot the episodes were recorded on")
    return row


def load_relabelled(path: str | Path, tokenizer, norm: NormStats, image_size: int, horizon: int,
                    bins: int, state_norm: NormStats | None = None, views: int = 1) -> Demonstrations:
    """A `vla-export dagger` file as training samples, normalised with `norm` (the demonstrations')
    and, for a model that reads the state, `state_norm`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            doc = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise TrainDataError(f"{path}: not a labelled-observations file from `vla-export dagger` ({exc})") from None
    missing = {"images", "tasks", "labels", "past", "episode", "image_size", "bins"} - set(doc)
    if missing:
        raise TrainDataError(f"{path}: missing {', '.join(sorted(missing))}; collect it with `vla-export dagger`")
    if int(doc["image_size"]) != image_size or int(doc["bins"]) != bins:
        raise TrainDataError(f"{path}: collected at {int(doc['image_size'])} px / {int(doc['bins'])} bins but the "
                             f"model takes {image_size} px / {bins} bins; collect with a bundle of this model")
    held = 1 if doc["images"].ndim == 4 else doc["images"].shape[1]  # camera views per observation
    if held != views:
        raise TrainDataError(f"{path}: holds {held} camera view(s) per observation but the model reads {views}; "
                             "collect with a bundle of this model")
    labels = doc["labels"]  # [N, H', D] physical units
    if labels.shape[1] < horizon or labels.shape[2] != norm.dim:
        raise TrainDataError(f"{path}: labels {labels.shape[1:]} do not cover horizon {horizon} x {norm.dim} dims")
    flat = labels[:, :horizon].reshape(-1, norm.dim).astype(np.float64)
    targets = np.clip(ActionNormalizer(norm, norm.dim).normalize(flat), -1.0, 1.0).astype(np.float32)
    prompts = task_prompts(tokenizer, doc["tasks"].tolist())
    states = None
    if state_norm is not None:
        if "states" not in doc or doc["states"].shape != (len(labels), state_norm.dim):
            raise TrainDataError(f"{path}: holds no {state_norm.dim}-value measured state per observation; collect "
                                 "it again with `vla-export dagger` (it records the state)")
        states = _normalized_states(state_norm, doc["states"])
    commanded = np.any(labels != 0.0, axis=(0, 1)).astype(np.float32)  # [D] dims the expert ever moves
    logger.info("relabelled: %d observations from %s (supervised dims %s)", len(labels), path, commanded.tolist())
    return Demonstrations(
        images=doc["images"],
        prompts=[prompts[t] for t in doc["tasks"].tolist()],
        targets=targets.reshape(len(labels), horizon, norm.dim),  # [N, H, D]
        past=doc["past"].astype(np.int64),
        episode=doc["episode"].astype(np.int64),
        norm=norm,
        tasks=tuple(sorted(prompts)),
        dim_weight=np.repeat(commanded[None], len(labels), axis=0),  # [N, D]
        states=states,
        state_norm=state_norm,
    )


def merge(parts: list[Demonstrations]) -> Demonstrations:
    """One sample set from several; episode ids stay distinct, the first part's statistics hold."""
    offset, episodes = 0, []
    for p in parts:
        episodes.append(p.episode + offset)
        offset += int(p.episode.max()) + 1
    return Demonstrations(
        images=np.concatenate([p.images for p in parts]),
        prompts=[q for p in parts for q in p.prompts],
        targets=np.concatenate([p.targets for p in parts]),
        past=np.concatenate([p.past for p in parts]),
        episode=np.concatenate(episodes),
        norm=parts[0].norm,
        tasks=tuple(sorted({t for p in parts for t in p.tasks})),
        dim_weight=np.concatenate([p.weights() for p in parts]),
        states=np.concatenate([p.states for p in parts]) if parts[0].states is not None else None,
        state_norm=parts[0].state_norm,
    )
