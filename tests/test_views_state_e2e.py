"""Two cameras and the measured state end to end, on our own heads: export, parity, the loop on
the sim, a two-view recording replayed through the bundle, and the refusals before any port opens.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import numpy as np
import pytest

pytest.importorskip("torch", reason="building the bundles needs torch (pip install vla-runtime[export])")
pytest.importorskip("mujoco", reason="needs MuJoCo (pip install vla-runtime[sim])")

import vla_runtime.runtime.sim  # noqa: E402,F401 - picks MuJoCo's offscreen GL before mujoco is imported
from vla_runtime.runtime.cli import main  # noqa: E402
from vla_runtime.runtime.manifest import load_manifest  # noqa: E402
from vla_runtime.runtime.policy import load_policy  # noqa: E402
from vla_runtime.runtime.types import Frame, RobotState  # noqa: E402

VIEWS = ("front", "wrist")
SIM_STATE = ("base_yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "wrist_yaw", "gripper")
LENIENT = ["--max-misses", "100000", "--backend", "cpu"]  # a busy test machine may overrun


@pytest.fixture(scope="module")
def two_view_bundle(tmp_path_factory):
    """Factory: two_view_bundle(head) -> a tiny bundle reading front + wrist and the sim's state."""
    from vla_runtime.export.build import build_from_source
    from vla_runtime.export.checkpoint import from_config
    from vla_runtime.export.presets import preset_config
    from vla_runtime.export.state_stats import robot_state_stats

    built = {}

    def make(head: str):
        if head not in built:
            state = robot_state_stats("sim")
            cfg = dataclasses.replace(preset_config("tiny", head), views=VIEWS, state_dim=state.dim)
            out = tmp_path_factory.mktemp(f"two-view-{head}") / "bundle"
            built[head] = build_from_source(from_config(cfg, state_norm=state), out, progress=False)
        return built[head]

    return make


def _robot_file(tmp_path, drop: str = "", rename: tuple[str, str] | None = None):
    """The built-in sim robot file without one table (e.g. '[cameras.wrist]') or with a joint renamed."""
    text = resources.files("vla_runtime.runtime").joinpath("robots", "sim.toml").read_text()
    if drop:
        start = text.index(drop)
        end = text.find("\n[", start + 1)
        text = text[:start] + (text[end + 1 :] if end >= 0 else "")
    if rename:
        text = text.replace(f'name = "{rename[0]}"', f'name = "{rename[1]}"')
    path = tmp_path / "robot.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("head", ["flow", "parallel"])
def test_two_views_and_state_export_with_parity(two_view_bundle, head):
    m = load_manifest(two_view_bundle(head))
    assert m.preprocess.camera_views == VIEWS and m.state.names == SIM_STATE
    assert m.state.normalization.kind == "q01_q99" and m.state.normalization.high[-1] == 1.0
    reader = "velocity" if head == "flow" else "head"
    assert m.graphs[reader].input("state").shape == (1, len(SIM_STATE))
    per_view = m.graphs["vision"].outputs[0].shape[1]
    assert m.graphs["prefill"].input("image_embeds").shape[1] == 2 * per_view  # both views in the prefix
    assert m.parity["passed"] and m.parity["action"]["observations"] == 3


def test_the_chunk_depends_on_each_view_in_order_and_on_the_state(two_view_bundle):
    rng = np.random.default_rng(0)
    front, wrist = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2))
    state = RobotState(np.full(6, 0.3), np.zeros(3), np.zeros(3), 1.0, 0.0)

    def chunk(frames, st=state):
        with load_policy(two_view_bundle("flow"), backend="cpu") as policy:  # fresh: the same flow noise
            return policy.infer(frames, "pick up the red block", st).actions

    base = chunk({"front": Frame(front, 1.0), "wrist": Frame(wrist, 2.0)})
    np.testing.assert_array_equal(base, chunk({"wrist": Frame(wrist, 2.0), "front": Frame(front, 1.0)}))
    assert not np.allclose(base, chunk({"front": Frame(wrist, 1.0), "wrist": Frame(front, 2.0)}))  # order matters
    assert not np.allclose(base, chunk({"front": Frame(front, 1.0), "wrist": Frame(255 - wrist, 2.0)}))
    moved = RobotState(np.full(6, -0.3), np.zeros(3), np.zeros(3), 0.0, 0.0)
    assert not np.allclose(base, chunk({"front": Frame(front, 1.0), "wrist": Frame(wrist, 2.0)}, moved))
    with load_policy(two_view_bundle("flow"), backend="cpu") as policy:
        assert policy.infer({"front": Frame(front, 1.0), "wrist": Frame(wrist, 2.0)}, "go", state).t_obs == 1.0
        with pytest.raises(ValueError, match="no frame for camera view 'wrist'"):
            policy.infer({"front": Frame(front, 1.0)}, "go", state)
        with pytest.raises(ValueError, match="reads the robot state"):
            policy.infer({"front": Frame(front, 1.0), "wrist": Frame(wrist, 2.0)}, "go", None)


