"""Record what the robot saw and what it was actually sent, for INT8 calibration and replay.

Layout (read by the calibration tools)::

    DIR/episode_000000/frames.npy   uint8   [T, H, W, 3]  camera, RGB
                       states.npy   float32 [T, S]        joint positions, then gripper opening
                       actions.npy  float32 [T, D]        the command after safety, in the action space
                       meta.json    {"task", "rate_hz", "bundle", "robot", "steps"}

Frames are appended to an in-memory list and written once at `close()`, so recording costs a
copy per tick rather than disk I/O inside the deadline. An interrupted episode is still written
with the ticks it has.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def next_episode_dir(root: str | Path) -> Path:
    """The first unused DIR/episode_NNNNNN."""
    root = Path(root)
    taken = {p.name for p in root.glob("episode_*")} if root.is_dir() else set()
    i = 0
    while f"episode_{i:06d}" in taken:
        i += 1
    return root / f"episode_{i:06d}"


class EpisodeRecorder:
    def __init__(self, root: str | Path, task: str, rate_hz: float, bundle: str, robot: str):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--record {self.root}: exists and is not a directory; pass a directory path")
        self.meta = {"task": task, "rate_hz": float(rate_hz), "bundle": bundle, "robot": robot}
        self._frames: list[np.ndarray] = []
        self._states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self.path: Path | None = None

    def __len__(self) -> int:
        return len(self._actions)

    def append(self, image: np.ndarray, state: np.ndarray, action: np.ndarray) -> None:
        """One tick: the frame, the state vector [S] and the sent action [D]."""
        if self._frames and image.shape != self._frames[0].shape:
            raise ValueError(f"recorder: frame shape changed from {self._frames[0].shape} to {image.shape}")
        self._frames.append(np.asarray(image, dtype=np.uint8).copy())
        self._states.append(np.asarray(state, dtype=np.float32))
        self._actions.append(np.asarray(action, dtype=np.float32))

    def close(self) -> Path | None:
        """Write the episode; returns its folder (None when nothing was recorded)."""
        if not self._actions:
            logger.warning("recorder: no ticks recorded, nothing written")
            return None
        path = next_episode_dir(self.root)
        path.mkdir(parents=True)
        np.save(path / "frames.npy", np.stack(self._frames))
        np.save(path / "states.npy", np.stack(self._states))
        np.save(path / "actions.npy", np.stack(self._actions))
        (path / "meta.json").write_text(json.dumps({**self.meta, "steps": len(self._actions)}, indent=2) + "\n")
        self.path = path
        self._frames, self._states, self._actions = [], [], []
        return path
