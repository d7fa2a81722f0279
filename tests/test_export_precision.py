"""fp16 / bf16 exports: what the graph files hold, parity with per-dtype tolerances, the loop, and failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from vla_runtime.export.build import build_from_source, failed_directory
from vla_runtime.export.checkpoint import from_config, from_preset
from vla_runtime.export.parity import ParityError, parity_failure, run_parity
from vla_runtime.export.precision import (
    DEFAULT_TOLERANCES,
    Tolerance,
    cast_parameters,
    dtype_name,
    float32_compute,
    upcast_compute,
)
from vla_runtime.export.presets import preset_config
from vla_runtime.runtime.manifest import load_manifest
from vla_runtime.runtime.policy import load_policy
from vla_runtime.runtime.types import Frame

_HALF = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}


def _one_layer(head: str):
    """The smallest model with every graph kind of a head: one vision and one text layer."""
    return from_config(dataclasses.replace(preset_config("tiny", head), vision_layers=1, text_layers=1))


@pytest.fixture(scope="module")
def small_bundles(tmp_path_factory):
    """Small-preset parallel bundles in fp16 and bf16, each built once (parity gates the build)."""
    built: dict[str, Path] = {}

    def make(dtype: str) -> Path:
        if dtype not in built:
            root = tmp_path_factory.mktemp(f"small-{dtype}")
            built[dtype] = build_from_source(from_preset("small", "parallel"), root / "bundle", progress=False,
                                             dtype=dtype)
        return built[dtype]

    return make


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_small_half_precision_bundle_passes_parity_and_runs_in_the_loop(small_bundles, dtype):
    pytest.importorskip("mujoco", reason="the loop drives the MuJoCo arm (pip install vla-runtime[sim])")
    import vla_runtime.runtime.sim  # noqa: F401 - picks MuJoCo's offscreen GL before mujoco is imported
    from vla_runtime.runtime.cli import main

    bundle = small_bundles(dtype)
    manifest = load_manifest(bundle)
    parity = manifest.parity
    assert parity["passed"] and parity["dtype"] == dtype == manifest.model["dtype"]
    assert parity["tolerance"] == dataclasses.asdict(DEFAULT_TOLERANCES[dtype])
    assert all(g["worst"] <= 1.0 for g in parity["graphs"].values())
    assert parity["action"]["bins_within_tolerance"] == parity["action"]["bins_total"] > 0
    assert {g.precision for g in manifest.graphs.values()} == {dtype}
    assert main(["--bundle", str(bundle), "--steps", "3", "--hz", "5", "--max-misses", "100000"]) == 0


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_graph_files_store_half_weights_with_float32_edges(small_bundles, dtype):
    bundle = small_bundles(dtype)
    manifest = load_manifest(bundle)
    for role, spec in manifest.graphs.items():
        model = onnx.load(str(bundle / spec.file))
        weights = [t for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT, _HALF[dtype])]
        big = [t for t in weights if np.prod(t.dims) >= 1024]
        assert big and all(t.data_type == _HALF[dtype] for t in big), role  # every matrix is stored in half
        edges = [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]]
        assert TensorProto.FLOAT in edges and _HALF[dtype] not in edges, role  # the runtime feeds float32
        assert all(s.dtype != "float16" for s in (*spec.inputs, *spec.outputs))
        typed = onnx.shape_inference.infer_shapes(model)
        computed = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
        matmul_types = {computed.get(n.output[0]) for n in model.graph.node if n.op_type in ("MatMul", "Gemm")}
        if dtype == "fp16":
            assert TensorProto.FLOAT16 in matmul_types, role  # a real half-precision graph for GPUs
            softmax = {computed.get(n.output[0]) for n in model.graph.node if n.op_type == "Softmax"}
            assert softmax <= {TensorProto.FLOAT}, role  # attention probabilities stay fp32
        else:
            assert matmul_types == {TensorProto.FLOAT}, role  # onnxruntime's CPU has no bf16 kernels


def test_float32_compute_matches_a_float32_copy_of_the_rounded_weights():
    half = _one_layer("parallel").model
    cast_parameters(half, "bf16")
    assert dtype_name(half) == "bf16"
    rounded = _one_layer("parallel").model
    rounded.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    px = torch.rand(1, 3, 32, 32) * 2 - 1  # [1, 3, S, S]
    ids = torch.tensor([[2, 40, 41, 42]])  # [1, T]
    with float32_compute(half):
        got = half.reference_parallel_logits(px, ids)
    assert got.dtype == torch.float32
    # SigLIP rounds pixel_values to the patch weights' dtype before the conv: bf16's 8 bits, ~4e-3 relative
    want = rounded.reference_parallel_logits(px, ids)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=2e-3)
    in_bf16 = half.reference_parallel_logits(px, ids).float()  # what PyTorch computes without the hooks
    assert (got - want).abs().max() < (in_bf16 - want).abs().max()
    assert dtype_name(half) == "bf16"  # weights restored after the forward
    rotary = half.language_model.rotary_emb.inv_freq
    assert rotary.dtype == torch.float32  # buffers are not rounded by cast_parameters


def test_failed_parity_keeps_the_graphs_for_inspection(tmp_path):
    source = _one_layer("parallel")
    out = tmp_path / "bundle"
    with pytest.raises(ParityError, match=r"vision max abs err .* exceeds atol .*kept in .*bundle\.failed") as err:
        build_from_source(source, out, progress=False, tolerance=Tolerance(atol=0.0, rtol=0.0))
    assert "\n" not in str(err.value)
    kept = failed_directory(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.failed"]  # no bundle, no staging
    manifest = load_manifest(kept)
    assert manifest.parity["passed"] is False and (kept / manifest.graphs["vision"].file).is_file()


def test_parity_fails_a_bundle_whose_weights_were_rounded_further(tmp_path):
    """The tolerance can fail: an fp16 bundle checked against a model whose weights differ in bf16."""
    bundle = build_from_source(_one_layer("flow"), tmp_path / "b", progress=False, dtype="fp16")
    other = _one_layer("flow").model
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cast_parameters(other, "fp16")
    report = run_parity(other, bundle, seed=1, count=1)
    assert report["passed"] is False and "exceeds atol 2e-02 + rtol 2e-02" in parity_failure(report)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_external_data_build_passes_parity_and_loads(tmp_path, dtype):
    """The > 1.5 GiB path (weights streamed to `<graph>.onnx.data`) on a tiny model, threshold lowered."""
    source = _one_layer("flow")
    bundle = build_from_source(source, tmp_path / "b", progress=False, dtype=dtype, external_data_bytes=0,
                               release_model=True)
    manifest = load_manifest(bundle)
    assert manifest.parity["passed"]
    for spec in manifest.graphs.values():
        assert spec.data_files == (f"{spec.file}.data",)
        model = onnx.load(str(bundle / spec.file), load_external_data=False)
        assert any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    assert all(p.numel() == 0 for p in source.model.parameters())  # the PyTorch weights were freed
    with load_policy(bundle, backend="cpu") as policy:
        chunk = policy.infer(Frame(image=np.zeros((48, 64, 3), np.uint8), t_capture=0.0), "open it")
    assert np.all(np.isfinite(chunk.actions))


def test_upcast_keeps_external_weights_in_place(tmp_path):
    """The bf16 rewrite touches only the graph: a >2 GiB graph's data file is reused, not loaded."""
    ones = np.full(64 * 64, 0x3F80, dtype=np.uint16).tobytes()  # 1.0 in bfloat16
    w = onnx.helper.make_tensor("w", TensorProto.BFLOAT16, [64, 64], ones, raw=True)
    x = onnx.helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 64])
    y = onnx.helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 64])
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    path = tmp_path / "g.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(path),
              save_as_external_data=True, location="g.onnx.data", size_threshold=0)
    before = (tmp_path / "g.onnx.data").read_bytes()
    assert upcast_compute(path, "bf16") == 1
    assert (tmp_path / "g.onnx.data").read_bytes() == before
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.full((1, 64), 0.5, dtype=np.float32)})[0]
    np.testing.assert_array_equal(out, np.full((1, 64), 32.0, dtype=np.float32))


def test_cli_refuses_negative_tolerance_in_one_line(capsys):
    from vla_runtime.export.cli import main

    assert main(["build", "--head", "parallel", "--out", "unused", "--dtype", "fp16", "--atol", "-1"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--atol -1.0" in err and ">= 0" in err


def test_policy_reads_float32_from_a_half_precision_bundle(small_bundles):
    with load_policy(small_bundles("fp16"), backend="cpu") as policy:
        chunk = policy.infer(Frame(image=np.zeros((48, 64, 3), np.uint8), t_capture=0.0), "pick up the red block")
    assert policy.last_normalized.dtype == np.float32 and np.all(np.isfinite(chunk.actions))
