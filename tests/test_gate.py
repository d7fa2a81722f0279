"""The accuracy gate: its metrics against independent numpy, and a corrupted INT8 graph it must catch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh
from vla_runtime.calibration.collect import Replay, load_frames, replay, representative
from vla_runtime.calibration.gate import GateThresholds, action_metrics, judge, verdict
from vla_runtime.calibration.pipeline import QuantizeOptions, run_gate
from vla_runtime.calibration.quantize import QdqConfig, quantize_qdq
from vla_runtime.calibration.sampling import plan_samples
from vla_runtime.runtime.bundle import BundleError, open_bundle
from vla_runtime.runtime.derived_bundle import NewGraph, set_gate, write_derived_bundle
from vla_runtime.runtime.episodes.readers import open_source
from vla_runtime.runtime.gate_report import format_gate
from vla_runtime.runtime.policy import load_policy


def _physical_scale(manifest) -> np.ndarray:
    """Physical units per normalised unit, computed here from the manifest, not by the runtime."""
    n = manifest.action.normalization
    assert n.kind == "q01_q99"
    scale = 0.5 * (np.array(n.high) - np.array(n.low))
    mask = np.array(n.mask) if n.mask else np.ones_like(scale, bool)
    return np.where(mask, scale, 1.0)


def _replays(manifest, delta: np.ndarray, bins_changed: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    h, d = manifest.action.horizon, manifest.action.dim
    norm = rng.uniform(-0.9, 0.9, (5, h, d)).astype(np.float32)  # [F, H, D]
    scale = _physical_scale(manifest)
    n = manifest.action.normalization
    offset = np.where(np.array(n.mask), 0.5 * (np.array(n.high) - np.array(n.low)) + np.array(n.low), 0.0)
    bins = rng.integers(0, 256, (5, h, d))
    changed = bins.copy().reshape(-1)
    changed[:bins_changed] = (changed[:bins_changed] + 3) % 256
    ref = Replay([x * scale + offset for x in norm.astype(np.float64)], list(norm), list(bins), {})
    got_norm = norm + delta.astype(np.float32)
    got = Replay([x * scale + offset for x in got_norm.astype(np.float64)], list(got_norm),
                 list(changed.reshape(bins.shape)), {})
    return ref, got


def test_mae_is_per_dimension_in_physical_units(tiny_bundle):
    manifest = open_bundle(tiny_bundle("parallel")).manifest
    delta = np.zeros(manifest.action.dim)
    delta[1] = 0.1  # normalised units on the second dimension only
    ref, got = _replays(manifest, delta, bins_changed=7)
    m = action_metrics(manifest, ref, got)
    name = manifest.action.names[1]
    assert m["mae"][name] == pytest.approx(0.1 * _physical_scale(manifest)[1], rel=1e-5)
    assert m["mae_fraction"][name] == pytest.approx(0.05, rel=1e-4)  # 0.1 of a span of 2
    assert m["worst_dim"] == name and m["mae"][manifest.action.names[0]] == 0
    total = 5 * manifest.action.horizon * manifest.action.dim
    assert m["token_agreement"] == pytest.approx(1 - 7 / total)
    fails = verdict(m, GateThresholds())
    assert len(fails) == 1 and name in fails[0] and "5.0% of its span > 2.0%" in fails[0]
    assert verdict(m, GateThresholds(max_mae_fraction=0.06)) == []
    assert verdict(m, GateThresholds(max_mae_fraction=0.06, min_token_agreement=0.999))[0].startswith("token")


def test_flow_metrics_cosine_and_max_error(tiny_bundle):
    manifest = open_bundle(tiny_bundle("flow")).manifest
    ref, got = _replays(manifest, np.full(manifest.action.dim, 0.2))
    m = action_metrics(manifest, ref, got)
    a = np.stack(ref.normalized).reshape(5, -1).astype(np.float64)
    b = np.stack(got.normalized).reshape(5, -1).astype(np.float64)
    expected = min(float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b, strict=True))
    assert m["flow_cosine_min"] == pytest.approx(expected, abs=1e-6)
    assert m["flow_max_error"] == pytest.approx(0.2, abs=1e-5)
    report = judge(manifest, ref, got, {"vision": {"cosine": 0.99}, "velocity": {"cosine": 0.9}}, GateThresholds())
    assert not report["passed"] and report["worst_graph"] == "velocity"
    assert any("flow max error" in f for f in report["failures"])
    text = format_gate(report)
    assert "FAILED" in text and "velocity" in text.split("lost most")[0].splitlines()[-1]


def _corrupt_weight_scales(path, factor: float) -> str:
    """Multiply one int8 weight's per-channel scales: a broken calibration, still a valid graph."""
    model = onnx.load(str(path))
    dq_weights = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    scales = [t for t in model.graph.initializer if t.name in dq_weights and len(t.dims) == 1 and t.dims[0] > 1]
    target = scales[len(scales) // 2]
    target.CopyFrom(nh.from_array(nh.to_array(target) * np.float32(factor), target.name))
    onnx.save(model, str(path))
    return target.name


def test_gate_fails_on_a_corrupted_quantized_graph(tiny_bundle, tmp_path):
    from test_quantize_bundle import write_scenes

    src = open_bundle(tiny_bundle("flow"))
    data = open_source(write_scenes(tmp_path / "rec", episodes=3, length=6))
    plan = plan_samples(data.episode_lengths(), 6, 4)
    with load_policy(src.root) as fp32:
        rec = replay(fp32, load_frames(data, plan.calibration, "", False), True, "", False)
    qdq = tmp_path / "velocity.int8.onnx"
    result = quantize_qdq(src.path(src.manifest.graphs["velocity"].file), qdq, "velocity",
                          [s.inputs for s in representative(rec.samples["velocity"], 40)], QdqConfig())
    assert result.quantized
    _corrupt_weight_scales(qdq, -8.0)
    out = write_derived_bundle(src, tmp_path / "broken", {"velocity": NewGraph(qdq, qdq.name, "int8")})
    opts = QuantizeOptions(gate_graph_samples=4, progress=False)
    report = run_gate(src.root, out, load_frames(data, plan.held_out, "", False), opts)
    set_gate(out, report)

    assert not report["passed"] and report["worst_graph"] == "velocity"
    assert report["per_graph"]["velocity"]["cosine"] < report["per_graph"]["vision"]["cosine"]
    assert any(f.startswith("flow cosine") for f in report["failures"])
    with pytest.raises(BundleError) as err:
        load_policy(out)
    assert "accuracy gate failed" in str(err.value) and "--allow-failed-gate" in str(err.value)
    assert "\n" not in str(err.value)
    with load_policy(out, allow_failed_gate=True) as policy:  # written, inspectable, runnable on request
        assert policy.manifest.gate_failed
