"""`vla-export quantize` on each head's tiny bundle: a verified INT8 bundle the runtime runs.

Calibration data is a small recording in the runtime's own `--record` layout: coloured blocks
that move over a textured table, so consecutive frames differ the way camera frames do.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle
from vla_runtime.calibration.quantize import inspect_qdq
from vla_runtime.runtime.bundle import BundleError, open_bundle
from vla_runtime.runtime.episodes.readers import open_source
from vla_runtime.runtime.manifest import HEAD_GRAPHS
from vla_runtime.runtime.policy import load_policy
from vla_runtime.runtime.types import Frame

HEADS = ("tokens", "parallel", "flow")


def write_scenes(root, episodes=4, length=8, size=(48, 64), seed=0):
    """Recorded episodes (frames/states/actions/meta) of blocks sliding over a table texture."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for ep in range(episodes):
        d = root / f"episode_{ep:06d}"
        d.mkdir(parents=True)
        table = (rng.uniform(60, 200, 3) + 20 * np.sin(xx / (3 + ep))[..., None]).astype(np.float32)  # [H, W, 3]
        colours = rng.uniform(0, 255, (2, 3))
        start, velocity = rng.uniform([8, 8], [h - 8, w - 8], (2, 2)), rng.uniform(-2, 2, (2, 2))
        frames = np.empty((length, h, w, 3), np.uint8)
        for t in range(length):
            img = table.copy()
            for (cy, cx), colour in zip(start + t * velocity, colours, strict=True):
                img[(np.abs(yy - cy) < 5) & (np.abs(xx - cx) < 5)] = colour
            frames[t] = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        np.save(d / "frames.npy", frames)
        np.save(d / "states.npy", rng.normal(size=(length, 8)).astype(np.float32))
        np.save(d / "actions.npy", rng.normal(size=(length, 7)).astype(np.float32))
        task = ["pick up the red block", "push the blue cup left"][ep % 2]
        (d / "meta.json").write_text(json.dumps({"task": task, "rate_hz": 10.0, "bundle": "tiny", "robot": "sim",
                                                 "steps": length}))
    return root


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_scenes(tmp_path_factory.mktemp("scenes") / "rec")


@pytest.fixture(scope="module")
def quantized(tiny_bundle, scenes, tmp_path_factory):
    """head -> (bundle dir, report); each head quantized once for this module."""
    done = {}

    def make(head):
        if head not in done:
            out = tmp_path_factory.mktemp(f"int8-{head}") / "bundle"
            opts = QuantizeOptions(calib_frames=12, gate_frames=6, progress=False)
            done[head] = (out, quantize_bundle(tiny_bundle(head), open_source(scenes), out, opts))
        return done[head]

    return make


def test_quantized_bundle_is_resealed_with_its_own_health_sample(quantized, tiny_bundle):
    """The writer re-seals the derived bundle and records the INT8 graphs' own sample for `flash --check`."""
    from vla_runtime.runtime import health

    out, _ = quantized("flow")  # continuous actions: INT8 moves them a little, so the sample differs
    src, q = open_bundle(tiny_bundle("flow")), open_bundle(out)
    assert q.seal != src.seal and health.SAMPLE_NAME in q.manifest.files
    assert q.manifest.files["health/actions.npy"] != src.manifest.files["health/actions.npy"]
    assert "matches the stored sample" in health.check(out, backend="cpu")


@pytest.mark.parametrize("head", HEADS)
def test_quantized_bundle_is_verified_and_gated(quantized, head):
    out, report = quantized(head)
    bundle = open_bundle(out)  # every file's sha256 checks out
    m = bundle.manifest
    assert m.gate == report and set(report["per_graph"]) == set(HEAD_GRAPHS[head])
    assert report["worst_graph"] in HEAD_GRAPHS[head]
    assert report["passed"] == (not report["failures"])
    assert report["metrics"]["frames"] == 6 and set(report["metrics"]["mae"]) == set(m.action.names)
    for role in HEAD_GRAPHS[head]:
        spec = m.graphs[role]
        if spec.precision == "int8":  # QDQ graphs: symmetric int8, default ops only
            inspect_qdq(onnx.load(str(bundle.path(spec.file)))).require_symmetric_int8(role)
            assert f"calibration/{role}.ranges.json" in m.files
    assert m.graphs["vision"].precision == "int8" and m.graphs["prefill"].precision == "int8"


