"""A local checkpoint directory: transformers config + safetensors weights + tokenizer + action stats.

Layout (all four files required):
  config.json        PaliGemmaConfig.to_dict(), plus a "vla_runtime" entry: head, action space, head sizes
  model.safetensors  the ReferenceVLA state dict (backbone under "vlm.", heads under "action_head."/"expert.")
  tokenizer.json     a `tokenizers` file whose last 256 ids are the action bins
  norm_stats.json    action normalisation statistics (see norm_stats.py)

Backbone sizes are read from the transformers config, so the config is the single source of
truth for the architecture; the "vla_runtime" entry only adds what transformers does not know.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from vla_runtime.export.model import ReferenceVLA, build_model, count_parameters
from vla_runtime.export.norm_stats import NormStats, default_norm_stats, load_norm_stats, save_norm_stats
from vla_runtime.export.presets import VLAConfig, preset_config
from vla_runtime.export.tokenizer import action_tokens, build_tokenizer

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
VLA_KEY = "vla_runtime"  # our entry inside config.json


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete or inconsistent; the message names the file and fix."""


@dataclass(frozen=True)
class Source:
    """Everything a build needs, from a preset or a checkpoint."""

    cfg: VLAConfig
    model: ReferenceVLA
    tokenizer: Tokenizer
    norm: NormStats
    origin: str  # human description: "preset tiny, seed 0" or "checkpoint <dir name>"


def from_config(cfg: VLAConfig, seed: int = 0, norm: NormStats | None = None) -> Source:
    """A seeded random-weight model for any config (presets, or a variant of one)."""
    tok = build_tokenizer(cfg.base_vocab, cfg.bins)
    model = build_model(cfg, tok.get_vocab_size(), action_tokens(tok, cfg.bins), seed=seed)
    return Source(cfg, model, tok, norm or default_norm_stats(), f"preset {cfg.preset}, seed {seed}")


def from_preset(preset: str, head: str, seed: int = 0) -> Source:
    return from_config(preset_config(preset, head), seed=seed)


def save_checkpoint(source: Source, directory: str | Path) -> Path:
    """Write the four checkpoint files; returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    doc = source.model.vlm.config.to_dict()
    doc[VLA_KEY] = source.cfg.to_json()
    (out / CONFIG_FILE).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    save_model(source.model, str(out / WEIGHTS_FILE))
    source.tokenizer.save(str(out / TOKENIZER_FILE))
    save_norm_stats(source.norm, out)
    logger.info("saved checkpoint (%d parameters) to %s", count_parameters(source.model), out)
    return out


def _sizes_from_transformers(doc: dict) -> dict:
    """VLAConfig backbone fields read from the transformers config (the architecture's source of truth)."""
    try:
        v, t = doc["vision_config"], doc["text_config"]
        return dict(
            image_size=int(v["image_size"]),
            patch_size=int(v["patch_size"]),
            vision_hidden=int(v["hidden_size"]),
            vision_layers=int(v["num_hidden_layers"]),
            vision_heads=int(v["num_attention_heads"]),
            vision_mlp=int(v["intermediate_size"]),
            text_hidden=int(t["hidden_size"]),
            text_layers=int(t["num_hidden_layers"]),
            text_heads=int(t["num_attention_heads"]),
            text_kv_heads=int(t["num_key_value_heads"]),
            head_dim=int(t["head_dim"]),
            text_mlp=int(t["intermediate_size"]),
        ), int(t["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{CONFIG_FILE}: not a PaliGemma config (missing or bad {exc}); save it with save_checkpoint"
        ) from None


def load_checkpoint(directory: str | Path, head: str | None = None, seed: int = 0) -> Source:
    """Rebuild the model from config.json and load the weights; every problem is one clear line."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise CheckpointError(
            f"{root}: not a directory; pass --checkpoint DIR holding {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        if not (root / name).is_file():
            raise CheckpointError(
                f"{root / name}: missing; a checkpoint needs {CONFIG_FILE}, {WEIGHTS_FILE}, {TOKENIZER_FILE}"
            )
    try:
        doc = json.loads((root / CONFIG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{root / CONFIG_FILE}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if doc.get("model_type") != "paligemma" or VLA_KEY not in doc:
        raise CheckpointError(
            f"{root / CONFIG_FILE}: expected a PaliGemma config with a {VLA_KEY!r} entry (head and action space); "
            "save the model with vla_runtime.export.checkpoint.save_checkpoint"
        )
    sizes, vocab = _sizes_from_transformers(doc)
    try:
        cfg = dataclasses.replace(VLAConfig.from_json(doc[VLA_KEY]), preset="checkpoint", **sizes)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{root / CONFIG_FILE}: {VLA_KEY}: {exc}") from None
    if head is not None and head != cfg.head:
        raise CheckpointError(
            f"{root}: checkpoint has a {cfg.head!r} head but --head {head} was asked; pass --head {cfg.head}"
        )
    tok = Tokenizer.from_file(str(root / TOKENIZER_FILE))
    if tok.get_vocab_size() != vocab:
        raise CheckpointError(
            f"{root / TOKENIZER_FILE}: {tok.get_vocab_size()} ids but the model's vocab_size is {vocab}; "
            "save the tokenizer the model was trained with"
        )
    try:
        tokens = action_tokens(tok, cfg.bins)
        norm = load_norm_stats(root)
    except ValueError as exc:
        raise CheckpointError(f"{root}: {exc}") from None
    if norm.dim != cfg.action_dim:
        raise CheckpointError(f"{root}: norm_stats.json has {norm.dim} dims but the model predicts {cfg.action_dim}")
    model = build_model(cfg, vocab, tokens, seed=seed)
    try:
        missing, unexpected = load_model(model, str(root / WEIGHTS_FILE), strict=False)
    except Exception as exc:  # safetensors raises SafetensorError or RuntimeError on shape mismatch
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{root / WEIGHTS_FILE}: does not fit the model in {CONFIG_FILE}: {first}") from None
    if missing or unexpected:
        what = f"missing {sorted(missing)[:3]}" if missing else f"unexpected {sorted(unexpected)[:3]}"
        raise CheckpointError(
            f"{root / WEIGHTS_FILE}: weights do not match {CONFIG_FILE} ({what}); re-save the checkpoint"
        )
    model.eval()
    logger.info("loaded checkpoint %s: %s head, %d parameters", root, cfg.head, count_parameters(model))
    return Source(cfg, model, tok, norm, f"checkpoint {root.name}")

