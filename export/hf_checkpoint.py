"""A Hugging Face PaliGemma checkpoint plus a small action-head file, loaded from its own config.

Layout of DIR (what transformers' `save_pretrained` writes, plus three small files):

  config.json                    PaliGemmaConfig (text_config: Gemma, vision_config: SigLIP), read by
                                 transformers' own config class; every hyper-parameter is used as
                                 transformers reads it (rope, norm epsilons, positions, head_dim, ...)
  model.safetensors              the backbone's tensors, or
  model.safetensors.index.json   with the shards it names (model-0000k-of-0000n.safetensors)
  tokenizer.json | tokenizer.model   a `tokenizers` file, or a Gemma SentencePiece model
  action_head.json               the head, action space and action-token convention (below)
  action_head.safetensors        the head's weights: "action_head.*" (parallel) or "expert.*" (flow),
                                 named as in `ReferenceVLA`; the tokens head has none (the
                                 language-model head scores the action ids)
  norm_stats.json                the action statistics (norm_stats.py)

action_head.json (unknown keys refused; omitted keys take VLAConfig's defaults):

  {"head": "tokens" | "parallel" | "flow",
   "action_dim": 7, "horizon": 1, "bins": 256,
   "head_hidden": 64, "condition_on_past_action": false,                   (parallel)
   "expert_width": 32, "expert_layers": 2, "expert_heads": 2, "flow_steps": 10,   (flow)
   "action_tokens": {"convention": "last_ids"}          RT-2: bin j is id V - bins + j
                  | {"convention": "from_end"}          OpenVLA: bin j is id V - 1 - j (bins: 255)
                  | {"offset": 31999, "order": "descending"},   explicit
   "prompt_template": "What action should the robot take to {task}?"}

V is the tokenizer's vocabulary size (the model's embedding table may be padded beyond it).

Parity for such a checkpoint compares the graphs with the backbone transformers itself loads
from DIR (`from_pretrained`, local files only), not with our rebuild, so a hyper-parameter the
rebuild dropped shows up as a parity failure instead of passing unnoticed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration
from vla_runtime.export.hf_weights import WeightFiles, WeightsError, load_into, transformers_renamer
from vla_runtime.export.manifest_writer import MAX_PROMPT_TOKENS
from vla_runtime.export.model import ReferenceVLA, backbone_sizes, build_model, count_parameters
from vla_runtime.export.norm_stats import load_norm_stats, save_norm_stats
from vla_runtime.export.presets import VLAConfig
from vla_runtime.export.source import CheckpointError, Source
from vla_runtime.export.tokenizer import PROMPT_TEMPLATE, load_tokenizer
from vla_runtime.runtime.conventions import TOKEN_ORDERS, ActionTokens

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
HEAD_FILE = "action_head.json"
HEAD_WEIGHTS = "action_head.safetensors"
HEAD_FIELDS = (
    "action_dim", "horizon", "bins", "head_hidden", "condition_on_past_action",
    "expert_width", "expert_layers", "expert_heads", "flow_steps",
)  # the VLAConfig fields a head file may set; the backbone's come from config.json
TOKEN_CONVENTIONS = ("last_ids", "from_end")  # RT-2, OpenVLA
HEAD_PREFIXES = {"parallel": ("action_head.",), "flow": ("expert.",), "tokens": ()}


@dataclass(frozen=True)
class HeadFile:
    """action_head.json, validated."""

    head: str  # "tokens" | "parallel" | "flow"
    fields: dict = field(default_factory=dict)  # VLAConfig head fields it sets
    action_tokens: dict = field(default_factory=dict)  # convention, or offset + order
    prompt_template: str = PROMPT_TEMPLATE

    def __post_init__(self):
        unknown = sorted(set(self.fields) - set(HEAD_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; allowed: head, action_tokens, prompt_template, "
                             + ", ".join(HEAD_FIELDS))
        spec = self.action_tokens
        if set(spec) - {"convention", "offset", "order"}:
            raise ValueError(f"action_tokens: unknown key(s) {sorted(set(spec) - {'convention', 'offset', 'order'})}")
        if "convention" in spec and ("offset" in spec or "order" in spec):
            raise ValueError("action_tokens: give a convention or an offset and order, not both")
        if spec.get("convention", "last_ids") not in TOKEN_CONVENTIONS:
            raise ValueError(f"action_tokens.convention {spec['convention']!r} is not one of {TOKEN_CONVENTIONS}")
        if "offset" in spec and spec.get("order", "ascending") not in TOKEN_ORDERS:
            raise ValueError(f"action_tokens.order {spec['order']!r} is not one of {TOKEN_ORDERS}")
        if ("offset" in spec) != ("order" in spec):
            raise ValueError("action_tokens: an explicit convention needs both offset and order")
        if "{task}" not in self.prompt_template:
            raise ValueError("prompt_template must contain the placeholder {task}")

    @classmethod
    def from_json(cls, doc: dict) -> HeadFile:
        if not isinstance(doc, dict) or "head" not in doc:
            raise ValueError('needs at least {"head": "tokens" | "parallel" | "flow"}')
        rest = {k: v for k, v in doc.items() if k not in ("head", "action_tokens", "prompt_template")}
        return cls(
            head=doc["head"],
            fields=rest,
            action_tokens=dict(doc.get("action_tokens", {})),
            prompt_template=doc.get("prompt_template", PROMPT_TEMPLATE),
        )

    def tokens(self, vocab_size: int, bins: int) -> ActionTokens:
        """The action-id convention over a tokenizer of `vocab_size` ids."""
        spec = self.action_tokens
        if "offset" in spec:
            return ActionTokens(bins=bins, offset=int(spec["offset"]), order=spec["order"])
        if spec.get("convention", "last_ids") == "from_end":
            return ActionTokens.from_end(vocab_size, bins)
        return ActionTokens.last_ids(vocab_size, bins)


def is_hf_checkpoint(directory: str | Path) -> bool:
    """A directory in this layout names its head in action_head.json."""
    return (Path(directory) / HEAD_FILE).is_file()


def read_head_file(root: Path) -> HeadFile:
    path = root / HEAD_FILE
    try:
        return HeadFile.from_json(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def read_backbone_config(root: Path) -> PaliGemmaConfig:
    """config.json through transformers' PaliGemmaConfig, exactly as `from_pretrained` reads it."""
    path = root / CONFIG_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; a Hugging Face checkpoint carries its PaliGemma config") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if doc.get("model_type") != "paligemma" or not {"text_config", "vision_config"} <= set(doc):
        raise CheckpointError(
            f"{path}: not a PaliGemma config (model_type {doc.get('model_type')!r}, needs text_config and "
            "vision_config); only PaliGemma backbones are supported"
        )
    return PaliGemmaConfig.from_pretrained(str(root), local_files_only=True)


