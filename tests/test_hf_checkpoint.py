"""Hugging Face PaliGemma checkpoints: every hyper-parameter from config.json, parity against transformers.

The checkpoints are written by transformers' own `save_pretrained` (sharded, with an index) with
rope_theta, both norm epsilons and max_position_embeddings away from their defaults, a Gemma-style
tokenizer trained here, and a hand-written head file (tests/hf_layout.py). The reference parity
compares with is what transformers itself loads from the directory, so a hyper-parameter the
exporter ignored must fail the build: one test forces rope_theta back to its default and shows it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hf_layout import HYPER, write_checkpoint
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from transformers import PaliGemmaForConditionalGeneration
from vla_runtime.export import hf_checkpoint
from vla_runtime.export.checkpoint import CheckpointError, load_checkpoint
from vla_runtime.export.cli import main as export_main
from vla_runtime.runtime.conventions import ActionTokens
from vla_runtime.runtime.manifest import load_manifest
from vla_runtime.runtime.policy import load_policy
from vla_runtime.runtime.types import Frame

# OpenVLA: 255 bins counted down from the tokenizer's last id.
OPENVLA = {"bins": 255, "action_tokens": {"convention": "from_end"}}
# RT-2: the last 256 ids; the conditioned parallel head embeds the previous action through them.
RT2 = {"action_tokens": {"convention": "last_ids"}, "condition_on_past_action": True}


@pytest.fixture(scope="module")
def tokens_ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("hf") / "paligemma-openvla", "tokens", OPENVLA)


@pytest.fixture(scope="module")
def parallel_ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("hf") / "paligemma-rt2", "parallel", RT2)


def test_layout_is_sharded_with_an_index_and_non_default_hyper_parameters(tokens_ckpt):
    names = {p.name for p in tokens_ckpt.iterdir()}
    assert "model.safetensors.index.json" in names and "model.safetensors" not in names
    assert len([n for n in names if n.startswith("model-0")]) >= 3
    doc = json.loads((tokens_ckpt / "config.json").read_text())
    text = doc["text_config"]
    assert text["rope_parameters"]["rope_theta"] == HYPER["rope_theta"] != 10000.0
    assert text["rms_norm_eps"] == HYPER["rms_norm_eps"] and doc["vision_config"]["layer_norm_eps"] == 0.05


def test_every_hyper_parameter_and_weight_comes_from_the_checkpoint(tokens_ckpt):
    source = load_checkpoint(tokens_ckpt, head="tokens")
    theirs = PaliGemmaForConditionalGeneration.from_pretrained(str(tokens_ckpt), local_files_only=True)
    ours = source.model.vlm
    for mine, ref in ((ours.config.text_config, theirs.config.text_config),
                      (ours.config.vision_config, theirs.config.vision_config)):
        a, b = mine.to_dict(), ref.to_dict()
        a.pop("dtype"), b.pop("dtype")  # the dtype weights were loaded in, not a hyper-parameter
        assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    text = ours.config.text_config
    assert text.rope_parameters["rope_theta"] == HYPER["rope_theta"]
    assert text.max_position_embeddings == HYPER["max_position_embeddings"]
    assert text.rms_norm_eps == ours.model.language_model.norm.eps == HYPER["rms_norm_eps"]
    assert ours.model.vision_tower.post_layernorm.eps == HYPER["vision_layer_norm_eps"]
    ref_state = theirs.state_dict()
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, ref_state[name]), name
    vocab = source.tokenizer.get_vocab_size()
    assert source.model.tokens == ActionTokens.from_end(vocab, 255)  # from the head file, not <act_i> names
    assert source.tokenizer.token_to_id("<act_0>") is None


def test_cli_builds_openvla_tokens_bundle_and_parity_holds(tokens_ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert export_main(["build", "--head", "tokens", "--checkpoint", str(tokens_ckpt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity: PASSED" in printed and "bins identical" in printed
    manifest = load_manifest(out)
    assert "from_pretrained" in manifest.parity["reference_model"]
    size = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size()
    a = manifest.action
    assert (a.bins, a.action_token_order, a.action_token_offset) == (255, "descending", size - 1)
    edges = np.linspace(-1.0, 1.0, 256)  # OpenVLA: 255 centres between 256 uniform edges
    np.testing.assert_allclose(a.bin_centres, (edges[:-1] + edges[1:]) / 2, atol=1e-7)
    with load_policy(out, backend="cpu") as policy:  # the robot decodes from the manifest's convention
        policy.infer(Frame(image=np.full((48, 64, 3), 120, np.uint8), t_capture=0.0), "pick up the red block")
        assert policy.last_bins.shape == (1, 7) and (policy.last_bins < 255).all()
        np.testing.assert_array_equal(policy.last_normalized, np.float32(a.bin_centres)[policy.last_bins])
    capsys.readouterr()
    assert export_main(["verify", str(out), "--checkpoint", str(tokens_ckpt)]) == 0  # again, from the directory
    assert "parity: PASSED" in capsys.readouterr().out


def test_cli_builds_rt2_parallel_bundle_from_head_file(parallel_ckpt, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert export_main(["build", "--head", "parallel", "--checkpoint", str(parallel_ckpt), "--out", str(out)]) == 0
    assert "parity: PASSED" in capsys.readouterr().out
    manifest = load_manifest(out)
    assert (manifest.action.bins, manifest.action.action_token_order) == (256, "ascending")
    assert manifest.decode.condition_on_past_action is True and manifest.action.horizon == 2


def test_an_ignored_hyper_parameter_fails_parity(tokens_ckpt, tmp_path, monkeypatch, capsys):
    """Export with rope_theta forced to transformers' default: the true model disagrees, the build fails."""
    read = hf_checkpoint.read_backbone_config

    def forgetful(root):
        config = read(root)
        config.text_config.rope_parameters["rope_theta"] = 10000.0  # what a loader with defaults would use
        return config

    monkeypatch.setattr(hf_checkpoint, "read_backbone_config", forgetful)
    out = tmp_path / "bundle"
    assert export_main(["build", "--head", "tokens", "--checkpoint", str(tokens_ckpt), "--out", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # beside progress bars
    assert len(errors) == 1 and errors[0].startswith("error: parity failed: prefill max abs err"), errors
    assert not out.exists()


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _shard_of(root, name):
    return root / json.loads((root / "model.safetensors.index.json").read_text())["weight_map"][name]


def test_first_missing_or_mismatched_tensor_is_named_in_one_line(tokens_ckpt, tmp_path):
    name = "language_model.model.layers.1.mlp.up_proj.weight"  # as save_pretrained names it on disk
    bad = _copy(tokens_ckpt, tmp_path / "mismatch")
    shard = _shard_of(bad, name)
    tensors = load_file(str(shard))
    tensors[name] = torch.zeros(96, 64)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert str(info.value) == f"{shard}: tensor {name!r} has shape [96, 64] but config.json expects [128, 64]"

    gone = _copy(tokens_ckpt, tmp_path / "missing")
    index = json.loads((gone / "model.safetensors.index.json").read_text())
    shard = gone / index["weight_map"].pop(name)
    tensors = load_file(str(shard))
    del tensors[name]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    (gone / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json: no tensor "
                       r"'model.language_model.layers.1.mlp.up_proj.weight' \(expected shape \[128, 64\]"):
        load_checkpoint(gone)

    (gone / shard.name).unlink()
    with pytest.raises(CheckpointError, match=f"{shard.name}: missing; model.safetensors.index.json names it"):
        load_checkpoint(gone)


def test_other_key_spellings_and_a_single_file_load_like_from_pretrained(tokens_ckpt, tmp_path):
    """Hub checkpoints say vision_tower.vision_model.*; a plain state dict says model.language_model.*."""
    ref = load_checkpoint(tokens_ckpt).model.vlm.state_dict()
    hub = _copy(tokens_ckpt, tmp_path / "hub")
    index = json.loads((hub / "model.safetensors.index.json").read_text())
    renamed = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors = {k.replace("vision_tower.", "vision_tower.vision_model."): v
                   for k, v in load_file(str(hub / shard)).items()}
        renamed.update(dict.fromkeys(tensors, shard))
        save_file(tensors, str(hub / shard), metadata={"format": "pt"})
    (hub / "model.safetensors.index.json").write_text(json.dumps({"weight_map": renamed}))
    single = _copy(tokens_ckpt, tmp_path / "single")
    for p in single.glob("model*.safetensors*"):
        p.unlink()
    state = {k: v for k, v in ref.items() if k != "lm_head.weight"}  # tied to embed_tokens
    assert any(k.startswith("model.language_model.") for k in state)
    save_file(state, str(single / "model.safetensors"), metadata={"format": "pt"})
    for variant in (hub, single):
        ours = load_checkpoint(variant).model.vlm.state_dict()
        assert all(torch.equal(ours[k], ref[k]) for k in ref), variant.name


def test_bad_head_files_fail_in_one_line(parallel_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="has a 'parallel' head but --head flow was asked; pass --head parallel"):
        load_checkpoint(parallel_ckpt, head="flow")
    bad = _copy(parallel_ckpt, tmp_path / "bad")
    doc = json.loads((bad / "action_head.json").read_text())
    (bad / "action_head.json").write_text(json.dumps({**doc, "chunk": 4}))
    with pytest.raises(CheckpointError, match=r"action_head.json: unknown field\(s\) \['chunk'\]"):
        load_checkpoint(bad)
    (bad / "action_head.json").write_text(json.dumps({**doc, "action_tokens": {"convention": "middle"}}))
    with pytest.raises(CheckpointError, match="convention 'middle' is not one of"):
        load_checkpoint(bad)
    (bad / "action_head.json").write_text(json.dumps(doc))
    short = json.loads((parallel_ckpt / "config.json").read_text())
    short["text_config"]["max_position_embeddings"] = 40
    (bad / "config.json").write_text(json.dumps(short))
    with pytest.raises(CheckpointError, match=r"config.json: max_position_embeddings 40 is shorter than the longest "
                       r"sequence the bundle runs \(16 image \+ 48 prompt \+ 7 action positions\)"):
        load_checkpoint(bad)
    (bad / "config.json").write_text((parallel_ckpt / "config.json").read_text())
    (bad / "action_head.json").write_text(json.dumps({**doc, "head_hidden": 48}))
    with pytest.raises(CheckpointError, match=r"action_head.safetensors: tensor 'action_head.0.bias' has shape "
                       r"\[32\] but action_head.json expects \[48\]"):
        load_checkpoint(bad)


def test_sentencepiece_tokenizer_model_is_converted_and_encodes_like_sentencepiece(tokens_ckpt, tmp_path):
    spm = pytest.importorskip("sentencepiece", reason="tokenizer.model needs sentencepiece (pip install sentencepiece)")
    from hf_layout import gemma_sentencepiece

    ckpt = _copy(tokens_ckpt, tmp_path / "sp")
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "tokenizer.model").write_bytes(gemma_sentencepiece())
    processor = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    source = load_checkpoint(ckpt)
    shipped = Tokenizer.from_str(source.tokenizer.to_str())  # what the bundle's tokenizer.json will hold
    assert shipped.get_vocab_size() == processor.get_piece_size() == 400 and shipped.token_to_id("<bos>") == 2
    for text in ("What action should the robot take to pick up the red block?", "stack 3 cubes  twice", "Zürich ✓"):
        assert shipped.encode(text, add_special_tokens=False).ids == processor.encode(text), text
    assert source.model.tokens == ActionTokens.from_end(400, 255)

    import io

    other = io.BytesIO()  # a unigram model with a dummy prefix: not Gemma's, so refused rather than mis-encoded
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["pick up the red block"] * 50 + ["open the drawer"] * 50),
                                   model_writer=other, vocab_size=20, minloglevel=2)
    (ckpt / "tokenizer.model").write_bytes(other.getvalue())
    with pytest.raises(CheckpointError, match="tokenizer.model: is not a Gemma-style BPE model"):
        load_checkpoint(ckpt)


