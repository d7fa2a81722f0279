"""The runner base and the onnxruntime backend on real CPU sessions; GPU providers where present."""

from __future__ import annotations

import ast
import dataclasses
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_policy_zoo import build_zoo_bundle
from vla_runtime.runtime.backends import BackendError, BackendOptions, backend_class, select
from vla_runtime.runtime.backends.onnxrt import OrtBackend
from vla_runtime.runtime.manifest import load_manifest


@pytest.fixture(scope="module")
def tokens_bundle(tmp_path_factory) -> Path:
    return build_zoo_bundle(tmp_path_factory.mktemp("zoo") / "tokens", "tokens")


def runner(bundle: Path, role: str, device: str = "cpu", **options) -> OrtBackend:
    spec = load_manifest(bundle).graphs[role]
    return OrtBackend(spec, bundle / spec.file, device, BackendOptions(**options))


def prefill_inputs(bundle: Path) -> dict:
    with runner(bundle, "vision") as vision:
        pixels = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
        embeds = vision.run({"pixel_values": pixels})["image_embeds"].copy()
    return {"image_embeds": embeds, "input_ids": np.array([[1, 4, 5, 6, 7]], dtype=np.int64)}


def test_lifecycle_gates_run_and_timing_is_recorded(tokens_bundle):
    r = runner(tokens_bundle, "prefill")
    feeds = prefill_inputs(tokens_bundle)
    with pytest.raises(BackendError, match="before activate"):
        r.run(feeds)
    r.activate()
    r.run(feeds)
    r.run(feeds)
    assert r.runs == 2 and r.last_run_s > 0 and r.total_run_s >= r.last_run_s
    r.deactivate()
    with pytest.raises(BackendError, match="before activate"):
        r.run(feeds)


def test_outputs_match_a_plain_session(tokens_bundle):
    feeds = prefill_inputs(tokens_bundle)
    plain = ort.InferenceSession(str(tokens_bundle / "prefill.onnx"), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in plain.get_outputs()], plain.run(None, feeds), strict=True))
    with runner(tokens_bundle, "prefill") as r:
        got = r.run(feeds)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.pop("input_ids"), "missing \\['input_ids'\\]"),
        (lambda f: f.update(extra=np.zeros(1)), "unexpected \\['extra'\\]"),
        (lambda f: f.update(input_ids=f["input_ids"].astype(np.int32)), "dtype int32, manifest says int64"),
        (lambda f: f.update(input_ids=f["input_ids"][0]), "rank 1"),
        (lambda f: f.update(image_embeds=f["image_embeds"][:, :2]), "does not fit"),
    ],
)
def test_inputs_are_checked_against_the_manifest(tokens_bundle, change, message):
    feeds = prefill_inputs(tokens_bundle)
    change(feeds)
    with runner(tokens_bundle, "prefill") as r, pytest.raises(BackendError, match=message) as err:
        r.run(feeds)
    assert "\n" not in str(err.value)


def test_host_outputs_reuse_buffers_when_input_shapes_repeat(tokens_bundle):
    feeds = prefill_inputs(tokens_bundle)
    other = dict(feeds, input_ids=np.array([[1, 8, 9, 10, 11]], dtype=np.int64))
    plain = ort.InferenceSession(str(tokens_bundle / "prefill.onnx"), providers=["CPUExecutionProvider"])
    with runner(tokens_bundle, "prefill") as r:
        first = r.run(feeds)["action_logits"]
        second = r.run(other)["action_logits"]
        assert second is first, "same input shapes should write into the same host buffer"
        np.testing.assert_array_equal(second, plain.run(["action_logits"], other)[0])
        longer = dict(feeds, input_ids=np.array([[1, 4, 5]], dtype=np.int64))
        assert r.run(longer)["action_logits"] is not first


