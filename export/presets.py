"""Size presets of the reference VLA and the typed config every export step reads.

One frozen config describes backbone, head and action space, so a build is reproducible from
(preset, head, seed) alone and a checkpoint directory can carry the same facts in JSON.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

HEADS = ("tokens", "parallel", "flow")
PRESETS = ("tiny", "demo", "small", "paligemma-3b")


@dataclass(frozen=True)
class VLAConfig:
    """Everything needed to rebuild the model with random weights (or load a checkpoint into it)."""

    head: str  # "tokens" | "parallel" | "flow"
    preset: str = "tiny"  # size preset name, or "checkpoint" for a user's model
    # --- SigLIP vision tower ---
    image_size: int = 32  # pixels; square input side
    patch_size: int = 8  # pixels; (image_size / patch_size)^2 image tokens
    vision_hidden: int = 32  # SigLIP width
    vision_layers: int = 2
    vision_heads: int = 2
    vision_mlp: int = 64  # SigLIP MLP width
    # --- Gemma decoder ---
    text_hidden: int = 64  # Gemma width E; also the projector output width
    text_layers: int = 2
    text_heads: int = 2
    text_kv_heads: int = 1  # multi-query attention, as in PaliGemma
    head_dim: int = 32  # per attention head
    text_mlp: int = 128  # Gemma MLP width
    base_vocab: int = 320  # ordinary tokenizer ids before the action ids (target for BPE training)
    # --- action space and head ---
    action_dim: int = 7  # D: dx, dy, dz, droll, dpitch, dyaw, gripper
    horizon: int = 1  # H: steps per chunk (tokens head is always 1)
    bins: int = 256  # discrete bins per dimension over [-1, 1]
    head_hidden: int = 64  # parallel head MLP width
    condition_on_past_action: bool = False  # parallel head also sees the previous action's bins
    # how the parallel head summarises the prefix: "mean" of its hidden states, or "attention":
    # learned queries attend over it (a block's few patches are not averaged away among 64)
    pooling: str = "mean"
    pool_heads: int = 4  # attention pooling: queries (one per head) over the prefix
    expert_width: int = 32  # flow velocity network width
    expert_layers: int = 2  # flow velocity network blocks
    expert_heads: int = 2  # attention heads in the velocity network
    flow_steps: int = 10  # Euler steps from noise (t=1) to actions (t=0)
    # fill the vocabulary with never-produced `<unused_i>` ids up to base_vocab: a real-size
    # embedding (Gemma's 257k rows) although the built-in corpus trains only a few hundred BPE ids
    pad_vocab: bool = False
    # --- inputs ---
    views: tuple[str, ...] = ("front",)  # camera views, in prefix order; each adds num_image_tokens
    state_dim: int = 0  # S: measured state values the head reads (joints + gripper); 0 reads none

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"head {self.head!r} is not one of {HEADS}")
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.head == "tokens" and self.horizon != 1:
            raise ValueError("the tokens head predicts one step: horizon must be 1")
        if not 2 <= self.bins <= 4096:
            raise ValueError("bins must be 2..4096 (RT-2 uses 256, OpenVLA 255)")
        if self.expert_width % self.expert_heads or self.vision_hidden % self.vision_heads:
            raise ValueError("widths must divide evenly into attention heads")
        if min(self.horizon, self.action_dim, self.flow_steps, self.text_layers) < 1:
            raise ValueError("horizon, action_dim, flow_steps and text_layers must be >= 1")
        object.__setattr__(self, "views", tuple(self.views))  # JSON gives a list
        if not (1 <= len(self.views) <= 8) or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must name 1..8 distinct camera views, got {list(self.views)}")
        if not (0 <= self.state_dim <= 64):
            raise ValueError(f"state_dim must be 0..64, got {self.state_dim}")
        if self.pooling not in ("mean", "attention"):
            raise ValueError(f"pooling {self.pooling!r} is not 'mean' or 'attention'")
        if self.pooling == "attention" and (self.head != "parallel" or self.text_hidden % self.pool_heads):
            raise ValueError("attention pooling is for the parallel head, with text_hidden divisible by pool_heads")
        if self.state_dim and self.head == "tokens":
            raise ValueError("the tokens head reads no robot state; use the parallel or flow head with a state")

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2  # N, per view

    @property
    def prefix_image_tokens(self) -> int:
        return len(self.views) * self.num_image_tokens  # V * N, all views in the prefix

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> VLAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown VLA config field(s) {unknown}")
        return cls(**doc)


# Chunk length per head and preset: the tokens head always predicts one step.
_HORIZON = {"tiny": 4, "demo": 4, "small": 8, "paligemma-3b": 8}

_SMALL = dict(
    image_size=224,
    patch_size=16,  # 196 image tokens
    vision_hidden=384,
    vision_layers=6,
    vision_heads=6,
    vision_mlp=1536,
    text_hidden=512,
    text_layers=6,
    text_heads=8,
    text_kv_heads=1,
    head_dim=64,
    text_mlp=2048,
    base_vocab=1024,
    head_hidden=512,
    expert_width=256,
    expert_layers=4,
    expert_heads=4,
)


# The real PaliGemma-3B (paligemma-3b-pt-224) shape: SigLIP So400m/14 at 224 px (256 image tokens)
# and Gemma-2B (18 layers, width 2048, multi-query attention, head_dim 256, 257,216 ids); every
# other hyper-parameter (rope_theta 10000, RMSNorm/LayerNorm eps 1e-6, tanh GELU) is the
# transformers default, which is PaliGemma's. Random weights: a scale proof, not a policy.
_PALIGEMMA_3B = dict(
    image_size=224,
    patch_size=14,  # 16 x 16 = 256 image tokens
    vision_hidden=1152,
    vision_layers=27,
    vision_heads=16,
    vision_mlp=4304,
    text_hidden=2048,
    text_layers=18,
    text_heads=8,
    text_kv_heads=1,
    head_dim=256,
    text_mlp=16384,
    base_vocab=257216 - 256,  # Gemma's vocabulary: the last 256 ids are the action bins
    pad_vocab=True,
    head_hidden=1024,
    expert_width=512,
    expert_layers=4,
    expert_heads=8,
)


# Trainable on two CPU cores in minutes, yet with enough pixels to see a 4 cm block at 64 x 64.
_DEMO = dict(
    image_size=64,
    patch_size=8,  # 64 image tokens
    vision_hidden=64,
    vision_heads=2,
    vision_mlp=128,
    text_hidden=64,
    text_mlp=128,
    head_hidden=128,
)


def preset_config(preset: str, head: str) -> VLAConfig:
    """The config of a named size preset for one head."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {PRESETS}")
    if head not in HEADS:
        raise ValueError(f"head {head!r} is not one of {HEADS}")
    sizes = {"small": _SMALL, "demo": _DEMO, "paligemma-3b": _PALIGEMMA_3B}.get(preset, {})
    horizon = 1 if head == "tokens" else _HORIZON[preset]
    # the trained demo's parallel head sees the last executed action (the gripper state, the motion so far)
    conditioned = preset == "demo" and head == "parallel"
    return VLAConfig(head=head, preset=preset, horizon=horizon, condition_on_past_action=conditioned, **sizes)
