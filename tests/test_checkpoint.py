"""Checkpoint directories: save, load, clear errors, and a full build from `--checkpoint DIR`.

The checkpoint here is a variant no preset produces (parallel head conditioned on the
previous action, mean/std statistics), so the build must take everything from the files.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from vla_runtime.export.checkpoint import CheckpointError, from_config, load_checkpoint, save_checkpoint
from vla_runtime.export.cli import main as export_main
from vla_runtime.export.norm_stats import EE_DELTA_NAMES, EE_DELTA_UNITS, NormStats
from vla_runtime.export.presets import preset_config
from vla_runtime.runtime.cli import main as runtime_main
from vla_runtime.runtime.manifest import load_manifest

STATS = NormStats(
    kind="mean_std",
    names=EE_DELTA_NAMES,
    units=EE_DELTA_UNITS,
    mean=(0.001, -0.002, 0.0, 0.0, 0.01, -0.01, 0.5),
    std=(0.01, 0.01, 0.02, 0.05, 0.05, 0.05, 0.5),
    mask=(True,) * 6 + (False,),
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = dataclasses.replace(preset_config("tiny", "parallel"), condition_on_past_action=True)
    source = from_config(cfg, seed=5, norm=STATS)
    return source, save_checkpoint(source, tmp_path_factory.mktemp("ckpt") / "my-policy")


def test_round_trip_restores_every_weight(checkpoint):
    source, path = checkpoint
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "model.safetensors", "norm_stats.json", "tokenizer.json"
    ]
    doc = json.loads((path / "config.json").read_text())
    assert doc["model_type"] == "paligemma" and doc["vla_runtime"]["condition_on_past_action"] is True
    loaded = load_checkpoint(path)
    assert loaded.cfg.head == "parallel" and loaded.norm == STATS
    ours, theirs = source.model.state_dict(), loaded.model.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_bad_checkpoints_fail_in_one_line(checkpoint, tmp_path):
    _, path = checkpoint
    with pytest.raises(CheckpointError, match="has a 'parallel' head but --head flow"):
        load_checkpoint(path, head="flow")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "norm_stats.json"):
        (broken / name).write_bytes((path / name).read_bytes())
    with pytest.raises(CheckpointError, match="model.safetensors: missing"):
        load_checkpoint(broken)
    doc = json.loads((path / "config.json").read_text())
    doc["text_config"]["hidden_size"] = 96  # weights no longer fit the architecture
    doc["text_config"]["intermediate_size"] = 96
    (broken / "config.json").write_text(json.dumps(doc))
    (broken / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor '.+' has shape \[64, 64\] but config.json "
                       r"expects \[64, 96\]"):
        load_checkpoint(broken)


def test_cli_builds_and_verifies_from_checkpoint(checkpoint, tmp_path, capsys):
    _, path = checkpoint
    out = tmp_path / "bundle"
    assert export_main(["build", "--head", "parallel", "--checkpoint", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity: PASSED" in printed and "bins identical" in printed
    manifest = load_manifest(out)
    assert manifest.model["source"] == "checkpoint my-policy"
    assert manifest.decode.condition_on_past_action
    assert [t.name for t in manifest.graphs["head"].inputs] == ["pooled", "past_action"]
    assert manifest.action.normalization.kind == "mean_std" and manifest.action.normalization.std == STATS.std
    assert runtime_main(["inspect", str(out)]) == 0
    capsys.readouterr()
    assert export_main(["verify", str(out), "--checkpoint", str(path)]) == 0
    assert "parity: PASSED" in capsys.readouterr().out
    # Without the checkpoint the source cannot be rebuilt: hashes are checked and the graphs run.
    assert export_main(["verify", str(out)]) == 0
    assert "graphs: ran once, actions finite" in capsys.readouterr().out
    original = (out / "head.onnx").read_bytes()
    (out / "head.onnx").write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert export_main(["verify", str(out)]) == 2
    assert "error: head.onnx: sha256 does not match" in capsys.readouterr().err
    (out / "head.onnx").write_bytes(original)
    # The bundle is not empty now: a second build must refuse without --force.
    assert export_main(["build", "--head", "parallel", "--checkpoint", str(path), "--out", str(out)]) == 2
    assert "not empty; pass --force" in capsys.readouterr().err


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert export_main(["build", "--head", "tokens", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "config.json: missing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()