def test_kept_outputs_stay_resident_and_feed_the_next_graph(tokens_bundle):
    feeds = prefill_inputs(tokens_bundle)
    with runner(tokens_bundle, "prefill") as pre, runner(tokens_bundle, "decode") as dec:
        keep = tuple(n for n in pre.spec.output_names if n.startswith("present."))
        out = pre.run(feeds, keep)
        assert all(isinstance(out[k], ort.OrtValue) for k in keep)
        assert isinstance(out["action_logits"], np.ndarray)
        assert pre.describe(out["present.0.key"]) == ("float32", (1, 1, 9, 4))  # N=4 + T=5
        past = {k.replace("present.", "past_key_values."): out[k] for k in keep}
        step = {"input_ids": np.array([[250]], np.int64), "position_ids": np.array([[9]], np.int64)}
        resident = dec.run({**step, **past}, keep)
        host = dec.run({**step, **{k: pre.fetch(v) for k, v in past.items()}})
        np.testing.assert_array_equal(resident["action_logits"], host["action_logits"])
        np.testing.assert_array_equal(dec.fetch(resident["present.1.value"]), host["present.1.value"])
        assert dec.describe(resident["present.1.value"])[1] == (1, 1, 10, 4)


def test_keeping_an_undeclared_output_is_refused(tokens_bundle):
    with runner(tokens_bundle, "prefill") as r, pytest.raises(BackendError, match="no output"):
        r.run(prefill_inputs(tokens_bundle), keep=("logits",))


def test_threads_and_spinning_reach_the_session(tokens_bundle):
    with runner(tokens_bundle, "vision", threads=1) as r:
        assert r._session.get_session_options().intra_op_num_threads == 1
        assert r._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_registry_finds_backends_by_naming_convention():
    assert backend_class("onnxrt") is OrtBackend
    missing = backend_class("nosuch")
    assert isinstance(missing, str) and "nosuch" in missing


def test_auto_picks_the_best_available_and_says_which(tokens_bundle, caplog):
    specs = list(load_manifest(tokens_bundle).graphs.values())
    with caplog.at_level(logging.INFO, logger="vla_runtime.runtime.backends"):
        chosen = select("auto", specs)
    expected = next(d for d in ("tensorrt", "cuda", "cpu") if OrtBackend.probe(d) is None)
    assert chosen.device == expected and chosen.cls is OrtBackend
    assert f"picked {expected}" in caplog.text


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA EP is present here")
def test_cuda_without_the_gpu_build_names_the_fix(tokens_bundle):
    specs = list(load_manifest(tokens_bundle).graphs.values())
    with pytest.raises(BackendError) as err:
        select("cuda", specs)
    text = str(err.value)
    assert "CUDAExecutionProvider" in text and "pip install onnxruntime-gpu" in text and "--backend cpu" in text
    assert "\n" not in text


def test_unknown_backend_name_is_refused(tokens_bundle):
    with pytest.raises(BackendError, match="auto, tensorrt, cuda, cpu"):
        select("gpu", load_manifest(tokens_bundle).graphs.values())


def test_engines_need_the_native_runner(tokens_bundle):
    spec = dataclasses.replace(load_manifest(tokens_bundle).graphs["vision"], format="tensorrt")
    native = backend_class("tensorrt")
    if not isinstance(native, str) and native.probe("tensorrt") is None:
        pytest.skip("TensorRT is usable here; the refusal path cannot be shown")
    with pytest.raises(BackendError, match="requested but unusable"):
        select("tensorrt", [spec])
    with pytest.raises(BackendError, match="no backend can run this bundle"):
        select("auto", [spec])


def test_cpu_only_int8_graphs_never_go_to_tensorrt(tokens_bundle):
    spec = dataclasses.replace(load_manifest(tokens_bundle).graphs["vision"], precision="int8-cpu")
    assert "int8-cpu" in OrtBackend.check_graph(spec, "tensorrt")
    assert OrtBackend.check_graph(spec, "cpu") is None


