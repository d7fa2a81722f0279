"""Write flight recordings as a LeRobot v3.0 dataset, so robot data can go to fine-tuning.

Layout written (LeRobotDataset v3.0, images stored inside the parquet files)::

    OUT/meta/info.json                              codebase_version "v3.0", fps, features, path templates
    OUT/meta/stats.json                             per feature min/max/mean/std/count and q01..q99
    OUT/meta/tasks.parquet                          task (the pandas index) -> task_index
    OUT/meta/episodes/chunk-000/file-000.parquet    one row per episode: length, tasks, data file, row range
    OUT/data/chunk-000/file-000.parquet             one row per frame: observation.images.<camera>
                                                    {bytes, path}, observation.state, action, timestamp,
                                                    frame_index, episode_index, index, task_index

`action` is what the robot was sent (in the bundle's action space), `observation.state` the
measured joints then the gripper. JPEG frames are copied as recorded; raw frames become PNG.
Ticks whose frame was dropped while recording are left out, and timestamps are
frame_index / fps, as LeRobot expects of evenly spaced frames. Written with pyarrow only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
ROWS_PER_GROUP = 200  # frames per parquet row group: bounds memory for long raw-image episodes
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_STATS_FRAMES = 20  # frames per episode sampled for the image statistics, one every IMAGE_STATS_EVERY
IMAGE_STATS_EVERY = 5
IMAGE_STATS_STRIDE = 16  # every 16th pixel of a sampled frame: ~19k pixels of a 640x480 frame


class DatasetWriteError(ValueError):
    """The recordings cannot become one dataset; one line naming the file and the fix."""


@dataclass
class DatasetSummary:
    root: Path
    episodes: int
    frames: int
    skipped: int  # ticks left out because their frame was dropped while recording

    def line(self) -> str:
        extra = f", {self.skipped} ticks without a frame left out" if self.skipped else ""
        return (f"dataset: {self.root} (LeRobot {CODEBASE_VERSION}, {self.episodes} episodes, "
                f"{self.frames} frames{extra})")


def write_dataset(recordings: list, out: str | Path, camera: str | None = None) -> DatasetSummary:
    """Recordings (runtime.recording.Recording, one episode each) -> a LeRobot v3.0 dataset at `out`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DatasetWriteError(f"{out}: exists and is not empty; choose a new --out folder")
    first = recordings[0].run
    camera = camera or first.cameras[0]
    for rec in recordings:
        _check_compatible(rec, first, camera)
    image_key = f"observation.images.{camera}"
    state_dim, action_dim = len(first.joint_names) + 1, len(first.action_names)
    schema = pa.schema([
        (image_key, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("observation.state", pa.list_(pa.float32(), state_dim)),
        ("action", pa.list_(pa.float32(), action_dim)),
        ("timestamp", pa.float32()), ("frame_index", pa.int64()), ("episode_index", pa.int64()),
        ("index", pa.int64()), ("task_index", pa.int64()),
    ])
    tasks: dict[str, int] = {}
    episodes, states, actions, image_samples = [], [], [], []
    shape, index, skipped = None, 0, 0
    (out / "data" / "chunk-000").mkdir(parents=True)
    fps = first.rate_hz
    with pq.ParquetWriter(out / DATA_PATH.format(chunk_index=0, file_index=0), schema) as writer:
        for ep, rec in enumerate(recordings):
            task_index = tasks.setdefault(rec.run.task, len(tasks))
            rows: dict[str, list] = {name: [] for name in schema.names}
            ep_states, ep_actions, start = [], [], index
            for tick in rec.ticks(images=True):
                if camera not in tick.images:
                    skipped += 1
                    continue
                cell, image = _image_cell(tick.images[camera])
                if shape is None:
                    shape = image.shape if image is not None else tick.images[camera].decode().shape
                n = index - start
                if n % IMAGE_STATS_EVERY == 0 and n < IMAGE_STATS_EVERY * IMAGE_STATS_FRAMES:
                    pixels = image if image is not None else tick.images[camera].decode()
                    image_samples.append(pixels.reshape(-1, 3)[::IMAGE_STATS_STRIDE])  # [P, 3] uint8
                ep_states.append(tick.state.astype(np.float32))
                ep_actions.append(tick.sent.astype(np.float32))
                for key, value in ((image_key, cell), ("observation.state", ep_states[-1].tolist()),
                                   ("action", ep_actions[-1].tolist()), ("timestamp", n / fps),
                                   ("frame_index", n), ("episode_index", ep), ("index", index),
                                   ("task_index", task_index)):
                    rows[key].append(value)
                index += 1
                if len(rows["index"]) >= ROWS_PER_GROUP:
                    writer.write_table(pa.Table.from_pydict(rows, schema))
                    rows = {name: [] for name in schema.names}
            if rows["index"]:
                writer.write_table(pa.Table.from_pydict(rows, schema))
            if index == start:
                raise DatasetWriteError(f"{rec.path}: no tick with a {camera!r} frame; nothing to export")
            states.append(np.stack(ep_states))
            actions.append(np.stack(ep_actions))
            episodes.append({"episode_index": ep, "tasks": [rec.run.task], "length": index - start,
                             "from": start, "to": index, "stats": {"observation.state": _stats(states[-1]),
                                                                   "action": _stats(actions[-1])}})
    features = _features(first, image_key, shape, state_dim, action_dim)
    _write_meta(out, first, features, tasks, episodes, fps, index)
    stats = {"observation.state": _stats(np.concatenate(states)), "action": _stats(np.concatenate(actions)),
             image_key: _image_stats(image_samples)}
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return DatasetSummary(out, len(episodes), index, skipped)


def _check_compatible(rec, first, camera: str) -> None:
    run = rec.run
    for field in ("joint_names", "action_names", "rate_hz"):
        if getattr(run, field) != getattr(first, field):
            raise DatasetWriteError(f"{rec.path}: {field} {getattr(run, field)} differs from the first recording's "
                                    f"{getattr(first, field)}; export recordings of one robot and bundle together")
    if camera not in run.cameras:
        raise DatasetWriteError(f"{rec.path}: no camera {camera!r}; it recorded {list(run.cameras)} (--camera)")


def _image_cell(image) -> tuple[dict, np.ndarray | None]:
    """A frame as the dataset stores it: the recorded JPEG as is, raw frames as PNG."""
    encoded = image.encoded()
    if encoded is not None:
        return {"bytes": encoded[1], "path": None}, None
    import cv2

    pixels = image.decode()
    ok, buf = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DatasetWriteError(f"PNG encoding failed for a {pixels.shape} frame")
    return {"bytes": buf.tobytes(), "path": None}, pixels


def _features(run, image_key: str, shape, state_dim: int, action_dim: int) -> dict:
    scalar = {"shape": [1], "names": None}
    return {
        image_key: {"dtype": "image", "shape": list(shape), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": [*run.joint_names, "gripper"]},
        "action": {"dtype": "float32", "shape": [action_dim], "names": list(run.action_names)},
        "timestamp": {"dtype": "float32", **scalar}, "frame_index": {"dtype": "int64", **scalar},
        "episode_index": {"dtype": "int64", **scalar}, "index": {"dtype": "int64", **scalar},
        "task_index": {"dtype": "int64", **scalar},
    }


def _write_meta(out: Path, run, features: dict, tasks: dict[str, int], episodes: list[dict], fps: float,
                frames: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = out / "meta"
    (meta / "episodes" / "chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": run.robot, "total_episodes": len(episodes),
        "total_frames": frames, "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500, "fps": int(fps) if float(fps).is_integer() else fps,
        "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": None,
        "features": features,
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4) + "\n")
    # tasks.parquet: LeRobot reads it with pandas and expects the task strings as the index
    names = sorted(tasks, key=tasks.get)
    table = pa.table({"task": names, "task_index": pa.array([tasks[t] for t in names], pa.int64())})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "columns": [
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None}], "creator": {"library": "pyarrow", "version": pa.__version__}}
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}),
                   meta / "tasks.parquet")
    columns: dict[str, list] = {
        "episode_index": [e["episode_index"] for e in episodes], "tasks": [e["tasks"] for e in episodes],
        "length": [e["length"] for e in episodes], "data/chunk_index": [0] * len(episodes),
        "data/file_index": [0] * len(episodes), "dataset_from_index": [e["from"] for e in episodes],
        "dataset_to_index": [e["to"] for e in episodes], "meta/episodes/chunk_index": [0] * len(episodes),
        "meta/episodes/file_index": [0] * len(episodes),
    }
    for feature in ("observation.state", "action"):
        for stat in episodes[0]["stats"][feature]:
            columns[f"stats/{feature}/{stat}"] = [e["stats"][feature][stat] for e in episodes]
    pq.write_table(pa.table(columns), out / EPISODES_PATH)


def _stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot's per-feature statistics of [N, D] values."""
    v = values.astype(np.float64)
    out = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0)}
    out.update({f"q{round(q * 100):02d}": np.quantile(v, q, axis=0) for q in QUANTILES})
    return {**{k: x.tolist() for k, x in out.items()}, "count": [int(len(v))]}


def _image_stats(samples: list[np.ndarray]) -> dict[str, list]:
    """Per-channel statistics of sampled pixels in [0, 1], shaped [3, 1, 1] as LeRobot stores them."""
    pixels = np.concatenate(samples).astype(np.float64) / 255.0  # [P, 3]
    stats = _stats(pixels)
    count = [len(samples)]
    return {k: [[[c]] for c in v] if k != "count" else count for k, v in stats.items()}
