"""`vla-runtime replay`: a recorded FP32 sim episode through its own bundle and through an INT8 build."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mcap", reason="recordings need the record extra (pip install 'vla-runtime[record]')")
import vla_runtime.runtime.sim  # noqa: E402, F401 - picks MuJoCo's offscreen GL before mujoco is imported

pytest.importorskip("mujoco", reason="needs MuJoCo (pip install vla-runtime[sim])")

from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle  # noqa: E402
from vla_runtime.runtime.cli import main  # noqa: E402
from vla_runtime.runtime.episodes.readers import open_source  # noqa: E402
from vla_runtime.runtime.episodes.recordings import RecordedMcap  # noqa: E402
from vla_runtime.runtime.policy import load_policy  # noqa: E402
from vla_runtime.runtime.recording import Recording  # noqa: E402
from vla_runtime.runtime.replay import replay  # noqa: E402

STEPS = 12


@pytest.fixture(scope="module")
def fp32_recording(tiny_bundle, tmp_path_factory):
    """head -> a sim episode of that head's tiny bundle, frames recorded losslessly (once per head)."""
    done = {}

    def make(head):
        if head not in done:
            root = tmp_path_factory.mktemp(f"recordings-{head}")
            rc = main(["--bundle", str(tiny_bundle(head)), "--steps", str(STEPS), "--hz", "20",
                       "--max-misses", "100000", "--record", str(root), "--record-raw"])
            assert rc == 0
            done[head] = root / "episode_000000.mcap"
        return done[head]

    return make


def test_replay_through_the_recorded_bundle_reproduces_its_actions(tiny_bundle, fp32_recording):
    with load_policy(tiny_bundle("parallel")) as policy:
        result = replay(Recording(fp32_recording("parallel")), policy)
    assert result.inferences >= 2 and len(result.t) + result.skipped == STEPS
    assert result.recorded.shape == result.replayed.shape == (len(result.t), 7)
    assert np.abs(result.diff).max() < 1e-4, result.table()  # same bundle, same pixels, same order


def test_calibration_reads_the_recording_and_int8_replay_reports_differences(
        tiny_bundle, fp32_recording, tmp_path, capsys):
    """The flow head: continuous actions, so INT8 moves every one of them a little (binned heads may not)."""
    recording = fp32_recording("flow")
    source = open_source(recording.parent)
    assert isinstance(source, RecordedMcap) and source.episode_lengths() == [STEPS]
    frame = source.frame(0, 3)
    assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.task == "pick up the red block"
    assert frame.state.shape == (7,) and frame.action.shape == (7,)

    int8 = tmp_path / "int8"
    quantize_bundle(tiny_bundle("flow"), source, int8, QuantizeOptions(calib_frames=8, gate_frames=4,
                                                                            progress=False))
    plot, stats = tmp_path / "replay.png", tmp_path / "replay.json"
    rc = main(["replay", str(recording), "--bundle", str(int8), "--allow-failed-gate",
               "--plot", str(plot), "--json", str(stats)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "mean |diff|" in out and "compared" in out
    doc = json.loads(stats.read_text())
    per_dim = doc["per_dimension"]
    assert set(per_dim) == {"dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"}
    assert doc["units"]["dx"] == "m"
    assert sum(d["max_abs"] > 0 for d in per_dim.values()) >= 5  # INT8 moves (nearly) every action dimension
    assert all(np.isfinite(d["mean_abs"]) and d["mean_abs"] <= d["max_abs"] for d in per_dim.values())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "plot: skipped" in capsys.readouterr().err
    else:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_replay_refuses_a_missing_recording_in_one_line(tiny_bundle, tmp_path, capsys):
    rc = main(["replay", str(tmp_path / "nope.mcap"), "--bundle", str(tiny_bundle("parallel"))])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no such recording" in err