def test_tensorrt_provider_options_follow_graph_precision(tokens_bundle, tmp_path):
    spec = load_manifest(tokens_bundle).graphs["prefill"]
    for precision, gpu_fp16, fp16, int8 in (("fp32", True, True, False), ("fp32", False, False, False),
                                            ("fp16", False, True, False), ("int8", True, True, True)):
        r = OrtBackend(dataclasses.replace(spec, precision=precision), tokens_bundle / spec.file, "tensorrt",
                       BackendOptions(engine_cache_dir=tmp_path, device_id=1, gpu_fp16=gpu_fp16))
        opts = r._tensorrt_options()
        assert (opts["trt_fp16_enable"], opts["trt_int8_enable"]) == (fp16, int8)
        assert opts["device_id"] == 1 and opts["trt_engine_cache_enable"] is True
        assert Path(opts["trt_engine_cache_path"]) == tmp_path / "prefill"
        providers = [p if isinstance(p, str) else p[0] for p in r._providers()]
        assert providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_providers_match_cpu(tokens_bundle, device, tmp_path):
    if OrtBackend.probe(device) is not None:
        pytest.skip(OrtBackend.probe(device))
    feeds = prefill_inputs(tokens_bundle)
    with runner(tokens_bundle, "prefill") as cpu, runner(tokens_bundle, "prefill", device,
                                                          engine_cache_dir=tmp_path) as gpu:
        want, got = cpu.run(feeds), gpu.run(feeds, keep=("present.0.key",))
        assert "cuda" in got["present.0.key"].device_name().lower()
        np.testing.assert_allclose(got["action_logits"], want["action_logits"], rtol=1e-3, atol=1e-3)


def test_gpu_probe_answers_without_torch():
    """In a fresh interpreter: a GPU's name and compute capability, or one line saying why not."""
    code = ("import sys; from vla_runtime.runtime.backends import device; "
            "print(repr(device.gpu_info())); print('torch' in sys.modules)")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           check=True).stdout.splitlines()
    found = ast.literal_eval(lines[0])
    assert lines[1] == "False", "probing the GPU imported torch"
    if isinstance(found, str):
        assert found and "\n" not in found and any(w in found for w in ("driver", "GPU", "CUDA"))
    else:
        name, capability = found
        assert name and re.fullmatch(r"\d+\.\d+", capability), found


def test_tensorrt_profiles_cover_prompt_and_kv_cache_ranges(tmp_path):
    from vla_runtime.runtime.backends.profiles import bundle_profiles

    tokens = load_manifest(build_zoo_bundle(tmp_path / "t", "tokens", dim=4))  # N=4, max_tokens=16
    profiles = bundle_profiles(tokens, dynamic_only=True)
    steps = tokens.action.dim * tokens.action.horizon  # greedy tokens after the prompt
    assert profiles["prefill"] == {"input_ids": ((1, 1), (1, 8), (1, 16))}
    assert set(profiles["decode"]) == {f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")}
    assert profiles["decode"]["past_key_values.0.key"] == ((1, 1, 5, 4), (1, 1, 12 + steps // 2, 4),
                                                            (1, 1, 20 + steps, 4))
    assert "vision" not in profiles  # static shapes need no profile
    flow = bundle_profiles(load_manifest(build_zoo_bundle(tmp_path / "f", "flow")), dynamic_only=True)
    assert flow["velocity"] == {"context": ((1, 5, 8), (1, 12, 8), (1, 20, 8))}

    spec = tokens.graphs["decode"]
    r = OrtBackend(spec, tmp_path / "t" / spec.file, "tensorrt", BackendOptions(profiles=profiles))
    opts = r._tensorrt_options()
    assert opts["trt_profile_min_shapes"].startswith("past_key_values.0.key:1x1x5x4,")
    assert opts["trt_profile_max_shapes"].count(f"x{20 + steps}x") == 4
