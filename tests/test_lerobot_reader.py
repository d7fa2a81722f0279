"""LeRobot v2.x / v3.0 datasets written here in the real on-disk layout, then read back."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from vla_runtime.runtime.episodes.lerobot import LeRobotDataset
from vla_runtime.runtime.episodes.readers import CalibDataError, open_source

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

H, W = 24, 32
TASKS = ["pick up the red block", "push the green cube left"]
FPS = 10


def _colour(ep: int, fr: int) -> tuple[int, int, int]:
    """A frame colour that identifies (episode, frame) even after lossy video coding."""
    return (40 + 60 * ep, 20 + 20 * fr, 200 - 30 * ep)


def _frame(ep: int, fr: int) -> np.ndarray:
    return np.broadcast_to(np.array(_colour(ep, fr), np.uint8), (H, W, 3)).copy()


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _features(camera_kind: str) -> dict:
    return {
        "observation.images.top": {"dtype": camera_kind, "shape": [H, W, 3], "names": ["height", "width", "channel"]},
        "observation.state": {"dtype": "float32", "shape": [3], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1]},
        "frame_index": {"dtype": "int64", "shape": [1]},
        "episode_index": {"dtype": "int64", "shape": [1]},
        "task_index": {"dtype": "int64", "shape": [1]},
    }


def _rows(ep: int, length: int, with_images: bool) -> dict:
    cols = {
        "observation.state": [[ep, fr, 0.5] for fr in range(length)],
        "action": [[0.1 * fr, -ep] for fr in range(length)],
        "timestamp": [fr / FPS for fr in range(length)],
        "frame_index": list(range(length)),
        "episode_index": [ep] * length,
        "task_index": [ep % len(TASKS)] * length,
    }
    if with_images:
        cols["observation.images.top"] = [{"bytes": _png(_frame(ep, fr)), "path": None} for fr in range(length)]
    return cols


def _write_mp4(path: Path, frames: list[np.ndarray]) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.options = {"qscale": "1"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_v2(root: Path, lengths: list[int], camera_kind: str = "image") -> Path:
    (root / "meta").mkdir(parents=True)
    info = {
        "codebase_version": "v2.1", "fps": FPS, "chunks_size": 1000, "total_episodes": len(lengths),
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": _features(camera_kind),
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    lines = [json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS)]
    (root / "meta" / "tasks.jsonl").write_text("".join(lines))
    for ep, n in enumerate(lengths):
        path = root / f"data/chunk-000/episode_{ep:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(_rows(ep, n, camera_kind == "image")), path)
        if camera_kind == "video":
            _write_mp4(root / f"videos/chunk-000/observation.images.top/episode_{ep:06d}.mp4",
                       [_frame(ep, fr) for fr in range(n)])
    return root


def write_v3(root: Path, lengths: list[int]) -> Path:
    """All episodes in one data file and one mp4, located through meta/episodes."""
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v3.0", "fps": FPS, "chunks_size": 1000,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": _features("video"),
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    pq.write_table(pa.table({"task_index": list(range(len(TASKS))), "task": TASKS}), root / "meta" / "tasks.parquet")
    merged: dict[str, list] = {}
    frames: list[np.ndarray] = []
    starts = []
    for ep, n in enumerate(lengths):
        starts.append(len(frames) / FPS)
        for k, v in _rows(ep, n, with_images=False).items():
            merged.setdefault(k, []).extend(v)
        frames.extend(_frame(ep, fr) for fr in range(n))
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(merged), root / "data" / "chunk-000" / "file-000.parquet")
    key = "videos/observation.images.top"
    pq.write_table(pa.table({
        "episode_index": list(range(len(lengths))), "length": lengths,
        f"{key}/chunk_index": [0] * len(lengths), f"{key}/file_index": [0] * len(lengths),
        f"{key}/from_timestamp": starts,
    }), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    _write_mp4(root / "videos/observation.images.top/chunk-000/file-000.mp4", frames)
    return root


def _close(img: np.ndarray, ep: int, fr: int, tol: float = 12.0) -> bool:
    return bool(np.abs(img.reshape(-1, 3).mean(0) - np.array(_colour(ep, fr))).max() < tol)


def test_v2_image_columns(tmp_path):
    ds = open_source(write_v2(tmp_path / "ds", [5, 3]))
    assert isinstance(ds, LeRobotDataset)
    assert ds.episode_lengths() == [5, 3]
    f = ds.frame(1, 2)
    assert f.image.dtype == np.uint8 and f.image.shape == (H, W, 3)
    assert np.array_equal(f.image, _frame(1, 2))  # PNG is lossless
    assert f.task == TASKS[1] and f.index == 2
    np.testing.assert_allclose(f.state, [1, 2, 0.5])
    np.testing.assert_allclose(f.action, [0.2, -1])


def test_v2_video(tmp_path):
    pytest.importorskip("av")
    ds = LeRobotDataset(write_v2(tmp_path / "ds", [6, 4], camera_kind="video"))
    assert ds.camera_kind == "video"
    for ep, fr in [(0, 0), (0, 5), (1, 3)]:
        assert _close(ds.frame(ep, fr).image, ep, fr), (ep, fr)


def test_v3_shared_video_file(tmp_path):
    pytest.importorskip("av")
    ds = open_source(write_v3(tmp_path / "ds", [4, 5]))
    assert ds.episode_lengths() == [4, 5]
    f = ds.frame(1, 1)  # second episode starts 0.4 s into the shared mp4
    assert _close(f.image, 1, 1) and f.task == TASKS[1]


def test_video_without_decoder_is_one_clear_line(tmp_path, monkeypatch):
    ds = LeRobotDataset(write_v2(tmp_path / "ds", [2], camera_kind="video"))
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails as if PyAV were not installed
    with pytest.raises(CalibDataError, match="PyAV is not installed.*pip install av") as err:
        ds.frame(0, 0)
    assert "\n" not in str(err.value)


def test_unknown_camera_names_the_choices(tmp_path):
    root = write_v2(tmp_path / "ds", [2])
    with pytest.raises(CalibDataError, match=r"choose one of \['observation.images.top'\]"):
        LeRobotDataset(root, camera="wrist")


def test_missing_tasks_file(tmp_path):
    root = write_v2(tmp_path / "ds", [2])
    (root / "meta" / "tasks.jsonl").unlink()
    with pytest.raises(CalibDataError, match="neither tasks.jsonl nor tasks.parquet"):
        LeRobotDataset(root)
