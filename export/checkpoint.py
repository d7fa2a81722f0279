"""A local checkpoint directory: transformers config + safetensors weights + tokenizer + action stats.

Two layouts load. A Hugging Face PaliGemma directory with an action-head file is read by
hf_checkpoint.py; the project's own layout (what `save_checkpoint` writes) is read here:

  config.json        PaliGemmaConfig.to_dict(), plus a "vla_runtime" entry: head, action space, head sizes
  model.safetensors  the ReferenceVLA state dict (backbone under "vlm.", heads under "action_head."/"expert.")
  tokenizer.json     a `tokenizers` file; when it names `<act_j>` tokens they must be the action ids
  norm_stats.json    action normalisation statistics (see norm_stats.py)
  state_stats.json   the measured state's names, units and statistics, when the model reads the state

The backbone is built from the whole transformers config as written, so the config is the
single source of truth for the architecture and every hyper-parameter; the "vla_runtime" entry
only adds what transformers does not know.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from safetensors.torch import save_model
from tokenizers import Tokenizer
from transformers import PaliGemmaConfig
from vla_runtime.export.hf_checkpoint import is_hf_checkpoint, load_hf_checkpoint
from vla_runtime.export.hf_weights import WeightFiles, WeightsError, load_into
from vla_runtime.export.model import backbone_sizes, build_model, count_parameters
from vla_runtime.export.norm_stats import (
    STATE_STATS_FILE,
    NormStats,
    default_norm_stats,
    load_norm_stats,
    save_norm_stats,
)
from vla_runtime.export.presets import VLAConfig, preset_config
from vla_runtime.export.source import CheckpointError, Source
from vla_runtime.export.tokenizer import action_tokens, build_tokenizer, has_action_tokens
from vla_runtime.runtime.conventions import ActionTokens

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
VLA_KEY = "vla_runtime"  # our entry inside config.json


def from_config(
    cfg: VLAConfig, seed: int = 0, norm: NormStats | None = None, state_norm: NormStats | None = None
) -> Source:
    """A seeded random-weight model for any config (presets, or a variant of one)."""
    if (state_norm.dim if state_norm is not None else 0) != cfg.state_dim:
        raise ValueError(f"the model reads {cfg.state_dim} state values; give statistics for exactly those")
    tok = build_tokenizer(cfg.base_vocab, cfg.bins, pad=cfg.pad_vocab)
    model = build_model(cfg, tok.get_vocab_size(), action_tokens(tok, cfg.bins), seed=seed)
    return Source(cfg, model, tok, norm or default_norm_stats(), f"preset {cfg.preset}, seed {seed}",
                  state_norm=state_norm)


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
    if source.state_norm is not None:
        save_norm_stats(source.state_norm, out, STATE_STATS_FILE)
    logger.info("saved checkpoint (%d parameters) to %s", count_parameters(source.model), out)
    return out


def load_checkpoint(directory: str | Path, head: str | None = None, seed: int = 0) -> Source:
    """Rebuild the model from config.json and load the weights; every problem is one clear line."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise CheckpointError(
            f"{root}: not a directory; pass --checkpoint DIR holding {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    if is_hf_checkpoint(root):
        return load_hf_checkpoint(root, head=head, seed=seed)
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
            f"{root / CONFIG_FILE}: expected a PaliGemma config with a {VLA_KEY!r} entry (head and action space), "
            "or an action_head.json beside a Hugging Face PaliGemma checkpoint (README: Bring your own checkpoint)"
        )
    try:
        backbone = PaliGemmaConfig.from_dict({k: v for k, v in doc.items() if k != VLA_KEY})
        vocab = int(backbone.text_config.vocab_size)
        cfg = dataclasses.replace(VLAConfig.from_json(doc[VLA_KEY]), preset="checkpoint", **backbone_sizes(backbone))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{root / CONFIG_FILE}: {exc}; save it with save_checkpoint") from None
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
        # our tokenizers name the action ids <act_j>; without them the ids are the last `bins` (RT-2)
        tokens = action_tokens(tok, cfg.bins) if has_action_tokens(tok) else ActionTokens.last_ids(vocab, cfg.bins)
        norm = load_norm_stats(root)
        state_norm = load_norm_stats(root, STATE_STATS_FILE) if cfg.state_dim else None
    except ValueError as exc:
        raise CheckpointError(f"{root}: {exc}") from None
    if norm.dim != cfg.action_dim:
        raise CheckpointError(f"{root}: norm_stats.json has {norm.dim} dims but the model predicts {cfg.action_dim}")
    if state_norm is not None and state_norm.dim != cfg.state_dim:
        raise CheckpointError(f"{root}: {STATE_STATS_FILE} has {state_norm.dim} values but the model reads "
                              f"{cfg.state_dim}; save the statistics the model was trained with")
    model = build_model(cfg, vocab, tokens, seed=seed, backbone=backbone)
    try:
        load_into(model, WeightFiles(root), config_name=CONFIG_FILE)
    except WeightsError as exc:
        raise CheckpointError(str(exc)) from None
    model.eval()
    logger.info("loaded checkpoint %s: %s head, %d parameters", root, cfg.head, count_parameters(model))
    return Source(cfg, model, tok, norm, f"checkpoint {root.name}", state_norm=state_norm)

