"""LeRobot pi0 / pi0.5 exported to bundles, run by the robot-side runtime, against LeRobot itself.

`test_bundle_reproduces_lerobot_chunk` always runs: the shipped tiny checkpoints (written by
LeRobot 0.6.1) are exported with `vla-export build --from-lerobot` and the runtime's policy
(onnxruntime + numpy Euler decoder) is fed LeRobot's recorded inputs and start noise; its chunk
in physical units must match the one LeRobot's select_action path produced.
`test_regenerated_with_lerobot` makes fresh references with LeRobot in its own venv
(`.ci/lerobot-venv`) and repeats the comparison; it skips, saying why, where that venv is absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the exporter needs torch")
pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")

from vla_runtime.export.lerobot_build import build_from_lerobot  # noqa: E402
from vla_runtime.runtime.policy import load_policy  # noqa: E402
from vla_runtime.runtime.types import Frame, RobotState  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "lerobot"
REPO = Path(__file__).resolve().parents[1]
SIM_STATE = ("base_yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "wrist_yaw", "gripper")  # the sim arm
CHUNK_TOLERANCE = 1e-4  # max abs error of the chunk in physical units (float32 graphs vs LeRobot)


def lerobot_chunk_errors(bundle: Path, reference: Path) -> list[float]:
    """Max abs error of the runtime's chunk against LeRobot's, per recorded case."""
    ref = np.load(reference, allow_pickle=False)
    cases = sorted({k.split("/")[0] for k in ref.files})
    errors = []
    with load_policy(bundle, backend="cpu", threads=1) as policy:
        for case in cases:
            frames = {v: Frame(ref[f"{case}/image.{v}"], 0.0) for v in policy.manifest.preprocess.camera_views}
            raw = ref[f"{case}/state"].astype(np.float64)
            state = RobotState(joint_positions=raw[:-1], ee_position=np.zeros(3), ee_orientation=np.zeros(3),
                               gripper=float(raw[-1]), t_read=0.0)
            policy.inject_noise(ref[f"{case}/noise"])
            chunk = policy.infer(frames, str(ref[f"{case}/task"]), state)
            assert chunk.actions.shape == ref[f"{case}/chunk"].shape
            np.testing.assert_allclose(chunk.actions[0], ref[f"{case}/select_action"], atol=CHUNK_TOLERANCE)
            errors.append(float(np.abs(chunk.actions - ref[f"{case}/chunk"]).max()))
    return errors


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot-bundles")
    return {kind: build_from_lerobot(FIXTURES / kind, FIXTURES / "tokenizer.json", root / kind, state_names=SIM_STATE)
            for kind in ("pi0", "pi05")}


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_bundle_reproduces_lerobot_chunk(bundles, kind):
    errors = lerobot_chunk_errors(bundles[kind], FIXTURES / f"{kind}_reference.npz")
    print(f"{kind}: runtime vs LeRobot chunk max abs error {max(errors):.2e}")
    assert max(errors) < CHUNK_TOLERANCE, f"{kind}: chunk max abs error {max(errors):.2e} against LeRobot"


def test_bundle_records_lerobots_conventions(bundles):
    from vla_runtime.runtime.manifest import load_manifest

    pi0, pi05 = load_manifest(bundles["pi0"]), load_manifest(bundles["pi05"])
    assert pi0.preprocess.camera_views == pi05.preprocess.camera_views == ("front", "wrist")
    assert (pi0.decode.flow_steps, pi0.decode.action_pad, pi0.decode.state_pad) == (10, 32, 32)
    assert pi0.decode.time_periods == (0.004, 4.0) and not pi0.decode.state_in_prompt
    assert pi05.decode.state_in_prompt and pi05.decode.state_pad == 0
    assert "state" in pi0.graphs["expert"].input_names and "state" not in pi05.graphs["expert"].input_names
    assert (pi0.state.normalization.kind, pi05.state.normalization.kind) == ("mean_std", "q01_q99")
    assert pi0.parity["passed"] and pi05.parity["passed"]


def _lerobot_python() -> Path:
    """The LeRobot venv's python made by .ci/lerobot-venv, or a skip naming why it is absent."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    python = cache / "vla-runtime" / "lerobot-0.6.1-venv" / "bin" / "python"
    if not (python.parent.parent / ".vla-runtime-complete").exists():
        pytest.skip(f"LeRobot venv not found at {python.parent.parent}; run .ci/lerobot-venv to make it")
    return python


