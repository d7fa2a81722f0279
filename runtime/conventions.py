"""The action conventions a bundle's numbers mean something under: one home, imported by all.

The exporter, the onboard decoders, parity, calibration and the benchmarks must agree on every
one of these, so each is written once here and read from the manifest as data:

- bins: `bins` uniform bins over [-1, 1]; edges `-1 + 2 j / bins`, bin j decodes to its centre
  `-1 + (j + 0.5) * 2 / bins` (`bin_edges`, `bin_centres`, `discretize`). The manifest lists the
  centres it was built with (`action.bin_centres`) and decoders read them from there
  (`action_centres`); OpenVLA's 255 centres (midpoints of 256 uniform edges) are this formula.
- action ids (`ActionTokens`): the vocabulary id of bin j is `offset + j` ("ascending", RT-2
  style: the last `bins` ids of the vocabulary, today's bundles) or `offset - j`
  ("descending", OpenVLA style: counted from the end of the vocabulary with 255 centres).
  The graphs' `action_logits` are always in bin order, whatever the id order.
- greedy decode (tokens head, horizon 1): step 0 takes prefill's action_logits; step k > 0
  feeds the id of step k-1's bin at position `prefix_len + k - 1` (`token_position`) with the
  KV cache; every step takes the argmax over the bins.
- flow (`FlowNoise`, `flow_times`): x ~ N(0, 1) drawn float64 from one numpy generator seeded
  with `decode.noise_seed` and cast to float32; a fresh generator's first draw is what parity's
  reference uses. For k in 0..N-1, t = 1 - k / N and x <- x - v(context, x, t) / N.
- pi0 / pi0.5 (LeRobot, `runtime/kv_flow.py`): the same Euler grid over the prefix KV cache; the
  expert's time input is `flow_time_embedding` (sine-cosine over periods 4e-3..4, float64 as
  LeRobot computes it); pi0.5 writes the normalised state into its prompt as
  `state_prompt_bins` (256 bins over [-1, 1], np.digitize) after `pi05_task_text`.
- normalisation (`ActionNormalizer`): model space [-1, 1] <-> physical units by the bundle's
  q01/q99 (OpenVLA) or mean/std statistics; masked dimensions stay in model units.
- prompt (`prompt_ids`): the manifest's template with `{task}` filled in, encoded without the
  tokenizer's own special tokens, BOS first when the manifest names one, then truncated.

Only numpy here: the robot runs this module, and the exporter hands it torch tensors only where
plain arithmetic works on both (`ActionTokens.token_id`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_PROMPT_TEMPLATE = "What action should the robot take to {task}?"
TOKEN_ORDERS = ("ascending", "descending")
NORMALIZATIONS = ("q01_q99", "mean_std", "none")
# The per-dimension statistics each normalisation kind needs (plus an optional mask).
NORMALIZATION_FIELDS = {"q01_q99": ("low", "high"), "mean_std": ("mean", "std"), "none": ()}


# -- bins ----------------------------------------------------------------------------------------


def bin_edges(bins: int) -> np.ndarray:
    """float64 [bins + 1]: the uniform edges over [-1, 1]."""
    return np.linspace(-1.0, 1.0, bins + 1)


def bin_centres(bins: int) -> np.ndarray:
    """float32 [bins]: the value each bin decodes to (the midpoint of its two edges)."""
    return (-1.0 + (np.arange(bins, dtype=np.float64) + 0.5) * 2.0 / bins).astype(np.float32)


def action_centres(action: Any) -> np.ndarray:
    """float32 [bins]: the centres a manifest's `action` section lists, or the uniform ones it implies."""
    if getattr(action, "bin_centres", ()):
        return np.asarray(action.bin_centres, dtype=np.float32)
    return bin_centres(action.bins)


