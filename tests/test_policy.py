"""load_policy end to end: refusals, reuse across ticks, taps, and parity with independent paths.

Zoo bundles (hand-built graphs with numpy twins) keep most tests fast; the exporter's tiny
bundles are compared against a naive pipeline built only from the manifest, transformers'
image processor, `tokenizers` and plain onnxruntime sessions that copy the KV cache through
numpy every step.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnxruntime as ort
import pytest
from test_decoders import numpy_flow
from test_policy_zoo import build_zoo_bundle, numpy_prefix
from tokenizers import Tokenizer
from vla_runtime.runtime.backends import BackendError
from vla_runtime.runtime.bundle import BundleError
from vla_runtime.runtime.conventions import ActionTokens, bin_centres
from vla_runtime.runtime.manifest import load_manifest
from vla_runtime.runtime.policy import BundlePolicy, load_policy
from vla_runtime.runtime.types import ActionChunk, Frame

TASK = "pick up the red block"
ROLE = {"tokens": "decode", "parallel": "head", "flow": "velocity"}


def frame(seed=0, shape=(48, 64, 3)):
    return Frame(image=np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), t_capture=12.5)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {h: build_zoo_bundle(root / h, h, dim=4, horizon=3) for h in ("tokens", "parallel", "flow")}


@pytest.mark.parametrize("head", ["tokens", "parallel", "flow"])
def test_infer_returns_a_physical_chunk_and_model_space_actions(zoo, head):
    with load_policy(zoo[head], threads=1) as policy:
        chunk = policy.infer(frame(), TASK)
        m = policy.manifest
        h = m.action.horizon
        assert isinstance(policy, BundlePolicy) and policy.backend_name == "cpu"
        assert isinstance(chunk, ActionChunk) and chunk.actions.shape == (h, 4) and chunk.actions.dtype == np.float64
        assert chunk.names == m.action.names and chunk.t_obs == 12.5
        assert policy.last_normalized.dtype == np.float32 and policy.last_normalized.shape == (h, 4)
        if head == "flow":
            assert policy.last_bins is None
        else:
            assert policy.last_bins.shape == (h, 4)
            np.testing.assert_array_equal(policy.last_normalized, bin_centres(256)[policy.last_bins])
        n = m.action.normalization
        low, high = np.array(n.low), np.array(n.high)
        want = 0.5 * (policy.last_normalized.astype(np.float64) + 1) * (high - low) + low
        want[:, ~np.array(n.mask)] = policy.last_normalized[:, ~np.array(n.mask)]
        np.testing.assert_allclose(chunk.actions, want, rtol=1e-6, atol=1e-9)
        assert set(policy.stage_times) == {"preprocess", "tokenize", "vision", "prefill", ROLE[head], "decode_actions"}
        assert all(v >= 0 for v in policy.stage_times.values())


@pytest.mark.parametrize("head", ["parallel", "flow"])
def test_zoo_policy_matches_numpy_end_to_end(zoo, head):
    policy = load_policy(zoo[head], threads=1)
    w = dict(np.load(zoo[head] / "weights.npz"))
    m = policy.manifest
    rng = np.random.default_rng(m.decode.noise_seed)
    for seed in range(2):
        f = frame(seed)
        policy.infer(f, TASK)
        pixels = policy.preprocess(f.image).astype(np.float64)
        pre = numpy_prefix(w, pixels, policy.tokenize(TASK))
        if head == "parallel":
            logits = (pre["pooled"] @ w["wp"]).reshape(3, 4, 256)
            np.testing.assert_array_equal(policy.last_bins, logits.argmax(-1))
        else:
            want = numpy_flow(w, pre["hidden_states"], rng.standard_normal((3, 4)), m.decode.flow_steps)
            np.testing.assert_allclose(policy.last_normalized, want, rtol=1e-4, atol=1e-5)


def test_sessions_buffers_and_prompt_ids_are_reused_across_ticks(zoo):
    policy = load_policy(zoo["tokens"], threads=1)
    runners = dict(policy._runners)
    policy.infer(frame(0), TASK)
    pixels, ids = policy.preprocess(frame(0).image), policy.tokenize(TASK)
    for seed in range(3):
        policy.infer(frame(seed), TASK)
    assert policy._runners == runners and all(r.active for r in runners.values())
    assert runners["vision"].runs == 4 and runners["decode"].runs == 4 * 3
    assert policy.preprocess(frame(1).image) is pixels and policy.tokenize(TASK) is ids
    policy.close()
    assert not any(r.active for r in runners.values())


@pytest.mark.parametrize("head", ["tokens", "flow"])
def test_graph_tap_sees_every_graph_call_with_private_copies(zoo, head):
    policy = load_policy(zoo[head], threads=1)
    seen = []

    def tap(role, inputs):
        assert all(isinstance(v, np.ndarray) for v in inputs.values())
        seen.append((role, {k: v.copy() for k, v in inputs.items()}))
        for v in inputs.values():
            v[...] = 0  # a careless tap must not corrupt the inference

    policy.infer(frame(), TASK)
    clean = policy.last_normalized.copy()
    policy2 = load_policy(zoo[head], threads=1)
    policy2.graph_tap = tap
    policy2.infer(frame(), TASK)
    np.testing.assert_array_equal(policy2.last_normalized, clean)
    roles = [r for r, _ in seen]
    if head == "tokens":
        assert roles == ["vision", "prefill"] + ["decode"] * 3
        past = [i["past_key_values.0.key"].shape[2] for r, i in seen if r == "decode"]
        assert past == [past[0], past[0] + 1, past[0] + 2]
    else:
        steps = policy2.manifest.decode.flow_steps
        assert roles == ["vision", "prefill"] + ["velocity"] * steps
        times = [float(i["timestep"][0]) for r, i in seen if r == "velocity"]
        np.testing.assert_allclose(times, [1 - k / steps for k in range(steps)], rtol=1e-6)


def test_failed_gate_is_refused_unless_allowed(tmp_path, caplog):
    bundle = build_zoo_bundle(tmp_path / "g", "parallel", gate={"passed": False, "summary": "bin agreement 0.91"})
    with pytest.raises(BundleError, match="--allow-failed-gate") as err:
        load_policy(bundle)
    assert "bin agreement 0.91" in str(err.value) and "\n" not in str(err.value)
    with caplog.at_level(logging.WARNING):
        load_policy(bundle, allow_failed_gate=True).infer(frame(), TASK)
    assert "FAILED" in caplog.text


def test_engines_for_another_target_are_refused_in_one_line(tmp_path):
    target = {"kind": "tensorrt", "gpu_name": "Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0"}
    bundle = build_zoo_bundle(tmp_path / "t", "flow", target=target)
    with pytest.raises(BundleError, match="TensorRT") as err:
        load_policy(bundle)
    assert "\n" not in str(err.value)


def test_tampered_bundle_is_refused_before_any_session(tmp_path):
    bundle = build_zoo_bundle(tmp_path / "x", "tokens")
    data = bytearray((bundle / "decode.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bundle / "decode.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="decode.onnx: sha256 does not match"):
        load_policy(bundle)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA EP is present here")
def test_cuda_backend_without_gpu_build_is_one_line_with_the_fix(zoo):
    with pytest.raises(BackendError, match="pip install onnxruntime-gpu") as err:
        load_policy(zoo["parallel"], backend="cuda")
    assert "--backend cpu" in str(err.value) and "\n" not in str(err.value)


def test_bad_frame_is_refused(zoo):
    with pytest.raises(ValueError, match="uint8"):
        load_policy(zoo["parallel"]).infer(Frame(np.zeros((8, 8, 3), np.float32), 0.0), TASK)


# ------------------------------------------------------------------------------------------
# The exporter's tiny bundles against a naive pipeline that shares no code with the runtime.
# ------------------------------------------------------------------------------------------


def naive_actions(bundle, image: np.ndarray, task: str) -> np.ndarray:
    """Normalised actions [H, D] from the manifest, transformers, tokenizers and session.run."""
    from transformers.image_utils import PILImageResampling
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    doc = json.loads((bundle / "manifest.json").read_text())
    pre, prompt, action, dec = doc["preprocess"], doc["prompt"], doc["action"], doc["decode"]
    proc = SiglipImageProcessorPil(
        size={"height": pre["image_size"], "width": pre["image_size"]},
        resample=getattr(PILImageResampling, pre["resample"].upper()),
        image_mean=pre["image_mean"], image_std=pre["image_std"], rescale_factor=pre["rescale_factor"],
    )
    pixels = np.asarray(proc(images=image, return_tensors="np")["pixel_values"], dtype=np.float32)
    tok = Tokenizer.from_file(str(bundle / prompt["tokenizer_file"]))
    ids = tok.encode(prompt["template"].format(task=task), add_special_tokens=False).ids
    ids = np.array([([prompt["bos_token_id"]] if prompt["bos_token_id"] is not None else []) + ids], np.int64)
    ids = ids[:, : prompt["max_tokens"]]
    sess = {r: ort.InferenceSession(str(bundle / g["file"]), providers=["CPUExecutionProvider"])
            for r, g in doc["graphs"].items()}

    def run(role, feeds):
        names = [o.name for o in sess[role].get_outputs()]
        return dict(zip(names, sess[role].run(None, feeds), strict=True))

    embeds = run("vision", {"pixel_values": pixels})["image_embeds"]
    prefix = run("prefill", {"image_embeds": embeds, "input_ids": ids})
    centres = bin_centres(action["bins"])  # the formula is pinned to literal values in test_conventions
    tokens = ActionTokens(action["bins"], action["action_token_offset"], action.get("action_token_order", "ascending"))
    if dec["head"] == "tokens":
        past = {k.replace("present.", "past_key_values."): v for k, v in prefix.items() if k.startswith("present.")}
        logits, bins, plen = prefix["action_logits"], [], embeds.shape[1] + ids.shape[1]
        for k in range(action["dim"]):
            if k:
                out = run("decode", {"input_ids": np.array([[tokens.token_id(bins[-1])]]),
                                     "position_ids": np.array([[plen + k - 1]]), **past})
                logits = out["action_logits"]
                past = {k2.replace("present.", "past_key_values."): v for k2, v in out.items() if "present." in k2}
            bins.append(int(np.argmax(logits[0])))
        return centres[np.array([bins])]
    if dec["head"] == "parallel":
        feeds = {"pooled": prefix["pooled"]}
        if dec.get("condition_on_past_action"):
            feeds["past_action"] = np.zeros((1, action["dim"]), np.int64)
        return centres[run("head", feeds)["action_logits"][0].argmax(-1)]
    x = np.random.default_rng(dec["noise_seed"]).standard_normal((action["horizon"], action["dim"]))
    x = x.astype(np.float32)[None]
    for k in range(dec["flow_steps"]):
        t = np.array([1 - k / dec["flow_steps"]], np.float32)
        v = run("velocity", {"context": prefix["hidden_states"], "noisy_actions": x, "timestep": t})["velocity"]
        x = x - np.float32(1 / dec["flow_steps"]) * v
    return x[0]


@pytest.mark.parametrize("head", ["tokens", "parallel", "flow"])
def test_tiny_bundle_matches_the_naive_pipeline(tiny_bundle, head):
    bundle = tiny_bundle(head)
    image = frame(3, (120, 160, 3)).image
    with load_policy(bundle, backend="auto", exact_preprocess=True) as policy:  # PIL's pixels, bit for bit
        chunk = policy.infer(Frame(image, 0.0), TASK)
        m = load_manifest(bundle)
        assert chunk.actions.shape == (m.action.horizon, m.action.dim)
        want = naive_actions(bundle, image, TASK)
        if head == "flow":
            np.testing.assert_allclose(policy.last_normalized, want, rtol=1e-4, atol=1e-4)
        else:
            np.testing.assert_array_equal(policy.last_normalized, want.astype(np.float32))
        assert np.isfinite(chunk.actions).all()


@pytest.mark.parametrize(
    "gpu, trt, problem",
    [
        (("Orin", "8.7"), "10.3.0.30", None),
        (("RTX 4090", "8.9"), "10.3.0", "compute capability 8.9"),
        (("Orin", "8.7"), "10.4.1", "built with TensorRT 10.3.0, this device has TensorRT 10.4.1"),
        (("Orin", "8.7"), None, "tensorrt Python package is not installed"),
        ("no NVIDIA driver (libcuda) on this machine", "10.3.0", "no NVIDIA driver"),
    ],
)
def test_target_check_compares_gpu_and_tensorrt_release(monkeypatch, gpu, trt, problem):
    from vla_runtime.runtime import policy as policy_module
    from vla_runtime.runtime.backends import device
    from vla_runtime.runtime.manifest import Target

    # The probes read the real driver and TensorRT; here they are pinned to show each verdict on CPU CI.
    monkeypatch.setattr(device, "gpu_info", lambda device_id=0: gpu)
    monkeypatch.setattr(device, "tensorrt_version", lambda: trt)
    target = Target(kind="tensorrt", gpu_name="Orin", compute_capability="8.7", tensorrt_version="10.3.0")
    if problem is None:
        policy_module.check_target(target)
        return
    with pytest.raises(BundleError, match=problem) as err:
        policy_module.check_target(target)
    assert "\n" not in str(err.value)
    policy_module.check_target(Target(kind="cpu"))  # a portable bundle runs anywhere
