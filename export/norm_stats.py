"""Action normalisation statistics: they travel with the model, from checkpoint to bundle.

The network works in [-1, 1] per dimension; the robot needs metres, radians and a gripper
opening. OpenVLA maps [-1, 1] onto each dimension's 1st..99th percentile (q01_q99); other
policies standardise (mean_std). The statistics are part of the model, never guessed on board.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vla_runtime.runtime.conventions import NORMALIZATION_FIELDS, NORMALIZATIONS
from vla_runtime.runtime.joint_contract import EE_DELTA_NAMES, EE_DELTA_UNITS

logger = logging.getLogger(__name__)

NORM_STATS_FILE = "norm_stats.json"
STATE_STATS_FILE = "state_stats.json"  # a checkpoint whose model reads the measured state: its statistics


@dataclass(frozen=True)
class NormStats:
    kind: str  # "q01_q99" | "mean_std" | "none"
    names: tuple[str, ...]  # D dimension names
    units: tuple[str, ...]  # D units
    low: tuple[float, ...] = ()  # q01 per dim, physical units (q01_q99)
    high: tuple[float, ...] = ()  # q99 per dim, physical units (q01_q99)
    mean: tuple[float, ...] = ()  # per dim, physical units (mean_std)
    std: tuple[float, ...] = ()  # per dim, physical units (mean_std), > 0
    mask: tuple[bool, ...] = ()  # False: dim stays in model units (gripper already 0..1)
    space: str = "ee_delta"  # "ee_delta" | "joint_position"

    def __post_init__(self):
        d = len(self.names)
        if self.kind not in NORMALIZATIONS:
            raise ValueError(f"norm stats kind {self.kind!r} is not one of {NORMALIZATIONS}")
        if len(self.units) != d:
            raise ValueError(f"norm stats need {d} units, got {len(self.units)}")
        wanted = NORMALIZATION_FIELDS[self.kind]
        for key in wanted + (("mask",) if self.mask else ()):
            if len(getattr(self, key)) != d:
                raise ValueError(f"norm stats field {key!r} needs {d} values")
        if self.kind == "q01_q99" and any(lo >= hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError("norm stats: every q01 must be below its q99")
        if self.kind == "mean_std" and any(s <= 0 for s in self.std):
            raise ValueError("norm stats: every std must be > 0")

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, doc: dict) -> NormStats:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown norm stats field(s) {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()})


def default_norm_stats() -> NormStats:
    """Plausible tabletop statistics for the 7-D end-effector delta space (10 Hz control)."""
    return NormStats(
        kind="q01_q99",
        names=EE_DELTA_NAMES,
        units=EE_DELTA_UNITS,
        low=(-0.015, -0.015, -0.015, -0.08, -0.08, -0.08, 0.0),  # metres / radians per tick
        high=(0.015, 0.015, 0.015, 0.08, 0.08, 0.08, 1.0),
        mask=(True, True, True, True, True, True, False),
    )


def stats_from_actions(
    actions: np.ndarray,
    names: tuple[str, ...] = EE_DELTA_NAMES,
    units: tuple[str, ...] = EE_DELTA_UNITS,
    space: str = "ee_delta",
    min_span: float = 1e-4,  # physical units; a dimension that never moves still gets a usable range
) -> NormStats:
    """q01/q99 per dimension, measured on demonstration actions [N, D] (OpenVLA's statistics)."""
    a = np.asarray(actions, dtype=np.float64)  # [N, D]
    if a.ndim != 2 or a.shape[1] != len(names) or len(a) < 2:
        raise ValueError(f"need actions [N>=2, {len(names)}] to measure statistics, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("demonstration actions contain NaN or inf; re-record the episodes")
    low, high = np.quantile(a, 0.01, axis=0), np.quantile(a, 0.99, axis=0)  # [D]
    centre, half = (low + high) / 2, np.maximum((high - low) / 2, min_span / 2)
    return NormStats(
        kind="q01_q99",
        names=tuple(names),
        units=tuple(units),
        low=tuple(float(v) for v in centre - half),
        high=tuple(float(v) for v in centre + half),
        mask=(True,) * len(names),
        space=space,
    )


def save_norm_stats(stats: NormStats, directory: Path, name: str = NORM_STATS_FILE) -> Path:
    path = Path(directory) / name
    path.write_text(json.dumps(stats.to_json(), indent=2) + "\n")
    return path


def load_norm_stats(directory: Path, name: str = NORM_STATS_FILE) -> NormStats:
    path = Path(directory) / name
    what = "action" if name == NORM_STATS_FILE else "measured-state"
    try:
        return NormStats.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; a checkpoint carries its {what} statistics in {name}") from None
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
