"""LeRobot-format datasets (v2.x and v3.0) read from local disk, without torch or the hub.

Only what calibration needs is read: the episode/frame index columns up front, and one camera
image, the state and the action for the frames the sampler picks. Camera frames live either
as encoded images inside the parquet files (`{"bytes": png}`) or in mp4 files; mp4 frames
are decoded with PyAV when it is installed, and a dataset whose camera exists only as video
is refused with the install line when it is not.

Layouts understood:

- v2.x: ``data/chunk-XXX/episode_NNNNNN.parquet`` (one episode per file), ``meta/tasks.jsonl``,
  ``videos/chunk-XXX/<camera>/episode_NNNNNN.mp4``.
- v3.0: ``data/chunk-XXX/file-XXX.parquet`` (many episodes per file), ``meta/tasks.parquet``,
  ``meta/episodes/chunk-XXX/file-XXX.parquet`` (per-episode video file and start time),
  ``videos/<camera>/chunk-XXX/file-XXX.mp4``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from vla_runtime.common.cli import missing_dependency
from vla_runtime.runtime.episodes.frames import (
    CalibDataError,
    CalibFrame,
    CalibSource,
    as_rgb_uint8,
    decode_image_bytes,
)

logger = logging.getLogger(__name__)

_INDEX_COLUMNS = ("episode_index", "frame_index", "timestamp", "task_index")
_V2_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
_V3_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


class LeRobotDataset(CalibSource):
    """Random access to (image, task, state, action) of a LeRobot dataset folder."""

    def __init__(self, root: str | Path, camera: str | None = None):
        import pyarrow.parquet as pq

        self.root = Path(root)
        self.info = _read_json(self.root / "meta" / "info.json")
        self.version = str(self.info.get("codebase_version", "v2.0"))
        self.fps = float(self.info.get("fps", 0) or 0)  # frames per second, for video timestamps
        features = self.info.get("features")
        if not isinstance(features, dict):
            raise CalibDataError(f"{self.root}/meta/info.json: no \"features\" object; is this a LeRobot dataset?")
        self.camera, self.camera_kind = _pick_camera(self.root, features, camera)
        self.tasks = _read_tasks(self.root / "meta")
        files = sorted((self.root / "data").rglob("*.parquet"))
        if not files:
            raise CalibDataError(f"{self.root}/data: no parquet files; the dataset is incomplete")
        # (episode, frame) -> (file number, row); read once, only the small index columns.
        self._files = files
        rows: dict[int, list[tuple[int, int, int, float, int]]] = {}
        for fi, path in enumerate(files):
            schema = pq.read_schema(path)
            missing = [c for c in ("episode_index", "frame_index") if c not in schema.names]
            if missing:
                raise CalibDataError(f"{path}: column(s) {missing} missing; not a LeRobot data file")
            cols = [c for c in _INDEX_COLUMNS if c in schema.names]
            table = pq.read_table(path, columns=cols).to_pydict()
            n = len(table["episode_index"])
            ts = table.get("timestamp") or [None] * n
            task = table.get("task_index") or [0] * n
            for row in range(n):
                ep, fr = int(table["episode_index"][row]), int(table["frame_index"][row])
                t = float(ts[row]) if ts[row] is not None else fr / max(self.fps, 1e-9)
                rows.setdefault(ep, []).append((fr, fi, row, t, int(task[row])))
        self.episode_ids = sorted(rows)
        self._rows = [sorted(rows[ep]) for ep in self.episode_ids]
        self._video_starts = _video_starts(self.root, self.camera) if self.camera_kind == "video" else {}
        self._cache_file: int | None = None
        self._cache_table: dict | None = None
        logger.info("LeRobot %s dataset %s: %d episodes, camera %s (%s)", self.version, self.root,
                    len(self.episode_ids), self.camera, self.camera_kind)

    def episode_lengths(self) -> list[int]:
        return [len(r) for r in self._rows]

    def frame(self, episode: int, index: int) -> CalibFrame:
        frame_index, file_no, row, timestamp, task_index = self._rows[episode][index]
        table = self._table(file_no)
        where = f"{self._files[file_no]} row {row}"
        if self.camera_kind == "image":
            image = _image_cell(table[self.camera][row], self.root, where)
        else:
            image = self._video_frame(self.episode_ids[episode], timestamp)
        if task_index not in self.tasks:
            raise CalibDataError(f"{where}: task_index {task_index} is not in meta/tasks; the dataset is inconsistent")
        return CalibFrame(
            image=image,
            task=self.tasks[task_index],
            episode=episode,
            index=frame_index,
            state=_vector(table.get("observation.state"), row),
            action=_vector(table.get("action"), row),
        )

    # -- internals ---------------------------------------------------------------------------

    def _table(self, file_no: int) -> dict:
        """Columns of one data file, kept while consecutive samples come from it."""
        if self._cache_file != file_no:
            import pyarrow.parquet as pq

            path = self._files[file_no]
            names = pq.read_schema(path).names
            cols = [c for c in ("observation.state", "action") if c in names]
            if self.camera_kind == "image":
                if self.camera not in names:
                    raise CalibDataError(f"{path}: image column {self.camera!r} missing; pick another --camera")
                cols.append(self.camera)
            self._cache_table = pq.read_table(path, columns=cols).to_pydict()
            self._cache_file = file_no
        assert self._cache_table is not None
        return self._cache_table

    def _video_frame(self, episode_id: int, timestamp: float) -> np.ndarray:
        path, start = self._video_location(episode_id)
        return decode_video_frame(path, start + timestamp, self.fps)

    def _video_location(self, episode_id: int) -> tuple[Path, float]:
        if episode_id in self._video_starts:  # v3: several episodes share one mp4
            chunk, file, start = self._video_starts[episode_id]
            template = self.info.get("video_path") or _V3_VIDEO
            rel = template.format(video_key=self.camera, chunk_index=chunk, file_index=file)
            return self.root / rel, start
        chunk = episode_id // int(self.info.get("chunks_size", 1000) or 1000)
        template = self.info.get("video_path") or _V2_VIDEO
        try:
            rel = template.format(episode_chunk=chunk, video_key=self.camera, episode_index=episode_id)
        except KeyError as exc:
            raise CalibDataError(
                f"{self.root}/meta/info.json: video_path uses {exc} but meta/episodes is missing; "
                "the dataset is incomplete"
            ) from None
        return self.root / rel, 0.0


def decode_video_frame(path: Path, seconds: float, fps: float) -> np.ndarray:
    """The frame of an mp4 shown at `seconds` (nearest presentation time), as uint8 RGB."""
    try:
        import av
    except ImportError as exc:
        if missing_dependency(exc) != "av":
            raise
        raise CalibDataError(
            f"{path}: camera frames are mp4 video and PyAV is not installed; `pip install av` "
            "(part of 'vla-runtime[calib]') or pick an image camera with --camera"
        ) from None
    if not path.is_file():
        raise CalibDataError(f"{path}: video file missing; the dataset download is incomplete")
    half_frame = 0.5 / fps if fps > 0 else 1e-3  # seconds: tolerance when matching timestamps
    best: tuple[float, np.ndarray] | None = None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        base = float(stream.time_base)
        container.seek(max(0, int((seconds - 1.0) / base)), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            t = float(frame.pts * base) if frame.pts is not None else 0.0
            if best is None or abs(t - seconds) < best[0]:
                best = (abs(t - seconds), frame.to_ndarray(format="rgb24"))
            if t > seconds + half_frame:
                break
    if best is None or best[0] > max(2 * half_frame, 0.05):
        raise CalibDataError(f"{path}: no frame near t={seconds:.3f}s; the video is shorter than its episode")
    return as_rgb_uint8(best[1], str(path))


# ---------------------------------------------------------------------------------------------
# Metadata helpers.
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CalibDataError(f"{path}: missing; a LeRobot dataset needs meta/info.json")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CalibDataError(f"{path}: not valid JSON (line {exc.lineno}); re-download the dataset") from None
    if not isinstance(doc, dict):
        raise CalibDataError(f"{path}: expected a JSON object")
    return doc


def _pick_camera(root: Path, features: dict, camera: str | None) -> tuple[str, str]:
    cameras = {
        k: v.get("dtype") for k, v in features.items() if isinstance(v, dict) and v.get("dtype") in ("image", "video")
    }
    if not cameras:
        raise CalibDataError(f"{root}/meta/info.json: no image or video feature; the dataset has no camera")
    if camera is not None:
        if camera not in cameras:
            raise CalibDataError(f"camera {camera!r} is not in {root}; choose one of {sorted(cameras)} with --camera")
        return camera, cameras[camera]
    images = sorted(k for k, kind in cameras.items() if kind == "image")
    chosen = images[0] if images else sorted(cameras)[0]  # stored images need no decoder
    if len(cameras) > 1:
        logger.info("dataset has cameras %s; using %s (choose with --camera)", sorted(cameras), chosen)
    return chosen, cameras[chosen]


def _read_tasks(meta: Path) -> dict[int, str]:
    """task_index -> instruction, from tasks.jsonl (v2) or tasks.parquet (v3)."""
    jsonl, parquet = meta / "tasks.jsonl", meta / "tasks.parquet"
    tasks: dict[int, str] = {}
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                tasks[int(row["task_index"])] = str(row["task"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise CalibDataError(f"{jsonl}:{n}: expected {{\"task_index\": int, \"task\": str}}") from None
    elif parquet.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(parquet).to_pydict()
        names = table.get("task") or table.get("__index_level_0__")
        if names is None or "task_index" not in table:
            raise CalibDataError(f"{parquet}: expected columns task_index and task (or a task index)")
        tasks = {int(i): str(t) for i, t in zip(table["task_index"], names, strict=True)}
    else:
        raise CalibDataError(f"{meta}: neither tasks.jsonl nor tasks.parquet; the dataset has no instructions")
    if not tasks:
        raise CalibDataError(f"{meta}: the task list is empty")
    return tasks


def _video_starts(root: Path, camera: str) -> dict[int, tuple[int, int, float]]:
    """v3 only: episode -> (video chunk, video file, start seconds) from meta/episodes."""
    files = sorted((root / "meta" / "episodes").rglob("*.parquet"))
    if not files:
        return {}
    import pyarrow.parquet as pq

    keys = (f"videos/{camera}/chunk_index", f"videos/{camera}/file_index", f"videos/{camera}/from_timestamp")
    out: dict[int, tuple[int, int, float]] = {}
    for path in files:
        table = pq.read_table(path).to_pydict()
        if not all(k in table for k in keys):
            raise CalibDataError(f"{path}: columns {list(keys)} missing; cannot locate {camera} video frames")
        for ep, c, f, t in zip(table["episode_index"], *(table[k] for k in keys), strict=True):
            out[int(ep)] = (int(c), int(f), float(t))
    return out


def _image_cell(cell, root: Path, where: str) -> np.ndarray:
    """An image column cell: {"bytes": ..., "path": ...} (HF datasets' Image feature) or raw bytes."""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return decode_image_bytes(cell["bytes"], where)
        if cell.get("path"):
            path = Path(cell["path"])
            path = path if path.is_absolute() else root / path
            if not path.is_file():
                raise CalibDataError(f"{where}: image file {path} missing")
            return decode_image_bytes(path.read_bytes(), str(path))
    if isinstance(cell, (bytes, bytearray)):
        return decode_image_bytes(bytes(cell), where)
    raise CalibDataError(f"{where}: image cell is {type(cell).__name__}; expected {{\"bytes\": png}}")


def _vector(column, row: int) -> np.ndarray | None:
    if column is None or column[row] is None:
        return None
    return np.asarray(column[row], dtype=np.float32).reshape(-1)
