"""Reading LeRobot pi0 / pi0.5 checkpoints, and our torch graphs against LeRobot's recorded chunks.

The fixtures under tests/fixtures/lerobot/ were written by LeRobot 0.6.1 itself
(`make_fixtures.py` in its own venv): tiny random policies saved in LeRobot's layout plus the
action chunks its `predict_action_chunk` / `select_action` returned for fixed inputs and noise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the exporter needs torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="checkpoints are safetensors")

from vla_runtime.common.errors import UserError  # noqa: E402
from vla_runtime.export.lerobot_checkpoint import read_checkpoint  # noqa: E402
from vla_runtime.export.lerobot_pi0 import build_pi0  # noqa: E402
from vla_runtime.runtime.conventions import flow_time_embedding  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "lerobot"


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_reads_layout_sizes_and_statistics(kind):
    ckpt = read_checkpoint(FIXTURES / kind)
    assert ckpt.kind == kind
    assert ckpt.cameras == ("front", "wrist")
    assert (ckpt.state_dim, ckpt.action_dim, ckpt.chunk_size, ckpt.num_steps) == (7, 7, 8, 10)
    s = ckpt.sizes
    assert (s.width, s.expert_width, s.layers, s.heads, s.kv_heads, s.head_dim) == (32, 16, 2, 8, 1, 8)
    assert (s.vision_width, s.patch, ckpt.image_size) == (32, 8, 32)
    mode = "MEAN_STD" if kind == "pi0" else "QUANTILES"
    assert ckpt.state_stats.mode == ckpt.action_stats.mode == mode
    stats = safetensors_numpy.load_file(str(next((FIXTURES / kind).glob("policy_postprocessor_*.safetensors"))))
    for name, values in ckpt.action_stats.stats.items():
        np.testing.assert_array_equal(values, stats[f"action.{name}"].astype(np.float64))


def test_reads_pre_0_4_statistics_inside_the_model_file(tmp_path):
    """Old checkpoints: no processor files, normalize_inputs.buffer_* tensors in model.safetensors."""
    src = FIXTURES / "pi0"
    stats = safetensors_numpy.load_file(str(next(src.glob("policy_preprocessor_*.safetensors"))))
    weights = safetensors_numpy.load_file(str(src / "model.safetensors"))
    for key, value in stats.items():
        feature, stat = key.rsplit(".", 1)
        prefix = "unnormalize_outputs" if feature == "action" else "normalize_inputs"
        weights[f"{prefix}.buffer_{feature.replace('.', '_')}.{stat}"] = value
    safetensors_numpy.save_file(weights, str(tmp_path / "model.safetensors"))
    shutil.copy(src / "config.json", tmp_path / "config.json")
    old, new = read_checkpoint(tmp_path), read_checkpoint(src)
    for name in ("mean", "std"):
        np.testing.assert_array_equal(old.state_stats.stats[name], new.state_stats.stats[name])
        np.testing.assert_array_equal(old.action_stats.stats[name], new.action_stats.stats[name])


def test_reads_bf16_weights_as_float32(tmp_path):
    """LeRobot saves dtype "bfloat16" policies in bf16, which numpy cannot hold."""
    from safetensors.torch import load_file, save_file

    src = FIXTURES / "pi05"
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, tmp_path / f.name)
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, str(tmp_path / "model.safetensors"))
    ckpt = read_checkpoint(tmp_path)
    name = "model.action_out_proj.weight"
    assert ckpt.weights[name].dtype == np.float32
    np.testing.assert_array_equal(ckpt.weights[name], weights[name].to(torch.bfloat16).float().numpy())


def test_refuses_what_it_cannot_export_in_one_line(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        read_checkpoint(tmp_path / "missing")
    config = json.loads((FIXTURES / "pi0" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "type": "smolvla"}))
    with pytest.raises(UserError, match="SmolVLA is not supported yet"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "use_relative_actions": True}))
    with pytest.raises(UserError, match="use_relative_actions"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="model.safetensors: not found"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_torch_graphs_reproduce_lerobots_normalized_chunk(kind):
    """Our modules (transformers' SigLIP/Gemma pieces, explicit masks) step for step as LeRobot."""
    torch.set_num_threads(1)
    ckpt = read_checkpoint(FIXTURES / kind)
    vision, prefix, expert = build_pi0(ckpt)
    ref = np.load(FIXTURES / f"{kind}_reference.npz", allow_pickle=False)
    state_in = ckpt.state_stats.stats
    with torch.no_grad():
        for case in ("0", "1"):
            pixels = [torch.from_numpy(ref[f"{case}/image.{c}"]).permute(2, 0, 1)[None].float() / 255 * 2 - 1
                      for c in ckpt.cameras]
            ids, pad = (torch.from_numpy(ref[f"{case}/{k}"])[None] for k in ("input_ids", "attention_mask"))
            kv = prefix(torch.cat([vision(p) for p in pixels], dim=1), ids, pad)
            prefix_mask = torch.cat([torch.ones(1, kv[0].shape[2] - pad.shape[1], dtype=torch.long), pad], dim=1)
            raw = ref[f"{case}/state"].astype(np.float64)
            state = torch.zeros(1, ckpt.max_state_dim)
            state[0, : ckpt.state_dim] = torch.from_numpy((raw - state_in["mean"]) / (state_in["std"] + 1e-8))
            x = torch.from_numpy(ref[f"{case}/noise"])
            dt = -1.0 / ckpt.num_steps
            for k in range(ckpt.num_steps):
                emb = torch.from_numpy(flow_time_embedding(1.0 + k * dt, ckpt.sizes.expert_width, *ckpt.periods))
                v = expert(*kv, prefix_mask, x, emb) if kind == "pi05" else expert(*kv, prefix_mask, state, x, emb)
                x = x + dt * v
            err = np.abs(x[0, :, : ckpt.action_dim].numpy() - ref[f"{case}/chunk_normalized"]).max()
            assert err < 1e-5, f"{kind} case {case}: max abs error {err:.2e} against LeRobot"
