"""Quantizers on graphs whose weights live in external data (the > 2 GiB path, reached by threshold).

A real 3B graph would take minutes and tens of GB; the size that switches to external data is
a config value, so a graph of a few hundred kB walks the same code (save, pre-pass,
calibration, quantize_static / quantize_dynamic / MatMulNBits, inspection) as a 3 GB one.
`bench/bench_quantize_2gb.py` runs one real > 2 GiB graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from vla_runtime.calibration.cpu_fast import CpuFastConfig, quantize_cpu_fast
from vla_runtime.calibration.quantize import QdqConfig, data_file, quantize_qdq

ort = pytest.importorskip("onnxruntime", reason="quantization runs onnxruntime (pip install onnxruntime)")

WIDTH = 256  # two 256 x 256 float32 weights: 512 kB, far over the test threshold
THRESHOLD = 64 << 10  # 64 kB


def _graph(path) -> None:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) * 0.05).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((WIDTH, WIDTH)) * 0.05).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("MatMul", ["r", "w2"], ["hidden_states"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [1, WIDTH])], [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path), save_as_external_data=True, location=data_file(path), size_threshold=1024)


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _check_external(dst, data_files) -> None:
    assert data_files == (data_file(dst),) and (dst.parent / data_files[0]).is_file()
    model = onnx.load(str(dst), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert external, "the weights must live in the data file"
    assert dst.stat().st_size < (dst.parent / data_files[0]).stat().st_size


@pytest.mark.parametrize("variant", ["qdq", "dynamic", "nbits"])
def test_quantizers_write_external_data_past_the_threshold(tmp_path, variant):
    src, dst = tmp_path / "prefill.onnx", tmp_path / "out" / "prefill.int8.onnx"
    dst.parent.mkdir()
    _graph(src)
    rng = np.random.default_rng(1)
    samples = [{"x": rng.standard_normal((1, WIDTH)).astype(np.float32)} for _ in range(8)]
    cfg = QdqConfig(external_data_bytes=THRESHOLD)
    if variant == "qdq":
        res = quantize_qdq(src, dst, "prefill", samples, cfg)
        assert set(res.quantized_nodes) == {"fc1", "fc2"}
    else:
        res = quantize_cpu_fast(src, dst, "prefill", CpuFastConfig(method=variant), cfg)
        assert res.quantized
    _check_external(dst, res.data_files)
    x = samples[0]["x"]
    ref, got = _run(src, x), _run(dst, x)
    assert np.max(np.abs(got - ref)) < 0.05 * np.max(np.abs(ref))  # int8 error, not garbage


def test_small_graphs_stay_in_one_file(tmp_path):
    src, dst = tmp_path / "prefill.onnx", tmp_path / "prefill.int8.onnx"
    _graph(src)
    res = quantize_cpu_fast(src, dst, "prefill", CpuFastConfig(), QdqConfig())  # default: 1.5 GiB
    assert res.data_files == () and not (tmp_path / data_file(dst)).exists()


def test_nothing_to_quantize_still_carries_the_data_file(tmp_path):
    src, dst = tmp_path / "head.onnx", tmp_path / "out" / "head.onnx"
    dst.parent.mkdir()
    _graph(src)
    res = quantize_qdq(src, dst, "head", [], QdqConfig(external_data_bytes=THRESHOLD))  # "head" stays float
    assert not res.quantized
    _check_external(dst, res.data_files)
    x = np.ones((1, WIDTH), np.float32)
    np.testing.assert_array_equal(_run(dst, x), _run(src, x))