def test_separate_calibration_per_graph_and_every_flow_step(quantized, tiny_bundle):
    _, tokens = quantized("tokens")
    samples = tokens["calibration"]["samples"]
    dim = open_bundle(tiny_bundle("tokens")).manifest.action.dim
    assert samples["prefill"]["steps"] == 1 and samples["decode"]["steps"] == dim - 1  # one per decode step
    _, flow = quantized("flow")
    steps = open_bundle(tiny_bundle("flow")).manifest.decode.flow_steps
    assert flow["calibration"]["samples"]["velocity"]["steps"] == steps  # every timestep
    metrics, names = flow["metrics"], open_bundle(tiny_bundle("flow")).manifest.action.names
    assert set(metrics["mae"]) == set(names) and all(v >= 0 for v in metrics["mae"].values())
    assert -1.0 <= metrics["flow_cosine_min"] <= metrics["flow_cosine_mean"] <= 1.0
    assert metrics["flow_max_error"] >= 0 and "token_agreement" not in metrics
    assert 0.0 <= tokens["metrics"]["token_agreement"] <= 1.0 and "flow_cosine_min" not in tokens["metrics"]


def test_parallel_head_graph_stays_float(quantized):
    out, report = quantized("parallel")
    assert open_bundle(out).manifest.graphs["head"].precision == "fp32"
    assert report["per_graph"]["head"]["cosine"] == 1.0


@pytest.mark.parametrize("head", HEADS)
def test_runtime_runs_the_quantized_bundle(quantized, head):
    out, report = quantized(head)
    if not report["passed"]:
        with pytest.raises(BundleError, match="--allow-failed-gate"):
            load_policy(out)
    with load_policy(out, allow_failed_gate=not report["passed"]) as policy:
        image = np.full((48, 64, 3), 90, np.uint8)
        chunk = policy.infer(Frame(image, 0.0), "pick up the red block")
        assert np.isfinite(chunk.actions).all() and chunk.actions.shape[1] == len(policy.manifest.action.names)


def test_run_loop_and_inspect_from_the_command_line(quantized, capsys):
    import vla_runtime.runtime.sim  # noqa: F401 - picks MuJoCo's offscreen GL before mujoco is imported

    pytest.importorskip("mujoco", reason="the run loop drives the MuJoCo sim (pip install vla-runtime[sim])")
    from vla_runtime.runtime.cli import main

    out, report = quantized("flow")
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "accuracy gate:" in shown and "lost most" in shown and report["worst_graph"] in shown
    args = ["run", "--bundle", str(out), "--steps", "3", "--hz", "2", "--task", "pick up the red block"]
    if not report["passed"]:
        args.append("--allow-failed-gate")
    assert main(args) == 0


def test_cpu_fast_variant_bundle(tiny_bundle, scenes, tmp_path):
    out = tmp_path / "fast"
    opts = QuantizeOptions(variant="cpu-fast", calib_frames=4, gate_frames=4, progress=False)
    report = quantize_bundle(tiny_bundle("parallel"), open_source(scenes), out, opts)
    m = open_bundle(out).manifest
    assert m.graphs["vision"].precision == "int8-cpu" and report["variant"] == "cpu-fast"
    ops = {n.op_type for n in onnx.load(str(out / m.graphs["prefill"].file)).graph.node}
    assert "MatMulInteger" in ops and "QuantizeLinear" not in ops
    assert report["calibration"]["frames"] == 0  # weight-only: no activation ranges needed


def test_refuses_non_empty_destination_and_quantized_source(quantized, tiny_bundle, scenes, tmp_path):
    from vla_runtime.calibration.pipeline import QuantizeInputError
    from vla_runtime.runtime.derived_bundle import PackError

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    opts = QuantizeOptions(calib_frames=2, gate_frames=2, progress=False)
    with pytest.raises(PackError, match="not empty; pass --force to replace it or choose another --out"):
        quantize_bundle(tiny_bundle("tokens"), open_source(scenes), tmp_path / "busy", opts)
    out, _ = quantized("tokens")
    with pytest.raises(QuantizeInputError, match="quantize the FP32 ONNX bundle"):
        quantize_bundle(out, open_source(scenes), tmp_path / "again", opts)