def test_flow_head_weights_load_and_a_tokens_head_has_none(tmp_path):
    ckpt = write_checkpoint(tmp_path / "flow", "flow")
    source = load_checkpoint(ckpt, head="flow")
    saved = load_file(str(ckpt / "action_head.safetensors"))
    for name, tensor in source.model.expert.state_dict().items():
        assert torch.equal(tensor, saved[f"expert.{name}"]), name
    assert source.reference_model().expert.state_dict().keys() == source.model.expert.state_dict().keys()
    (ckpt / "action_head.json").write_text(json.dumps({"head": "tokens"}))
    with pytest.raises(CheckpointError, match="the tokens head has no weights of its own"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("head", ["tokens", "flow"])
def test_a_preset_saved_in_the_layout_loads_back_identically(tmp_path, head):
    from vla_runtime.export.checkpoint import from_preset
    from vla_runtime.export.hf_checkpoint import save_hf_checkpoint

    source = from_preset("tiny", head, seed=3)
    path = save_hf_checkpoint(source, tmp_path / "tiny-hf", max_shard_size="200KB")
    assert (path / "model.safetensors.index.json").is_file() and (path / "action_head.json").is_file()
    loaded = load_checkpoint(path, head=head)
    assert loaded.model.tokens == source.model.tokens and loaded.norm == source.norm
    mine, back, ref = source.model.state_dict(), loaded.model.state_dict(), loaded.reference_model().state_dict()
    assert mine.keys() == back.keys() == ref.keys()
    for key in mine:
        assert torch.equal(mine[key], back[key]) and torch.equal(mine[key], ref[key]), key