def test_two_camera_state_run_on_the_sim_records_both_views_and_replays(two_view_bundle, tmp_path, capsys):
    from vla_runtime.runtime.recording import Recording

    bundle = two_view_bundle("flow")
    rc = main(["--bundle", str(bundle), "--steps", "8", "--hz", "20", "--record", str(tmp_path / "rec"),
               "--profile", str(tmp_path / "profile.json"), *LENIENT])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "  preprocess[front]" in out and "  preprocess[wrist]" in out  # per-view cost, indented under infer
    stages = json.loads((tmp_path / "profile.json").read_text())["stages_ms"]
    assert stages["preprocess[wrist]"]["n"] == stages["infer"]["n"]
    recording = Recording(next((tmp_path / "rec").glob("*.mcap")))
    assert recording.run.cameras == VIEWS
    ticks = list(recording.ticks(images=True))
    assert len(ticks) == 8 and all(set(t.images) == set(VIEWS) for t in ticks)
    front, wrist = ticks[0].images["front"].decode(), ticks[0].images["wrist"].decode()
    assert front.shape == wrist.shape == (224, 224, 3) and np.abs(front.astype(int) - wrist).mean() > 10
    assert ticks[0].state.shape == (7,)  # the measured joints + gripper: the state input, recorded
    rc = main(["replay", str(recording.path), "--bundle", str(bundle), "--backend", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "compared 8 ticks" in out, out
    rc = main(["replay", str(recording.path), "--bundle", str(bundle), "--camera", "front"])
    assert rc == 2 and "this bundle reads ['front', 'wrist']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (dict(drop="[cameras.wrist]"), "the bundle needs camera view 'wrist'"),
        (dict(drop="[gripper]"), "reads the gripper opening as its last state value but the robot file has no"),
        (dict(rename=("elbow", "elbow_flex")), "bundle state joint 3 is 'elbow' in rad but the robot's is 'elbow_f"),
    ],
)
def test_a_view_or_state_the_robot_lacks_is_refused_in_one_line(two_view_bundle, tmp_path, capsys, edit, message):
    robot = _robot_file(tmp_path, **edit)
    rc = main(["--bundle", str(two_view_bundle("flow")), "--robot", str(robot), "--steps", "2", *LENIENT])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_inspect_profile_verify_and_eval_read_the_views_and_state(two_view_bundle, capsys):
    from vla_runtime.export.cli import main as export_main

    bundle = str(two_view_bundle("parallel"))
    assert main(["inspect", bundle]) == 0
    out = capsys.readouterr().out
    assert "cameras: front (32 px), wrist (32 px)" in out and "gripper [open], normalisation q01_q99" in out
    assert main(["profile", "--bundle", bundle, "--iterations", "2", "--warmup", "1", "--backend", "cpu"]) == 0
    assert "preprocess[wrist]" in capsys.readouterr().out  # a still frame feeds both views, a resting state
    assert export_main(["verify", bundle]) == 0  # the source is rebuilt with its views and state
    assert "parity: PASSED" in capsys.readouterr().out
    rc = main(["eval", "--bundle", bundle, "--episodes", "1", "--steps", "4", "--backend", "cpu"])
    out = capsys.readouterr().out  # random weights pick nothing up (exit 1); the episode itself ran to its end
    assert rc == 1 and "success: 0/1" in out and "stops: completed 1" in out, out
