"""Recorded episodes in the layout the calibration readers expect."""

import json

import numpy as np
import pytest
from vla_runtime.runtime.recorder import EpisodeRecorder, next_episode_dir


def test_episode_layout_and_numbering(tmp_path):
    for episode in range(2):
        rec = EpisodeRecorder(tmp_path, "pick up the red block", 10.0, "tiny-parallel", "sim")
        for t in range(5):
            image = np.full((8, 12, 3), t, np.uint8)
            rec.append(image, np.arange(7) + t, np.linspace(0, 1, 7) * t)
        assert len(rec) == 5
        path = rec.close()
        assert path.name == f"episode_{episode:06d}"
    ep = tmp_path / "episode_000001"
    frames, states, actions = (np.load(ep / f"{n}.npy") for n in ("frames", "states", "actions"))
    assert frames.shape == (5, 8, 12, 3) and frames.dtype == np.uint8 and frames[3].max() == 3
    assert states.shape == (5, 7) and states.dtype == np.float32
    assert actions.shape == (5, 7) and actions.dtype == np.float32
    meta = json.loads((ep / "meta.json").read_text())
    assert meta == {"task": "pick up the red block", "rate_hz": 10.0, "bundle": "tiny-parallel",
                    "robot": "sim", "steps": 5}
    assert next_episode_dir(tmp_path).name == "episode_000002"


def test_empty_episodes_write_nothing_and_bad_inputs_are_refused(tmp_path):
    assert EpisodeRecorder(tmp_path / "r", "t", 10.0, "b", "sim").close() is None
    assert not (tmp_path / "r").exists()
    rec = EpisodeRecorder(tmp_path, "t", 10.0, "b", "sim")
    rec.append(np.zeros((4, 4, 3), np.uint8), np.zeros(7), np.zeros(7))
    with pytest.raises(ValueError, match="frame shape changed"):
        rec.append(np.zeros((5, 4, 3), np.uint8), np.zeros(7), np.zeros(7))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        EpisodeRecorder(tmp_path / "file", "t", 10.0, "b", "sim")
