"""Recorded episodes, image folders and the sample plan that spreads frames across them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vla_runtime.calibration.sampling import plan_samples
from vla_runtime.runtime.episodes.readers import CalibDataError, ImageFolder, RecordedEpisodes, open_source


def write_recording(root, lengths, task="stack the blocks", size=(16, 20)):
    """The layout `vla-runtime --record DIR` writes."""
    for ep, n in enumerate(lengths):
        d = root / f"episode_{ep:06d}"
        d.mkdir(parents=True)
        frames = np.zeros((n, *size, 3), np.uint8)
        frames[:, :, :, 0] = np.arange(n, dtype=np.uint8)[:, None, None]  # red = frame index
        frames[:, :, :, 1] = ep
        np.save(d / "frames.npy", frames)
        np.save(d / "states.npy", np.arange(n * 2, dtype=np.float32).reshape(n, 2))
        np.save(d / "actions.npy", np.full((n, 7), ep, np.float32))
        (d / "meta.json").write_text(json.dumps({"task": f"{task} {ep}", "rate_hz": 10.0, "bundle": "b",
                                                 "robot": "sim", "steps": n}))
    return root


def test_recorded_episodes(tmp_path):
    src = open_source(write_recording(tmp_path / "rec", [5, 3]))
    assert isinstance(src, RecordedEpisodes)
    assert src.episode_lengths() == [5, 3]
    f = src.frame(1, 2)
    assert f.image.shape == (16, 20, 3) and f.image[0, 0, 0] == 2 and f.image[0, 0, 1] == 1
    assert f.task == "stack the blocks 1"
    np.testing.assert_array_equal(f.state, [4, 5])
    assert f.action.shape == (7,) and f.action[0] == 1


def test_recording_without_task_names_the_file(tmp_path):
    root = write_recording(tmp_path / "rec", [2])
    (root / "episode_000000" / "meta.json").write_text(json.dumps({"rate_hz": 10}))
    with pytest.raises(CalibDataError, match=r"meta.json: no \"task\" string"):
        RecordedEpisodes(root)


def test_recording_with_wrong_frame_layout(tmp_path):
    d = tmp_path / "rec" / "episode_000000"
    d.mkdir(parents=True)
    np.save(d / "frames.npy", np.zeros((2, 3, 8, 8), np.float32))
    (d / "meta.json").write_text(json.dumps({"task": "x"}))
    with pytest.raises(CalibDataError, match=r"expected uint8 \[T, H, W, 3\]"):
        open_source(tmp_path / "rec")


def _write_images(root, n):
    from PIL import Image

    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((8, 10, 3), 10 * i, np.uint8)).save(root / f"img_{i}.png")
    return root


def test_image_folder_with_instruction_lines(tmp_path):
    root = _write_images(tmp_path / "imgs", 3)
    (tmp_path / "tasks.txt").write_text("open the drawer\n\nclose the drawer\n")
    src = open_source(root, instructions=tmp_path / "tasks.txt")
    assert isinstance(src, ImageFolder) and src.episode_lengths() == [1, 1, 1]
    assert [src.frame(i, 0).task for i in range(3)] == ["open the drawer", "close the drawer", "open the drawer"]
    assert src.frame(2, 0).image[0, 0, 0] == 20


def test_image_folder_json_mapping_must_cover_every_image(tmp_path):
    root = _write_images(tmp_path / "imgs", 2)
    (tmp_path / "tasks.json").write_text(json.dumps({"img_0.png": "wave"}))
    with pytest.raises(CalibDataError, match="no instruction for img_1.png"):
        ImageFolder(root, tmp_path / "tasks.json")


def test_image_folder_needs_instructions(tmp_path):
    root = _write_images(tmp_path / "imgs", 1)
    with pytest.raises(CalibDataError, match="needs --instructions"):
        open_source(root)


def test_unknown_folder_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(CalibDataError, match="neither recorded episodes"):
        open_source(tmp_path / "x")


def test_plan_spreads_over_episodes_and_holds_out_whole_episodes():
    lengths = [100, 50, 10, 80, 60, 40]
    plan = plan_samples(lengths, calib_frames=24, held_out_frames=8, seed=3)
    calib_eps = {e for e, _ in plan.calibration}
    held_eps = {e for e, _ in plan.held_out}
    assert held_eps == set(plan.held_out_episodes) and not (calib_eps & held_eps)
    assert calib_eps | held_eps == set(range(len(lengths)))  # every episode is used by one side
    assert len(plan.calibration) == 24 and len(plan.held_out) == 8
    for e in calib_eps:  # frames reach across each episode's duration, not just its start
        frames = sorted(f for ep, f in plan.calibration if ep == e)
        if len(frames) >= 3:
            assert frames[-1] - frames[0] >= lengths[e] // 2
    assert plan == plan_samples(lengths, 24, 8, seed=3)  # seeded: reproducible


def test_plan_single_episode_uses_the_tail_for_the_gate():
    plan = plan_samples([40], calib_frames=6, held_out_frames=2)
    assert max(f for _, f in plan.calibration) < min(f for _, f in plan.held_out)
    assert plan.held_out_episodes == ()


def test_plan_with_more_episodes_than_frames_wanted():
    plan = plan_samples([5] * 20, calib_frames=4, held_out_frames=2)
    assert len(plan.calibration) == 4 and len({e for e, _ in plan.calibration}) == 4


def test_plan_refuses_a_single_frame():
    with pytest.raises(CalibDataError, match="one frame cannot be both"):
        plan_samples([1], 1, 1)