def discretize(normalized: np.ndarray, bins: int) -> np.ndarray:
    """Model-space values -> int64 bin indices; values outside [-1, 1] fall in the end bins."""
    x = np.asarray(normalized, dtype=np.float64)
    return np.clip(np.floor((x + 1.0) * 0.5 * bins), 0, bins - 1).astype(np.int64)


@dataclass(frozen=True)
class ActionTokens:
    """Which vocabulary id stands for which action bin."""

    bins: int  # number of bins (= centres) over [-1, 1]
    offset: int  # vocabulary id of bin 0
    order: str = "ascending"  # "ascending": bin j is id offset + j; "descending": offset - j

    def __post_init__(self):
        if self.bins < 2:
            raise ValueError("action bins must be >= 2")
        if self.order not in TOKEN_ORDERS:
            raise ValueError(f"action token order {self.order!r} is not one of {TOKEN_ORDERS}")
        if self.offset < 0 or (self.order == "descending" and self.offset - self.bins + 1 < 0):
            raise ValueError(f"action ids from {self.offset} ({self.order}, {self.bins} bins) leave the vocabulary")

    @classmethod
    def last_ids(cls, vocab_size: int, bins: int) -> ActionTokens:
        """RT-2 style: the last `bins` ids of the vocabulary, bin 0 first."""
        return cls(bins=bins, offset=vocab_size - bins, order="ascending")

    @classmethod
    def from_end(cls, vocab_size: int, bins: int = 255) -> ActionTokens:
        """OpenVLA style: bin 0 is the vocabulary's last id, counting down."""
        return cls(bins=bins, offset=vocab_size - 1, order="descending")

    @classmethod
    def of(cls, action: Any) -> ActionTokens:
        """The convention a manifest's `action` section describes."""
        return cls(bins=action.bins, offset=action.action_token_offset, order=action.action_token_order)

    @property
    def span(self) -> tuple[int, int]:
        """(first, stop): the half-open range of vocabulary ids the bins use."""
        if self.order == "ascending":
            return self.offset, self.offset + self.bins
        return self.offset - self.bins + 1, self.offset + 1

    def token_id(self, bins: Any) -> Any:
        """Bin index (int, numpy or torch integer array) -> vocabulary id, same type."""
        return self.offset + bins if self.order == "ascending" else self.offset - bins

    def bin_of(self, token_id: Any) -> Any:
        """Vocabulary id -> bin index (the inverse of `token_id`)."""
        return token_id - self.offset if self.order == "ascending" else self.offset - token_id

    def check_vocabulary(self, vocab_size: int) -> None:
        first, stop = self.span
        if first < 0 or stop > vocab_size:
            raise ValueError(f"action ids {first}..{stop - 1} do not fit a vocabulary of {vocab_size}")


def token_position(prefix_len: int, step: int) -> int:
    """Sequence position of the id fed at greedy step `step` (>= 1): right after the prefix."""
    return prefix_len + step - 1


# -- flow ----------------------------------------------------------------------------------------


