"""Tiny checkpoints in the Hugging Face PaliGemma layout, written by transformers itself.

The backbone is `PaliGemmaForConditionalGeneration.save_pretrained` output (sharded, with an
index), the tokenizer is Gemma-style (byte-fallback BPE, spaces as U+2581, <pad> <eos> <bos>
<unk> <mask> at ids 0..4) trained here with the `tokenizers` library, and the head file is
written by hand from the format in the README, so nothing of the exporter's own writing code
is used to make what the exporter reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, trainers
from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig
from vla_runtime.export.norm_stats import default_norm_stats, save_norm_stats
from vla_runtime.export.tokenizer import instruction_corpus

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
PADDED_VOCAB = 8  # embedding rows beyond the tokenizer, as PaliGemma pads 257152 ids to 257216
# Hyper-parameters away from transformers' defaults (rope 10000, eps 1e-6, 8192 positions), so a
# loader that falls back to a default builds a different model.
HYPER = dict(rope_theta=50.0, rms_norm_eps=0.05, vision_layer_norm_eps=0.05, max_position_embeddings=300)


def gemma_style_tokenizer(vocab_size: int = 400) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]  # byte fallback pieces, as in Gemma's vocabulary
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=GEMMA_SPECIALS + bytes_, show_progress=False)
    tok.train_from_iterator(instruction_corpus(), trainer=trainer)
    return tok


def gemma_sentencepiece(vocab_size: int = 400) -> bytes:
    """A Gemma-style SentencePiece model (tokenizer.model bytes): BPE, byte fallback, Gemma's special ids."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(instruction_corpus()), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True, user_defined_symbols=["<mask>"],
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", minloglevel=2,
    )
    return model.getvalue()


def backbone_config(vocab_size: int, hyper: dict = HYPER) -> PaliGemmaConfig:
    text = GemmaConfig(
        vocab_size=vocab_size + PADDED_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        rope_theta=hyper["rope_theta"],
        rms_norm_eps=hyper["rms_norm_eps"],
        max_position_embeddings=hyper["max_position_embeddings"],
        initializer_range=0.2,  # large enough weights that attention is not uniform: rope matters
    )
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        layer_norm_eps=hyper["vision_layer_norm_eps"],
        vision_use_head=False,
    )
    return PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab_size,  # the first id past the tokenizer, as in PaliGemma
        projection_dim=64,
        hidden_size=64,
    )


def head_tensors(head: str, action_dim: int, horizon: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """action_head.safetensors contents: the README's names and shapes, random values."""
    g = torch.Generator().manual_seed(seed)
    if head == "parallel":  # Linear(E, hidden) -> GELU -> Linear(hidden, H * D * bins)
        hidden, bins = 32, 256
        return {
            "action_head.0.weight": torch.randn(hidden, 64, generator=g) * 0.2,
            "action_head.0.bias": torch.zeros(hidden),
            "action_head.2.weight": torch.randn(horizon * action_dim * bins, hidden, generator=g) * 0.2,
            "action_head.2.bias": torch.zeros(horizon * action_dim * bins),
        }
    if head == "flow":  # the velocity expert, named as export/flow_expert.py names its parameters
        from vla_runtime.export.flow_expert import FlowExpert
        from vla_runtime.export.presets import VLAConfig

        torch.manual_seed(seed)
        expert = FlowExpert(VLAConfig(head="flow", text_hidden=64, action_dim=action_dim, horizon=horizon))
        return {f"expert.{k}": v.detach().clone() for k, v in expert.state_dict().items()}
    return {}


def write_checkpoint(
    root: Path, head: str, head_doc: dict | None = None, hyper: dict = HYPER, shard: str = "60KB", seed: int = 0
) -> Path:
    """A complete Hugging Face layout checkpoint directory; returns it."""
    root.mkdir(parents=True, exist_ok=True)
    tok = gemma_style_tokenizer()
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(backbone_config(tok.get_vocab_size(), hyper))
    model.save_pretrained(str(root), max_shard_size=shard)
    tok.save(str(root / "tokenizer.json"))
    doc = {"head": head, "action_dim": 7, "horizon": 1 if head == "tokens" else 2}
    if head == "parallel":
        doc["head_hidden"] = 32
    doc.update(head_doc or {})
    (root / "action_head.json").write_text(json.dumps(doc, indent=2))
    tensors = head_tensors(head, doc["action_dim"], doc["horizon"], seed)
    if tensors:
        save_file(tensors, str(root / "action_head.safetensors"))
    save_norm_stats(default_norm_stats(), root)
    return root