def test_regenerated_with_lerobot(request, tmp_path):
    """LeRobot builds, saves and runs fresh tiny policies; our export of them matches its chunks.

    LeRobot's seeded init is deterministic, so the fresh weights should be the shipped ones: then
    the shipped bundles answer the fresh references; otherwise the fresh folders are exported."""
    python = _lerobot_python()  # skips before any bundle is built
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="checkpoints are safetensors")
    bundles = request.getfixturevalue("bundles")
    out = tmp_path / "fresh"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(python), str(FIXTURES / "make_fixtures.py"), str(out), "--tokenizer", str(FIXTURES / "tokenizer.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for kind in ("pi0", "pi05"):
        fresh = safetensors_numpy.load_file(str(out / kind / "model.safetensors"))
        shipped = safetensors_numpy.load_file(str(FIXTURES / kind / "model.safetensors"))
        same = fresh.keys() == shipped.keys() and all(np.array_equal(fresh[k], shipped[k]) for k in fresh)
        bundle = bundles[kind] if same else build_from_lerobot(out / kind, out / "tokenizer.json",
                                                               tmp_path / f"bundle-{kind}", state_names=SIM_STATE)
        errors = lerobot_chunk_errors(bundle, out / f"{kind}_reference.npz")
        print(f"{kind} (fresh LeRobot run, weights {'as shipped' if same else 'new'}): "
              f"chunk max abs error {max(errors):.2e}")
        assert max(errors) < CHUNK_TOLERANCE


def test_pi0_drives_the_sim_with_two_cameras_and_state_then_calibrates_int8(bundles, tmp_path, capsys):
    """The exported pi0 runs the closed loop (front + wrist views, measured joints + gripper), the
    recording of every view and state calibrates the QDQ INT8 bundle, and that passes the gate and runs."""
    pytest.importorskip("mujoco", reason="needs MuJoCo (pip install vla-runtime[sim])")
    pytest.importorskip("mcap", reason="recording needs the record extra (pip install 'vla-runtime[record]')")
    import json

    import vla_runtime.runtime.sim  # noqa: F401 - picks MuJoCo's offscreen GL before mujoco is imported
    from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle
    from vla_runtime.runtime.cli import main
    from vla_runtime.runtime.episodes.readers import open_source
    from vla_runtime.runtime.manifest import load_manifest

    record, profile = tmp_path / "episodes", tmp_path / "profile.json"
    rc = main(["--bundle", str(bundles["pi0"]), "--task", "pick up the red cube", "--steps", "16",
               "--max-misses", "100000", "--backend", "cpu", "--record", str(record), "--record-raw",
               "--profile", str(profile)])
    assert rc == 0
    stages = json.loads(profile.read_text())["stages_ms"]
    assert {"preprocess[front]", "preprocess[wrist]", "vision", "prefill", "expert"} <= set(stages)
    out = capsys.readouterr().out
    assert "episode: completed after 16 ticks" in out

    int8 = tmp_path / "pi0-int8"
    report = quantize_bundle(bundles["pi0"], open_source(record), int8,
                             QuantizeOptions(calib_frames=8, gate_frames=4, progress=False))
    assert report["passed"], report
    assert {g.precision for g in load_manifest(int8).graphs.values()} == {"int8"}
    assert main(["--bundle", str(int8), "--task", "pick up the red cube", "--steps", "4", "--max-misses", "100000",
                 "--backend", "cpu"]) == 0


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_tensorrt_engine_bundle_takes_the_lerobot_graphs(bundles, kind, tmp_path, monkeypatch):
    """`vla-export engine` plans one static profile per graph and writes a TensorRT bundle; only the
    builder and the GPU are faked (no GPU here), the planning, records and manifest are real."""
    from vla_runtime.export import cmd_engine, tensorrt_build
    from vla_runtime.runtime.backends import device
    from vla_runtime.runtime.manifest import load_manifest

    built = []

    def fake_build(path, shapes, cfg, cache=b""):
        built.append((path.name, dict(shapes)))
        return b"plan:" + path.name.encode(), cache + b"."

    monkeypatch.setattr(tensorrt_build, "build_engine", fake_build)
    orin = device.DeviceFacts("Fake Orin", "8.7", "10.3.0", "12.6")
    monkeypatch.setattr(device, "live_device", lambda device_id=0: orin)
    bundle, cfg, profiles = cmd_engine.plan(bundles[kind], "fp16", {}, False)
    assert set(profiles) == {"vision", "prefill", "expert"}
    for shapes in profiles.values():  # LeRobot's padded prompt: every input has one static shape
        assert all(lo == opt == hi for lo, opt, hi in shapes.values())
    out = cmd_engine.build_engine_bundle(bundle, cfg, profiles, tmp_path / "engines", None, False, progress=False)
    manifest = load_manifest(out)
    assert manifest.target.kind == "tensorrt" and manifest.head == "pi0"
    assert {g.format for g in manifest.graphs.values()} == {"tensorrt"}
    assert sorted(name for name, _ in built) == ["expert.onnx", "prefill.onnx", "vision.onnx"]
