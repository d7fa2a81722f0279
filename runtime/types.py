"""Values that flow one way through a tick: Frame -> ActionChunk -> safe command."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from vla_runtime.drivers.cameras.base import Frame  # cameras are drivers; the frame type lives with them

# One observation's pixels: a Frame (every view the policy reads sees it: a still image for
# parity samples and profiling) or the newest Frame of each named view, {view: Frame}.
Frames = Frame | Mapping[str, Frame]


def view_frames(frames: Frames, views: tuple[str, ...]) -> tuple[Frame, ...]:
    """The frames of `views`, in that order; a view missing from a mapping is named in one line."""
    if isinstance(frames, Frame):
        return (frames,) * len(views)
    missing = [v for v in views if v not in frames]
    if missing:
        raise ValueError(f"no frame for camera view {missing[0]!r} (got {sorted(frames)}); "
                         f"the policy reads {list(views)}")
    return tuple(frames[v] for v in views)


def capture_time(frames: Frames) -> float:
    """When the oldest of the frames was captured (what a chunk is stamped with and aged by)."""
    if isinstance(frames, Frame):
        return frames.t_capture
    return min(f.t_capture for f in frames.values())


@dataclass(frozen=True)
class RobotState:
    joint_positions: np.ndarray  # radians (revolute) / metres (prismatic), [J]
    ee_position: np.ndarray  # metres, base frame, [3]
    ee_orientation: np.ndarray  # roll, pitch, yaw in radians, base frame, [3]
    gripper: float  # 0 = closed .. 1 = open
    t_read: float  # seconds, time.monotonic()


@dataclass(frozen=True)
class ActionChunk:
    """H future actions in physical units (the bundle's action.units), oldest first."""

    actions: np.ndarray  # float64 [H, D]
    names: tuple[str, ...]  # D names from the bundle
    t_obs: float  # capture time of the frame the chunk was predicted from

    def __post_init__(self):
        if self.actions.ndim != 2 or self.actions.shape[1] != len(self.names):
            raise ValueError(f"ActionChunk wants [H, {len(self.names)}], got {self.actions.shape}")

    @property
    def horizon(self) -> int:
        return self.actions.shape[0]


class InferenceMiss(RuntimeError):
    """This inference could not be had in time (a remote server late or unreachable).

    The loop keeps executing the chunk it has, then holds, and stops safely after too many
    misses in a row; any other exception from `Policy.infer` ends the episode at once.
    """


class Policy(ABC):
    """Turns one observation and an instruction into a chunk of physical actions."""

    @abstractmethod
    def infer(self, frame: Frames, task: str, state: RobotState | None = None) -> ActionChunk:
        """Run preprocessing, the graphs and the decoder once on one frame or one frame per view;
        InferenceMiss when it could not in time."""
