"""Episode frames from the places a robot team already keeps them.

INT8 calibration and training both need what the robot really sees: its own recorded episodes
(`vla-runtime --record DIR`: MCAP files, read by `runtime.episodes.recordings`, or the earlier
episode_*/frames.npy folders), a LeRobot dataset on local disk (see
`runtime.episodes.lerobot`), or a folder of images with the
instructions they go with. Every source looks the same to the sampler: a list of episode
lengths plus random access to one frame, so a sample plan can spread across episodes without
loading whole datasets into memory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from vla_runtime.runtime.episodes.frames import (
    CalibDataError,
    CalibFrame,
    CalibSource,
    as_rgb_uint8,
    decode_image_bytes,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
__all__ = ["CalibDataError", "CalibFrame", "CalibSource", "ImageFolder", "RecordedEpisodes", "open_source"]


# ---------------------------------------------------------------------------------------------
# The runtime's own recordings.
# ---------------------------------------------------------------------------------------------


class RecordedEpisodes(CalibSource):
    """Episodes in the earlier `--record` layout: DIR/episode_NNNNNN/{frames,states,actions}.npy.

    Frames are memory-mapped, so a long recording costs nothing until a frame is sampled.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dirs = sorted(p for p in self.root.glob("episode_*") if p.is_dir())
        if not self.dirs:
            raise CalibDataError(f"{self.root}: no episode_* folders; record some with `vla-runtime --record DIR`")
        self._frames: dict[int, np.ndarray] = {}
        self._lengths: list[int] = []
        self._tasks: list[str] = []
        for i, d in enumerate(self.dirs):
            frames_path, meta_path = d / "frames.npy", d / "meta.json"
            if not frames_path.is_file():
                raise CalibDataError(f"{d}: frames.npy is missing; the recording is incomplete, delete this episode")
            frames = np.load(frames_path, mmap_mode="r")  # uint8 [T, H, W, 3]
            if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
                raise CalibDataError(
                    f"{frames_path}: shape {frames.shape} dtype {frames.dtype}; expected uint8 [T, H, W, 3]"
                )
            self._frames[i] = frames
            self._lengths.append(int(frames.shape[0]))
            self._tasks.append(_recorded_task(meta_path))

    def episode_lengths(self) -> list[int]:
        return list(self._lengths)

    def frame(self, episode: int, index: int) -> CalibFrame:
        d = self.dirs[episode]
        image = as_rgb_uint8(np.array(self._frames[episode][index]), f"{d}/frames.npy[{index}]")
        return CalibFrame(
            image=image,
            task=self._tasks[episode],
            episode=episode,
            index=index,
            state=_optional_row(d / "states.npy", index),
            action=_optional_row(d / "actions.npy", index),
        )


def _recorded_task(meta_path: Path) -> str:
    if not meta_path.is_file():
        raise CalibDataError(f"{meta_path}: missing; every recorded episode needs its meta.json with the task")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CalibDataError(f"{meta_path}: not valid JSON (line {exc.lineno}); fix or delete the episode") from None
    task = meta.get("task") if isinstance(meta, dict) else None
    if not isinstance(task, str) or not task.strip():
        raise CalibDataError(f"{meta_path}: no \"task\" string; add the instruction the episode was recorded with")
    return task


def _optional_row(path: Path, index: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    rows = np.load(path, mmap_mode="r")
    return np.array(rows[index], dtype=np.float32) if index < len(rows) else None


# ---------------------------------------------------------------------------------------------
# A folder of images plus the instructions to pair them with.
# ---------------------------------------------------------------------------------------------


class ImageFolder(CalibSource):
    """Still images with instructions: each image is its own one-frame episode.

    Instructions come from a text file (one per line, cycled over the sorted images), a JSON
    file mapping image file name -> instruction, or a list given directly.
    """

    def __init__(self, root: str | Path, instructions: str | Path | list[str]):
        self.root = Path(root)
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise CalibDataError(
                f"{self.root}: no images ({', '.join(IMAGE_SUFFIXES)}); point --calib at a folder of frames"
            )
        self.tasks = _pair_instructions(self.root, self.paths, instructions)

    def episode_lengths(self) -> list[int]:
        return [1] * len(self.paths)

    def frame(self, episode: int, index: int) -> CalibFrame:
        if index != 0:
            raise IndexError(f"image episodes have one frame, asked for frame {index}")
        path = self.paths[episode]
        return CalibFrame(image=decode_image_bytes(path.read_bytes(), str(path)), task=self.tasks[episode],
                          episode=episode, index=0)


def _pair_instructions(root: Path, paths: list[Path], instructions: str | Path | list[str]) -> list[str]:
    if isinstance(instructions, (str, Path)):
        source = Path(instructions)
        if not source.is_file():
            raise CalibDataError(f"{source}: instructions file not found; pass a .txt (one per line) or .json file")
        if source.suffix.lower() == ".json":
            try:
                mapping = json.loads(source.read_text())
            except json.JSONDecodeError as exc:
                raise CalibDataError(f"{source}: not valid JSON (line {exc.lineno})") from None
            if not isinstance(mapping, dict):
                raise CalibDataError(f"{source}: expected an object mapping image file name -> instruction")
            missing = [p.relative_to(root).as_posix() for p in paths if _lookup(mapping, root, p) is None]
            if missing:
                raise CalibDataError(
                    f"{source}: no instruction for {missing[0]} (and {len(missing) - 1} more); add them"
                )
            return [str(_lookup(mapping, root, p)) for p in paths]
        lines = [ln.strip() for ln in source.read_text().splitlines() if ln.strip()]
    else:
        lines = [str(t).strip() for t in instructions if str(t).strip()]
    if not lines:
        raise CalibDataError("no instructions given; pass --instructions FILE with one instruction per line")
    return [lines[i % len(lines)] for i in range(len(paths))]


def _lookup(mapping: dict, root: Path, path: Path) -> str | None:
    return mapping.get(path.relative_to(root).as_posix(), mapping.get(path.name))


# ---------------------------------------------------------------------------------------------
# Choosing a reader for a path.
# ---------------------------------------------------------------------------------------------


def open_source(path: str | Path, instructions: str | Path | list[str] | None = None,
                camera: str | None = None) -> CalibSource:
    """Pick the reader from what the folder holds; refuse anything ambiguous with the fix."""
    root = Path(path)
    if root.is_file() and root.suffix == ".mcap":
        from vla_runtime.runtime.episodes.recordings import RecordedMcap

        return RecordedMcap(root, camera=camera)
    if not root.is_dir():
        raise CalibDataError(
            f"{root}: not a folder; --calib takes recordings (.mcap), a LeRobot dataset or an image folder"
        )
    if (root / "meta" / "info.json").is_file():
        from vla_runtime.runtime.episodes.lerobot import LeRobotDataset

        return LeRobotDataset(root, camera=camera)
    if any(root.glob("episode_*/frames.npy")):
        return RecordedEpisodes(root)
    if any(root.glob("*.mcap")):
        from vla_runtime.runtime.episodes.recordings import RecordedMcap

        return RecordedMcap(root, camera=camera)
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
        if instructions is None:
            raise CalibDataError(f"{root}: an image folder needs --instructions FILE (one instruction per line)")
        return ImageFolder(root, instructions)
    raise CalibDataError(
        f"{root}: neither recorded episodes (*.mcap, episode_*/frames.npy), a LeRobot dataset (meta/info.json) "
        "nor an image folder"
    )