def _config(head_file: HeadFile, backbone: PaliGemmaConfig, root: Path) -> VLAConfig:
    try:
        cfg = VLAConfig(head=head_file.head, preset="checkpoint", **backbone_sizes(backbone), **head_file.fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{root / HEAD_FILE}: {exc}") from None
    longest = cfg.num_image_tokens + MAX_PROMPT_TOKENS + cfg.action_dim  # image + prompt + generated ids
    positions = int(backbone.text_config.max_position_embeddings)
    if longest > positions:
        raise CheckpointError(
            f"{root / CONFIG_FILE}: max_position_embeddings {positions} is shorter than the longest sequence "
            f"the bundle runs ({cfg.num_image_tokens} image + {MAX_PROMPT_TOKENS} prompt + {cfg.action_dim} "
            "action positions); is this the config the model was trained with?"
        )
    return cfg


def _load_head_weights(model: ReferenceVLA, root: Path) -> None:
    """action_head.safetensors into the head (parallel, flow); the tokens head has no weights of its own."""
    prefixes = HEAD_PREFIXES[model.cfg.head]
    path = root / HEAD_WEIGHTS
    if not prefixes:
        if path.is_file():
            raise CheckpointError(f"{path}: the tokens head has no weights of its own (the model's lm_head "
                                  "scores the action ids); remove the file or fix the head in action_head.json")
        return
    try:
        files = WeightFiles(root, single=HEAD_WEIGHTS, index=HEAD_WEIGHTS + ".index.json")
        load_into(model, files, prefixes=prefixes, config_name=HEAD_FILE)
    except WeightsError as exc:
        raise CheckpointError(str(exc)) from None


def load_hf_checkpoint(directory: str | Path, head: str | None = None, seed: int = 0) -> Source:
    """Rebuild the model from config.json + action_head.json and stream every weight in, checked."""
    root = Path(directory).expanduser()
    head_file = read_head_file(root)
    if head is not None and head != head_file.head:
        raise CheckpointError(
            f"{root / HEAD_FILE}: the checkpoint has a {head_file.head!r} head but --head {head} was asked; "
            f"pass --head {head_file.head}"
        )
    backbone = read_backbone_config(root)
    cfg = _config(head_file, backbone, root)
    try:
        tok, tok_path = load_tokenizer(root)
        norm = load_norm_stats(root)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    vocab = int(backbone.text_config.vocab_size)
    if tok.get_vocab_size() > vocab:
        raise CheckpointError(f"{tok_path}: {tok.get_vocab_size()} ids but the model's vocab_size is {vocab}; "
                              "use the tokenizer the model was trained with")
    if norm.dim != cfg.action_dim:
        raise CheckpointError(f"{root}: norm_stats.json has {norm.dim} dims but {HEAD_FILE} says "
                              f"action_dim {cfg.action_dim}")
    try:
        tokens = head_file.tokens(tok.get_vocab_size(), cfg.bins)
        model = build_model(cfg, vocab, tokens, seed=seed, backbone=backbone)
    except ValueError as exc:
        raise CheckpointError(f"{root / HEAD_FILE}: action_tokens: {exc}") from None
    try:
        load_into(model.vlm, WeightFiles(root), rename=transformers_renamer(model.vlm))
    except WeightsError as exc:
        raise CheckpointError(str(exc)) from None
    _load_head_weights(model, root)
    model.eval()
    logger.info("loaded Hugging Face checkpoint %s: %s head, %d parameters", root, cfg.head, count_parameters(model))

    def reference() -> ReferenceVLA:
        return reference_model(root, cfg, vocab, tokens)

    return Source(cfg, model, tok, norm, f"checkpoint {root.name} (Hugging Face layout)",
                  reference=reference, prompt_template=head_file.prompt_template)


def reference_model(root: Path, cfg: VLAConfig, vocab_size: int, tokens: ActionTokens) -> ReferenceVLA:
    """The parity reference: transformers' own `from_pretrained` backbone (fp32, eager) + the head file."""
    vlm = PaliGemmaForConditionalGeneration.from_pretrained(
        str(root), local_files_only=True, dtype=torch.float32, attn_implementation="eager"
    )
    model = ReferenceVLA(cfg, vocab_size, tokens, vlm=vlm)
    _load_head_weights(model, root)
    return model.eval()


def save_hf_checkpoint(source: Source, directory: str | Path, max_shard_size: str = "2GB") -> Path:
    """Write `source` in this layout (transformers' `save_pretrained` for the backbone); returns the directory.

    What `load_hf_checkpoint` reads back is the same model: a way to hand a preset or a trained
    checkpoint to tools that expect the Hugging Face layout, and to try the layout end to end.
    """
    cfg, model = source.cfg, source.model
    if cfg.views != ("front",) or cfg.state_dim or cfg.pooling != "mean":
        raise CheckpointError("the Hugging Face layout carries one camera, no robot state and a mean-pooled head; "
                              "save this model with --save-checkpoint instead")
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model.vlm.save_pretrained(str(out), max_shard_size=max_shard_size)
    source.tokenizer.save(str(out / "tokenizer.json"))
    vocab = source.tokenizer.get_vocab_size()
    if model.tokens == ActionTokens.last_ids(vocab, cfg.bins):
        tokens = {"convention": "last_ids"}
    elif model.tokens == ActionTokens.from_end(vocab, cfg.bins):
        tokens = {"convention": "from_end"}
    else:
        tokens = {"offset": model.tokens.offset, "order": model.tokens.order}
    doc = {"head": cfg.head, **{k: getattr(cfg, k) for k in HEAD_FIELDS}, "action_tokens": tokens,
           "prompt_template": source.prompt_template}
    (out / HEAD_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    prefixes = HEAD_PREFIXES[cfg.head]
    if prefixes:
        head = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}
        save_file(head, str(out / HEAD_WEIGHTS), metadata={"format": "pt"})
    save_norm_stats(source.norm, out)
    logger.info("saved %s in the Hugging Face layout to %s", cfg.head, out)
    return out
