"""TensorRT engines: everything around the builder and runner on CPU; the GPU parts skip here."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from vla_runtime.common.errors import UserError
from vla_runtime.export.cmd_engine import parse_shapes, plan
from vla_runtime.export.tensorrt_build import EngineConfig, EngineError, check_precision, graph_precision
from vla_runtime.runtime.backends.device import DeviceFacts, engine_mismatch
from vla_runtime.runtime.backends.profiles import ProfileError, profile_shapes, symbol_ranges
from vla_runtime.runtime.backends.tensorrt import TensorrtBackend
from vla_runtime.runtime.bundle import open_bundle
from vla_runtime.runtime.manifest import GraphSpec, TensorSpec


def _trt_ready() -> str | None:
    """None when a GPU and TensorRT are usable here, else why not."""
    return TensorrtBackend.probe("tensorrt") or _gpu_reason()


def _gpu_reason() -> str | None:
    from vla_runtime.runtime.backends.device import gpu_info

    found = gpu_info(0)
    return found if isinstance(found, str) else None


needs_gpu = pytest.mark.skipif(_trt_ready() is not None, reason="no GPU / TensorRT not installed")


def _with_precision(manifest, precision, roles=None):
    graphs = {r: dataclasses.replace(g, precision=precision) if roles is None or r in roles else g
              for r, g in manifest.graphs.items()}
    return dataclasses.replace(manifest, graphs=graphs)


def test_profiles_cover_prompt_context_and_kv_cache(tiny_bundle):
    m = open_bundle(tiny_bundle("tokens")).manifest
    n = m.graphs["vision"].outputs[0].shape[1]  # image tokens
    t_max, steps = m.prompt.max_tokens, m.action.dim
    ranges = symbol_ranges(m, opt_prompt=12)
    prefill = profile_shapes(m.graphs["prefill"], ranges)
    assert prefill["input_ids"] == ((1, 1), (1, 12), (1, t_max))
    assert prefill["image_embeds"][0] == prefill["image_embeds"][2]  # fixed axes stay fixed
    decode = profile_shapes(m.graphs["decode"], ranges)
    lo, opt, hi = (s[2] for s in decode["past_key_values.0.key"])
    assert lo == n + 1 and hi == n + t_max + steps and lo <= opt <= hi  # first to last decode step
    assert {decode[k] for k in decode if k.startswith("past_key_values")} == {decode["past_key_values.0.key"]}
    flow = open_bundle(tiny_bundle("flow")).manifest
    ctx = profile_shapes(flow.graphs["velocity"], symbol_ranges(flow, 12))["context"]
    assert (ctx[0][1], ctx[2][1]) == (n + 1, n + t_max)


def test_unknown_dynamic_axis_names_the_flag():
    spec = GraphSpec(role="vision", file="v.onnx", inputs=(TensorSpec("pixel_values", "float32", (1, 3, "side", 8)),))
    with pytest.raises(ProfileError, match=r"dynamic axis 'side' .* pass --shape side=MIN:OPT:MAX"):
        profile_shapes(spec, {"seq": (1, 2, 3)})
    assert profile_shapes(spec, {"side": (8, 16, 32)})["pixel_values"] == ((1, 3, 8, 8), (1, 3, 16, 8), (1, 3, 32, 8))


def test_precision_refusals(tiny_bundle):
    fp32 = open_bundle(tiny_bundle("tokens")).manifest
    qdq = _with_precision(fp32, "int8")
    with pytest.raises(EngineError, match="'fp8' is not supported"):
        check_precision(fp32, "fp8", "8.7")
    with pytest.raises(EngineError, match="no QDQ graphs; run `vla-export quantize --variant qdq`"):
        check_precision(fp32, "int8", "8.7")
    with pytest.raises(EngineError, match="hold int8 Q/DQ nodes; build --precision int8"):
        check_precision(qdq, "fp16", "8.7")
    with pytest.raises(EngineError, match="int8-cpu .* TensorRT cannot parse"):
        check_precision(_with_precision(fp32, "int8-cpu"), "int8", "8.7")
    with pytest.raises(EngineError, match="int8 needs compute capability >= 6.1; this GPU is 5.3"):
        check_precision(qdq, "int8", "5.3")
    check_precision(qdq, "int8", "8.7")  # Orin
    check_precision(fp32, "fp16", "8.7")
    parallel = _with_precision(open_bundle(tiny_bundle("parallel")).manifest, "int8", roles=("vision", "prefill"))
    check_precision(parallel, "int8", "8.7")  # a float head inside a QDQ bundle builds in fp16
    assert graph_precision("fp32", "int8") == "fp16" and graph_precision("int8", "int8") == "int8"
    check_precision(fp32, "fp32", "5.0")  # FP16 off: any GPU
    with pytest.raises(EngineError, match="hold int8 Q/DQ nodes; .* or build fp32 from the FP32 bundle"):
        check_precision(qdq, "fp32", "8.7")
    with pytest.raises(EngineError, match="are fp16 ONNX graphs; build --precision fp32 from an fp32 bundle"):
        check_precision(_with_precision(fp32, "fp16"), "fp32", "8.7")
    with pytest.raises(EngineError, match="min <= opt <= max"):
        EngineConfig(precision="int8", shapes={"seq": (4, 2, 8)})


def test_engine_mismatch_is_one_line():
    built = {"gpu_name": "Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0"}
    assert engine_mismatch(built, DeviceFacts("Orin", "8.7", "10.3.0.26", "12.6")) is None
    other_gpu = engine_mismatch(built, DeviceFacts("NVIDIA GeForce RTX 4090", "8.9", "10.3.0", "12.6"))
    assert "built for Orin (compute capability 8.7" in other_gpu and "rebuild them on this device" in other_gpu
    other_trt = engine_mismatch(built, DeviceFacts("Orin", "8.7", "10.7.0", "12.6"))
    assert "TensorRT 10.3.0, this device has TensorRT 10.7.0" in other_trt
    assert "\n" not in other_gpu + other_trt


def test_backend_refuses_onnx_and_cpu_only_graphs():
    onnx_spec = GraphSpec(role="vision", file="v.onnx")
    assert "not a TensorRT engine" in TensorrtBackend.check_graph(onnx_spec, "tensorrt")
    cpu_only = GraphSpec(role="vision", file="v.engine", format="tensorrt", precision="int8-cpu")
    assert "int8-cpu" in TensorrtBackend.check_graph(cpu_only, "tensorrt")
    assert TensorrtBackend.check_graph(dataclasses.replace(cpu_only, precision="int8"), "tensorrt") is None
    assert "only on 'tensorrt'" in TensorrtBackend.probe("cpu")


def test_engine_bundle_is_refused_without_its_gpu(tiny_bundle, tmp_path):
    """A bundle of engines built elsewhere: loading says why in one line instead of crashing."""
    from vla_runtime.runtime.backends import BackendError
    from vla_runtime.runtime.bundle import BundleError
    from vla_runtime.runtime.derived_bundle import NewGraph, write_derived_bundle
    from vla_runtime.runtime.manifest import HEAD_GRAPHS, Target
    from vla_runtime.runtime.policy import load_policy

    if _trt_ready() is None:
        pytest.skip("a usable GPU is present; this checks the refusal on machines without one")
    src = open_bundle(tiny_bundle("parallel"))
    fake = tmp_path / "x.engine"
    fake.write_bytes(b"not an engine")
    graphs = {r: NewGraph(fake, f"engines/{r}.fp16.engine", "fp16", format="tensorrt") for r in HEAD_GRAPHS["parallel"]}
    target = Target(kind="tensorrt", gpu_name="Orin", compute_capability="8.7", tensorrt_version="10.3.0",
                    cuda_version="12.6")
    out = write_derived_bundle(src, tmp_path / "engines", graphs, target=target)
    with pytest.raises((BundleError, BackendError)) as err:
        load_policy(out, backend="tensorrt")
    assert "\n" not in str(err.value) and ("Orin" in str(err.value) or "tensorrt" in str(err.value).lower())


def test_engine_command_checks_everything_before_needing_tensorrt(tiny_bundle, capsys):
    bundle, cfg, profiles = plan(tiny_bundle("flow"), "fp16", parse_shapes(["seq=2:8:16"]), False)
    assert cfg.precision == "fp16" and set(profiles) == {"vision", "prefill", "velocity"}
    assert profiles["prefill"]["input_ids"] == ((1, 2), (1, 8), (1, 16))
    with pytest.raises(UserError, match="expected NAME=MIN:OPT:MAX"):
        parse_shapes(["seq=1"])
    from vla_runtime.export.cli import main

    if _trt_ready() is None:
        pytest.skip("TensorRT present: the missing-package message is not shown here")
    assert main(["engine", str(tiny_bundle("flow")), "--precision", "fp16", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "build them on the target device" in err


@needs_gpu
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_build_and_run_engines_against_onnxruntime(tiny_bundle, tmp_path, precision):
    from test_quantize_bundle import write_scenes
    from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle
    from vla_runtime.export.cmd_engine import build_engine_bundle
    from vla_runtime.runtime.backends.tensorrt import engine_record_path
    from vla_runtime.runtime.episodes.readers import open_source
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.types import Frame

    src = tiny_bundle("flow")
    if precision == "int8":
        src = tmp_path / "qdq"
        opts = QuantizeOptions(calib_frames=6, gate_frames=3, progress=False)
        quantize_bundle(tiny_bundle("flow"), open_source(write_scenes(tmp_path / "rec")), src, opts)
    bundle, cfg, profiles = plan(src, precision, {}, allow_failed_gate=True)
    out = build_engine_bundle(bundle, cfg, profiles, tmp_path / "engines", str(tmp_path / "timing.cache"), False)
    m = open_bundle(out).manifest
    assert m.target.kind == "tensorrt" and m.target.compute_capability and m.target.tensorrt_version
    record = json.loads(engine_record_path(out / m.graphs["vision"].file).read_text())
    assert record["compute_capability"] == m.target.compute_capability
    assert (tmp_path / "timing.cache").stat().st_size > 0
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with load_policy(src, allow_failed_gate=True) as ref, load_policy(out, backend="tensorrt",
                                                                      allow_failed_gate=True) as trt:
        a = ref.infer(Frame(image, 0.0), "pick up the red block").actions
        b = trt.infer(Frame(image, 0.0), "pick up the red block").actions
    cos = float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos > 0.98
