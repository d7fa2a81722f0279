"""QDQ structure on a small hand-built graph: zero points, per-channel axes, float islands.

The graph has the shapes that matter: a LayerNorm, a weight MatMul, a Softmax, the projection
that writes `action_logits`, a transposed-weight Gemm and an activation x activation MatMul.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as nh
from vla_runtime.calibration.cpu_fast import CpuFastConfig, quantize_cpu_fast
from vla_runtime.calibration.quantize import QdqConfig, inspect_qdq, output_projections, quantize_qdq

E = 16


def _model(path):
    rng = np.random.default_rng(0)
    inits = {
        "W_in": (0.1 * rng.normal(size=(E, 32))).astype(np.float32),  # [K, N]: channels on axis 1
        "W_out": rng.normal(size=(32, 8)).astype(np.float32),
        "G_t": rng.normal(size=(12, E)).astype(np.float32),  # Gemm transB: [N, K], channels on axis 0
        "b_out": np.zeros(8, np.float32),
        "ln_g": np.ones(E, np.float32),
        "ln_b": np.zeros(E, np.float32),
    }
    nodes = [
        oh.make_node("LayerNormalization", ["x", "ln_g", "ln_b"], ["ln"], name="norm", axis=-1),
        oh.make_node("MatMul", ["ln", "W_in"], ["h"], name="fc_in"),
        oh.make_node("Transpose", ["h"], ["hT"], name="tr", perm=[0, 2, 1]),
        oh.make_node("MatMul", ["h", "hT"], ["scores"], name="scores_mm"),  # activation x activation
        oh.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
        oh.make_node("MatMul", ["probs", "h"], ["mixed"], name="mix_mm"),
        oh.make_node("MatMul", ["mixed", "W_out"], ["o"], name="fc_out"),
        oh.make_node("Add", ["o", "b_out"], ["action_logits"], name="bias_out"),
        oh.make_node("Gemm", ["pooled", "G_t"], ["side"], name="gemm", transB=1),
    ]
    graph = oh.make_graph(
        nodes,
        "qdq-fixture",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", E]),
         oh.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, E])],
        [oh.make_tensor_value_info("action_logits", TensorProto.FLOAT, [1, "seq", 8]),
         oh.make_tensor_value_info("side", TensorProto.FLOAT, [1, 12])],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _samples(n=8, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(1, int(rng.integers(2, 6)), E)).astype(np.float32),
             "pooled": rng.normal(size=(1, E)).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    d = tmp_path_factory.mktemp("qdq")
    src = _model(d / "g.onnx")
    result = quantize_qdq(src, d / "g.int8.onnx", "prefill", _samples(), QdqConfig())
    return src, d / "g.int8.onnx", result


def test_zero_points_are_int8_zero(qdq):
    _, dst, _ = qdq
    s = inspect_qdq(onnx.load(str(dst)))
    assert s.quantize_nodes > 0 and s.dequantize_nodes > s.quantize_nodes  # weights have DQ only
    assert s.zero_points and all(dtype == "int8" and zero for dtype, zero in s.zero_points.values())
    assert not s.foreign_domains  # default-domain ops only: TensorRT parses it


def test_per_channel_weights_on_the_output_channel_axis(qdq):
    _, dst, result = qdq
    model = onnx.load(str(dst))
    axes = inspect_qdq(model).weight_axes
    assert axes == {"W_in_quantized": 1, "G_t_quantized": 0}
    inits = {t.name: nh.to_array(t) for t in model.graph.initializer}
    assert inits["W_in_quantized"].dtype == np.int8
    assert inits["W_in_scale"].shape == (32,) and inits["G_t_scale"].shape == (12,)  # one scale per channel
    assert result.per_channel_axes == axes


def test_sensitive_ops_and_the_action_projection_stay_float(qdq):
    src, dst, result = qdq
    assert result.quantized_nodes == ("fc_in", "gemm")
    assert "fc_out" in result.excluded_nodes  # writes action_logits
    assert {"scores_mm", "mix_mm"} <= set(result.excluded_nodes)  # activation x activation
    assert output_projections(onnx.load(str(src)), ["action_logits"]) == ["fc_out"]
    model = onnx.load(str(dst))
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.name in ("norm", "softmax", "fc_out", "scores_mm", "mix_mm"):
            fed_by = {producer[i].op_type for i in node.input if i in producer}
            assert "DequantizeLinear" not in fed_by, node.name
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in ("h", "side", "o") for n in model.graph.node)


def test_quantized_graph_runs_on_onnxruntime_and_stays_close(qdq):
    src, dst, _ = qdq
    feed = _samples(1, seed=7)[0]
    ref = ort.InferenceSession(str(src)).run(None, feed)
    out = ort.InferenceSession(str(dst)).run(None, feed)
    for a, b in zip(ref, out, strict=True):
        cos = float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos > 0.99 and not np.array_equal(a, b)  # close, and really quantized


def test_exclusion_list_is_configurable(tmp_path):
    src = _model(tmp_path / "g.onnx")
    cfg = QdqConfig(exclude_nodes=("gem*",), float_outputs=())
    result = quantize_qdq(src, tmp_path / "q.onnx", "prefill", _samples(4), cfg)
    assert result.quantized_nodes == ("fc_in", "fc_out")
    assert result.excluded_nodes == ("gemm", "mix_mm", "scores_mm")  # attention products stay float


def test_float_role_is_copied_unchanged(tmp_path):
    src = _model(tmp_path / "g.onnx")
    result = quantize_qdq(src, tmp_path / "q.onnx", "head", _samples(2), QdqConfig())
    assert not result.quantized and (tmp_path / "q.onnx").read_bytes() == src.read_bytes()


def test_percentile_calibration(tmp_path):
    src = _model(tmp_path / "g.onnx")
    result = quantize_qdq(src, tmp_path / "q.onnx", "prefill", _samples(4), QdqConfig(calibration="percentile"))
    assert result.quantized


@pytest.mark.parametrize("cfg", [CpuFastConfig(), CpuFastConfig(method="nbits", bits=4, block_size=16)],
                         ids=["dynamic", "nbits4"])
def test_cpu_fast_variant_is_integer_and_not_for_tensorrt(tmp_path, cfg):
    src = _model(tmp_path / "g.onnx")
    result = quantize_cpu_fast(src, tmp_path / "c.onnx", "prefill", cfg, QdqConfig())
    assert "fc_in" in result.quantized_nodes and "fc_out" in result.excluded_nodes
    model = onnx.load(str(tmp_path / "c.onnx"))
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert ("", "MatMulInteger") in ops if cfg.method == "dynamic" else ("com.microsoft", "MatMulNBits") in ops
    feed = _samples(1, seed=3)[0]
    ref = ort.InferenceSession(str(src)).run(None, feed)[0]
    out = ort.InferenceSession(str(tmp_path / "c.onnx")).run(None, feed)[0]
    assert np.abs(ref - out).max() < 0.1 * np.abs(ref).max()


def test_ranges_cover_every_calibration_batch(tmp_path):
    """Samples are fed in bounded batches; an outlier in any batch must widen the range."""
    from onnxruntime.quantization.calibrate import load_tensors_data
    from vla_runtime.calibration.quantize import calibrate_ranges

    src = _model(tmp_path / "g.onnx")
    samples = _samples(5)
    samples[0]["pooled"] = samples[0]["pooled"] * 0 + 50.0  # first batch only
    calibrate_ranges(src, samples, QdqConfig(batch_outputs=2), tmp_path / "r.json")
    low, high = load_tensors_data(tmp_path / "r.json")["pooled"].range_value
    assert np.max(high) >= 50.0 and np.min(low) <= -50.0  # symmetric range around the outlier


def test_output_quantization_is_opt_in(tmp_path):
    src = _model(tmp_path / "g.onnx")
    quantize_qdq(src, tmp_path / "q.onnx", "prefill", _samples(4), QdqConfig(quantize_outputs=True))
    model = onnx.load(str(tmp_path / "q.onnx"))
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "h" for n in model.graph.node)  # fc_in's output
    s = inspect_qdq(model)
    assert all(dtype == "int8" and zero for dtype, zero in s.zero_points.values())
