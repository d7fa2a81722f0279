"""Read a LeRobot pi0 / pi0.5 checkpoint folder: config, weights and normalisation statistics.

What `save_pretrained` of a LeRobot policy and its processor pipelines writes:

    config.json                    "type": "pi0" | "pi05", input/output features, chunk_size,
                                   max_state_dim / max_action_dim, num_inference_steps, periods,
                                   normalization_mapping, tokenizer_max_length, image_resolution
    model.safetensors              every weight, keys prefixed "model."
    policy_preprocessor.json       steps; the "normalizer_processor" step names its state_file
    policy_postprocessor.json      the "unnormalizer_processor" step, same statistics
    *_normalizer_processor.safetensors   "<feature>.<mean|std|min|max|q01|q99>" tensors

Checkpoints older than LeRobot 0.4 keep the statistics inside model.safetensors as
`normalize_inputs.buffer_<feature_with_underscores>.<stat>` (and `unnormalize_outputs.`);
both layouts are read. The tokenizer is not stored (only a hub name), so the exporter asks
for a local tokenizer file. Model sizes are read from the weight shapes, not from the
variant names (LeRobot builds 8 query heads and SigLIP So400m's 16 heads whatever the size).

Every problem is a UserError naming the file and the fix; nothing here downloads anything.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vla_runtime.common.errors import UserError

logger = logging.getLogger(__name__)

SUPPORTED_TYPES = ("pi0", "pi05")
VLM = "model.paligemma_with_expert.paligemma.model."
EXPERT = "model.paligemma_with_expert.gemma_expert.model."
QUERY_HEADS = 8  # LeRobot's PaliGemmaWithExpertModel reshapes attention to 1 * 8 * head_dim
SIGLIP_HEADS = 16  # SigLIP So400m, the tower LeRobot's PaliGemma config builds
STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")
NORM_MODES = ("MEAN_STD", "QUANTILES", "MIN_MAX", "IDENTITY")


@dataclass(frozen=True)
class FeatureStats:
    """Per-dimension statistics of one feature, float64 [dim] each (absent ones are None)."""

    mode: str  # LeRobot NormalizationMode name: MEAN_STD | QUANTILES | MIN_MAX | IDENTITY
    stats: dict  # stat name -> np.ndarray float64 [dim]
    eps: float = 1e-8  # LeRobot's normaliser epsilon (MEAN_STD divides by std + eps)


@dataclass(frozen=True)
class Pi0Sizes:
    """Module sizes read from the weight shapes."""

    vocab: int  # language embedding rows
    width: int  # VLM (PaliGemma Gemma) hidden size
    expert_width: int  # action expert hidden size
    layers: int  # decoder layers (equal for the VLM and the expert)
    heads: int  # query heads
    kv_heads: int  # key/value heads (multi-query: 1)
    head_dim: int
    mlp: int  # VLM GeGLU width
    expert_mlp: int  # expert GeGLU width
    vision_width: int  # SigLIP hidden size
    vision_mlp: int
    vision_layers: int
    vision_heads: int
    patch: int  # SigLIP patch side, pixels


@dataclass(frozen=True)
class LeRobotCheckpoint:
    root: Path
    kind: str  # "pi0" | "pi05"
    config: dict  # config.json as written
    weights: dict  # name -> np.ndarray float32 (the model's tensors, "model." keys)
    sizes: Pi0Sizes
    cameras: tuple[str, ...]  # the camera names, in config order ("observation.images.<name>")
    image_size: int  # pixels, square (image_resolution)
    state_dim: int  # S before padding to max_state_dim
    action_dim: int  # D before padding to max_action_dim
    action_names: tuple[str, ...]
    state_stats: FeatureStats
    action_stats: FeatureStats
    tokenizer_name: str | None  # the hub tokenizer LeRobot's preprocessor names (not stored)

    @property
    def chunk_size(self) -> int:
        return int(self.config["chunk_size"])

    @property
    def max_state_dim(self) -> int:
        return int(self.config.get("max_state_dim", 32))

    @property
    def max_action_dim(self) -> int:
        return int(self.config.get("max_action_dim", 32))

    @property
    def num_steps(self) -> int:
        return int(self.config.get("num_inference_steps", 10))

    @property
    def tokenizer_max_length(self) -> int:
        return int(self.config.get("tokenizer_max_length", 48 if self.kind == "pi0" else 200))

    @property
    def periods(self) -> tuple[float, float]:
        return float(self.config.get("min_period", 4e-3)), float(self.config.get("max_period", 4.0))


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; --from-lerobot needs a LeRobot checkpoint folder") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc}); is the checkpoint complete?") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a JSON object")
    return doc


def _read_safetensors(path: Path) -> dict:
    """A safetensors file as numpy arrays, floats as float32; bf16 (LeRobot's dtype "bfloat16",
    which numpy cannot hold) is read through torch and widened."""
    from safetensors.torch import load_file

    try:
        raw = load_file(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; the LeRobot checkpoint is incomplete") from None
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in raw.items()}


def _count(weights: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in weights if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def read_sizes(weights: dict) -> Pi0Sizes:
    def shape(name: str) -> tuple:
        if name not in weights:
            raise UserError(f"model.safetensors lacks {name}; is this a LeRobot pi0 / pi05 checkpoint?")
        return weights[name].shape

    vocab, width = shape(VLM + "language_model.embed_tokens.weight")
    q_out = shape(VLM + "language_model.layers.0.self_attn.q_proj.weight")[0]
    head_dim = q_out // QUERY_HEADS
    kv_heads = shape(VLM + "language_model.layers.0.self_attn.k_proj.weight")[0] // head_dim
    layers = _count(weights, re.escape(VLM) + r"language_model\.layers\.(\d+)\.")
    expert_layers = _count(weights, re.escape(EXPERT) + r"layers\.(\d+)\.")
    if layers != expert_layers:
        raise UserError(f"checkpoint has {layers} VLM layers but {expert_layers} expert layers; pi0 pairs them")
    patch_w = shape(VLM + "vision_tower.vision_model.embeddings.patch_embedding.weight")  # [C, 3, p, p]
    return Pi0Sizes(
        vocab=vocab,
        width=width,
        expert_width=shape(EXPERT + "layers.0.self_attn.o_proj.weight")[0],
        layers=layers,
        heads=QUERY_HEADS,
        kv_heads=kv_heads,
        head_dim=head_dim,
        mlp=shape(VLM + "language_model.layers.0.mlp.gate_proj.weight")[0],
        expert_mlp=shape(EXPERT + "layers.0.mlp.gate_proj.weight")[0],
        vision_width=patch_w[0],
        vision_mlp=shape(VLM + "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight")[0],
        vision_layers=_count(weights, re.escape(VLM) + r"vision_tower\.vision_model\.encoder\.layers\.(\d+)\."),
        vision_heads=SIGLIP_HEADS,
        patch=patch_w[2],
    )


def _step_stats(root: Path, pipeline: str, registry: str) -> tuple[dict, dict] | None:
    """(step config, tensors) of a processor pipeline's normaliser step, or None when absent."""
    path = root / f"{pipeline}.json"
    if not path.exists():
        return None
    doc = _read_json(path)
    for step in doc.get("steps", []):
        if step.get("registry_name") == registry:
            state_file = step.get("state_file")
            if not state_file:
                raise UserError(f"{path}: step {registry} names no state_file with its statistics")
            return step.get("config", {}), _read_safetensors(root / state_file)
    return None


