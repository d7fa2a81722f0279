"""Recordings as data: calibration reads them (crash-cut files too), and they export as a LeRobot v3 dataset
that our own LeRobot reader loads back frame for frame."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("mcap", reason="recordings need the record extra (pip install 'vla-runtime[record]')")
pq = pytest.importorskip("pyarrow.parquet", reason="the dataset writer needs pyarrow (vla-runtime[calib])")

from vla_runtime.export.cli import main as export_main  # noqa: E402
from vla_runtime.runtime import recording_format as fmt  # noqa: E402
from vla_runtime.runtime.episodes.lerobot import LeRobotDataset  # noqa: E402
from vla_runtime.runtime.episodes.readers import open_source  # noqa: E402
from vla_runtime.runtime.episodes.recordings import RecordedMcap  # noqa: E402
from vla_runtime.runtime.recorder import FlightRecorder, RecorderConfig, TickRecord  # noqa: E402
from vla_runtime.runtime.recording import Recording  # noqa: E402

NAMES = ("q1", "q2", "gripper")


def record(root, task, ticks, raw, seed, drop_frame_at=None):
    run = fmt.RunInfo(task=task, rate_hz=10.0, bundle="b", bundle_id="x", robot="arm2", robot_file="arm2.toml",
                      cameras=("wrist",), joint_names=("j1", "j2"), action_kind="joint_position",
                      action_names=NAMES, action_units=("rad", "rad", "open"))
    # a queue that holds the whole burst (no drops), and many small chunks
    rec = FlightRecorder(root, run, RecorderConfig(raw_images=raw, chunk_bytes=4096, queue_ticks=64, image_watermark=1))
    rec.open()
    rng = np.random.default_rng(seed)
    for k in range(ticks):
        image = np.zeros((24, 32, 3), np.uint8)
        image[:, :, 0], image[:, :, 1] = 10 * k % 256, seed * 40  # red = tick, green = episode
        image += rng.integers(0, 3, image.shape, dtype=np.uint8)
        state = np.array([0.01 * k, -0.02 * k, 0.5 + seed])
        images = {} if k == drop_frame_at else {"wrist": image}
        rec.record(TickRecord(k, 0.1 * k, images, state[:2], state[2], state + 0.1, state + 0.05, state[:2] + 0.05,
                              state[2], state + 0.05))
    return rec.close()


@pytest.fixture
def recordings(tmp_path):
    root = tmp_path / "recordings"
    record(root, "stack the blocks", 9, raw=True, seed=1)
    record(root, "open the drawer", 6, raw=True, seed=2, drop_frame_at=2)
    return root


def test_lerobot_v3_export_round_trips_through_our_reader(recordings, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert export_main(["dataset", str(recordings), "--out", str(out)]) == 0
    assert "2 episodes, 14 frames, 1 ticks without a frame left out" in capsys.readouterr().out
    for rel in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet"):
        assert (out / rel).is_file(), rel
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_frames"] == 14
    assert info["features"]["observation.images.wrist"] == {"dtype": "image", "shape": [24, 32, 3],
                                                            "names": ["height", "width", "channels"]}
    assert info["features"]["action"]["names"] == list(NAMES)
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.asarray(stats["observation.images.wrist"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [14] and len(stats["action"]["q99"]) == 3
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert episodes["length"] == [9, 5] and episodes["dataset_from_index"] == [0, 9]
    assert episodes["tasks"] == [["stack the blocks"], ["open the drawer"]]

    ds = LeRobotDataset(out)  # the project's own v3 reader
    assert ds.episode_lengths() == [9, 5] and ds.camera == "observation.images.wrist"
    ticks = [t for t in Recording(sorted(recordings.glob("*.mcap"))[1]).ticks() if t.images]
    for i in (0, 4):
        frame = ds.frame(1, i)
        assert frame.task == "open the drawer"
        np.testing.assert_array_equal(frame.image, ticks[i].images["wrist"].decode())  # raw -> PNG is lossless
        np.testing.assert_allclose(frame.action, ticks[i].sent, rtol=1e-6)
        np.testing.assert_allclose(frame.state, ticks[i].state, rtol=1e-6)


def test_lerobot_itself_loads_the_export(recordings, tmp_path):
    lerobot = pytest.importorskip(
        "lerobot.datasets.lerobot_dataset",
        reason="LeRobot is not installable beside vla-runtime[dev] (it pins torch<2.12 and Python>=3.12); "
               "the v3 layout is checked through our own reader instead")
    out = tmp_path / "dataset"
    assert export_main(["dataset", str(recordings), "--out", str(out)]) == 0
    ds = lerobot.LeRobotDataset("local/recordings", root=out)
    assert ds.num_episodes == 2 and ds.num_frames == 14


def test_export_refuses_mixed_robots_and_a_used_folder(recordings, tmp_path, capsys):
    other = tmp_path / "other"
    run = fmt.RunInfo(task="t", rate_hz=10.0, bundle="b", bundle_id="x", robot="r", robot_file="r.toml",
                      cameras=("wrist",), joint_names=("j1",), action_kind="joint_position", action_names=("a",))
    rec = FlightRecorder(other, run)
    rec.open()
    rec.record(TickRecord(0, 0.0, {"wrist": np.zeros((8, 8, 3), np.uint8)}, np.zeros(1), 0.0, np.zeros(1),
                          np.zeros(1), np.zeros(1), 0.0, np.zeros(1)))
    rec.close()
    assert export_main(["dataset", str(recordings), str(other), "--out", str(tmp_path / "d")]) == 2
    assert "differs from the first recording" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    assert export_main(["dataset", str(recordings), "--out", str(tmp_path / "used")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_calibration_reads_recordings_and_a_crash_cut_file(tmp_path):
    summary = record(tmp_path / "full", "stack the blocks", 40, raw=False, seed=3)
    src = open_source(tmp_path / "full")
    assert isinstance(src, RecordedMcap) and src.episode_lengths() == [40]
    f = src.frame(0, 7)
    assert f.task == "stack the blocks" and f.image.shape == (24, 32, 3) and abs(int(f.image[0, 0, 0]) - 70) < 8
    np.testing.assert_allclose(f.state, [0.07, -0.14, 3.5], rtol=1e-5)

    data = summary.path.read_bytes()
    previous = 0
    for fraction in (0.35, 0.6, 0.85, 0.97):  # cuts inside chunks, between them and inside the summary
        cut = tmp_path / f"cut{fraction}"
        cut.mkdir()
        (cut / "episode_000000.mcap").write_bytes(data[: int(len(data) * fraction)])
        rec = Recording(cut / "episode_000000.mcap")
        assert not rec.complete and rec.run.task == "stack the blocks"
        src = open_source(cut)
        n = src.episode_lengths()[0]
        assert previous <= n <= 40 and src.frame(0, n - 1).image.shape == (24, 32, 3)
        previous = n
    assert n > 0
    shutil.copy(summary.path, cut / "episode_000001.mcap")  # a folder mixing cut and complete files
    assert open_source(cut).episode_lengths() == [n, 40]