class FlowNoise:
    """The seeded Gaussian start noise; one generator per policy so runs repeat exactly."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def draw(self, horizon: int, dim: int) -> np.ndarray:
        """float32 [H, D]: the next draw (float64 from the generator, then cast)."""
        return self._rng.standard_normal((horizon, dim)).astype(np.float32)


def flow_noise(seed: int, horizon: int, dim: int) -> np.ndarray:
    """float32 [H, D]: the first draw of a fresh generator, what the first inference uses."""
    return FlowNoise(seed).draw(horizon, dim)


def flow_times(steps: int) -> np.ndarray:
    """float32 [steps]: the Euler grid t_k = 1 - k / steps, from noise (1) towards data (0)."""
    return np.array([1.0 - k / steps for k in range(steps)], dtype=np.float32)


def flow_time_embedding(t: float, width: int, min_period: float, max_period: float) -> np.ndarray:
    """float32 [1, width]: pi0's sine-cosine embedding of flow time t, computed in float64.

    Periods run geometrically from `min_period` to `max_period` (LeRobot / openpi: 4e-3 .. 4.0);
    the first half holds sin(2 pi t / period), the second cos. Periods of milliseconds need
    float64 arguments to match LeRobot, which is why the graph takes this as an input.
    """
    fraction = np.linspace(0.0, 1.0, width // 2, dtype=np.float64)
    period = min_period * (max_period / min_period) ** fraction  # [W/2]
    angle = (1.0 / period * 2 * np.pi) * np.float64(np.float32(t))  # [W/2]
    return np.concatenate([np.sin(angle), np.cos(angle)])[None].astype(np.float32)


def state_prompt_bins(normalized_state: np.ndarray) -> str:
    """pi0.5's state in the prompt: each normalised value's bin of 256 over [-1, 1], space separated.

    Values below -1 land in bin -1 and values at or above the last edge in 255, exactly as
    LeRobot's `np.digitize(x, linspace(-1, 1, 257)[:-1]) - 1`.
    """
    bins = np.digitize(np.asarray(normalized_state, np.float32), bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1
    return " ".join(str(int(b)) for b in bins)


def pi05_task_text(task: str) -> str:
    """The task as pi0.5 writes it into its prompt (underscores and newlines become spaces)."""
    return task.strip().replace("_", " ").replace("\n", " ")


# -- normalisation -------------------------------------------------------------------------------


class ActionNormalizer:
    """Model space float32 [H, D] <-> physical float64 [H, D] with the bundle's statistics."""

    def __init__(self, normalization: Any, dim: int):
        n = normalization
        if n.kind not in NORMALIZATIONS:
            raise ValueError(f"normalization kind {n.kind!r} is not one of {NORMALIZATIONS}")
        self.kind = n.kind
        mask = np.asarray(n.mask if n.mask else (True,) * dim, dtype=bool)  # [D]
        if n.kind == "q01_q99":
            low, high = np.asarray(n.low, np.float64), np.asarray(n.high, np.float64)  # [D]
            scale, offset = 0.5 * (high - low), 0.5 * (high - low) + low  # a = x * scale + offset
        elif n.kind == "mean_std":
            scale, offset = np.asarray(n.std, np.float64), np.asarray(n.mean, np.float64)
        else:
            scale, offset = np.ones(dim), np.zeros(dim)
        self._scale = np.where(mask, scale, 1.0)  # [D] masked dims stay in model units
        self._offset = np.where(mask, offset, 0.0)  # [D]

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        """Model space -> physical units, a fresh float64 array."""
        return np.asarray(normalized).astype(np.float64) * self._scale + self._offset

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Physical units -> model space (float64); q01/q99 values land on -1/+1."""
        return (np.asarray(actions, dtype=np.float64) - self._offset) / self._scale


# -- prompt --------------------------------------------------------------------------------------


def render_prompt(template: str, task: str) -> str:
    return template.format(task=task)


def prompt_ids(
    encode: Callable[[str], Sequence[int]], template: str, task: str, bos_token_id: int | None, max_tokens: int
) -> list[int]:
    """BOS (when named) + the encoded template, truncated to `max_tokens` ids.

    `encode` must not add the tokenizer's own special tokens.
    """
    ids = list(encode(render_prompt(template, task)))
    if bos_token_id is not None:
        ids = [bos_token_id] + ids
    if len(ids) > max_tokens:
        logger.warning(
            "prompt for task %r is %d tokens; truncated to %d (prompt.max_tokens)", task, len(ids), max_tokens
        )
    return ids[:max_tokens]


__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "NORMALIZATIONS",
    "NORMALIZATION_FIELDS",
    "TOKEN_ORDERS",
    "ActionNormalizer",
    "ActionTokens",
    "FlowNoise",
    "action_centres",
    "bin_centres",
    "bin_edges",
    "discretize",
    "flow_noise",
    "flow_time_embedding",
    "flow_times",
    "pi05_task_text",
    "prompt_ids",
    "render_prompt",
    "state_prompt_bins",
    "token_position",
]