def _legacy_stats(weights: dict, feature: str) -> dict:
    """Pre-0.4 layout: normalize_inputs.buffer_observation_state.mean and friends."""
    flat = feature.replace(".", "_")
    out = {}
    for prefix in ("normalize_inputs", "normalize_targets", "unnormalize_outputs"):
        for stat in STAT_NAMES:
            key = f"{prefix}.buffer_{flat}.{stat}"
            if key in weights and stat not in out:
                out[stat] = weights[key]
    return out


def _feature_stats(feature: str, mode: str, tensors: dict, eps: float, where: str) -> FeatureStats:
    stats = {s: np.asarray(tensors[f"{feature}.{s}"], np.float64).reshape(-1)
             for s in STAT_NAMES if f"{feature}.{s}" in tensors}
    needed = {"MEAN_STD": ("mean", "std"), "QUANTILES": ("q01", "q99"), "MIN_MAX": ("min", "max")}.get(mode, ())
    missing = [s for s in needed if s not in stats]
    if missing:
        raise UserError(f"{where}: {feature} is normalised {mode} but lacks {missing}; re-save the processors")
    return FeatureStats(mode=mode, stats=stats, eps=eps)


def read_checkpoint(root: str | Path) -> LeRobotCheckpoint:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; --from-lerobot takes the folder save_pretrained wrote")
    config = _read_json(root / "config.json")
    kind = config.get("type")
    if kind not in SUPPORTED_TYPES:
        hint = " (SmolVLA is not supported yet)" if kind == "smolvla" else ""
        raise UserError(f"{root / 'config.json'}: policy type {kind!r} is not one of {SUPPORTED_TYPES}{hint}")
    if config.get("use_relative_actions"):
        raise UserError(
            f"{root / 'config.json'}: use_relative_actions is not supported yet; export an absolute-action policy"
        )
    weights = _read_safetensors(root / "model.safetensors")
    sizes = read_sizes(weights)

    inputs, outputs = config.get("input_features", {}), config.get("output_features", {})
    cameras = tuple(k.split(".", 2)[2] for k, v in inputs.items() if v.get("type") == "VISUAL")
    if not cameras:
        raise UserError(f"{root / 'config.json'}: input_features name no camera (observation.images.*)")
    if "observation.state" not in inputs or "action" not in outputs:
        raise UserError(f"{root / 'config.json'}: needs input_features.observation.state and output_features.action")
    resolution = config.get("image_resolution", [224, 224])
    if resolution[0] != resolution[1]:
        raise UserError(f"{root / 'config.json'}: image_resolution {resolution} is not square")
    state_dim = int(inputs["observation.state"]["shape"][0])
    action_dim = int(outputs["action"]["shape"][0])
    names = config.get("action_feature_names") or [f"a{i}" for i in range(action_dim)]
    if len(names) != action_dim:
        raise UserError(f"{root / 'config.json'}: action_feature_names has {len(names)} names for {action_dim} dims")

    mapping = config.get("normalization_mapping", {})
    modes = {key: mapping.get(key, "IDENTITY") for key in ("STATE", "ACTION")}
    for key, mode in modes.items():
        if mode not in NORM_MODES:
            raise UserError(f"{root / 'config.json'}: normalization_mapping.{key} {mode!r} is not one of {NORM_MODES}")
    pre = _step_stats(root, "policy_preprocessor", "normalizer_processor")
    post = _step_stats(root, "policy_postprocessor", "unnormalizer_processor")
    if pre and post:
        where = f"{root}/policy_*processor*.safetensors"
        state = _feature_stats("observation.state", modes["STATE"], pre[1], float(pre[0].get("eps", 1e-8)), where)
        action = _feature_stats("action", modes["ACTION"], post[1], float(post[0].get("eps", 1e-8)), where)
    else:
        where = f"{root / 'model.safetensors'} (normalize_inputs.buffer_*)"
        legacy = {f"{f}.{s}": v for f in ("observation.state", "action") for s, v in _legacy_stats(weights, f).items()}
        if not legacy and "IDENTITY" not in modes.values():
            raise UserError(f"{root}: no policy_preprocessor.json statistics and no normalize_inputs.buffer_* "
                            "in model.safetensors; re-save the policy with its processors")
        state = _feature_stats("observation.state", modes["STATE"], legacy, 1e-8, where)
        action = _feature_stats("action", modes["ACTION"], legacy, 1e-8, where)

    tokenizer_name = None
    if (root / "policy_preprocessor.json").exists():
        for step in _read_json(root / "policy_preprocessor.json").get("steps", []):
            tokenizer_name = step.get("config", {}).get("tokenizer_name", tokenizer_name)
    ckpt = LeRobotCheckpoint(
        root=root, kind=kind, config=config, weights=weights, sizes=sizes, cameras=cameras,
        image_size=int(resolution[0]), state_dim=state_dim, action_dim=action_dim, action_names=tuple(names),
        state_stats=state, action_stats=action, tokenizer_name=tokenizer_name,
    )
    logger.info("read LeRobot %s checkpoint %s: %d layers, width %d/%d, cameras %s, chunk %d",
                kind, root, sizes.layers, sizes.width, sizes.expert_width, cameras, ckpt.chunk_size)
    return ckpt
