"""pi0 / pi0.5 as three exportable graphs, built on transformers' own SigLIP and Gemma modules.

LeRobot runs one inference as: SigLIP + projector per camera, a PaliGemma prefix pass over
[image tokens..., prompt tokens] that caches every layer's keys and values, then N Euler steps
of the action expert only, whose layer i attends over the cached prefix K/V of layer i plus its
own suffix tokens (pi0: one state token then H action tokens; pi0.5: H action tokens, the time
entering through adaptive RMS norms). These modules compute exactly that, split where the
runtime needs the seams:

- `Pi0Vision`:  pixel_values [1,3,S,S] -> image_embeds [1,N,E] (one camera)
- `Pi0Prefix`:  image_embeds [1,C*N,E] + input_ids, prompt_mask [1,T]
                -> present.{i}.key/value [1,KV,L,Dh], L = C*N + T
- `Pi0Expert`:  past_key_values.{i}.key/value [1,KV,L,Dh], prefix_mask [1,L], (pi0: state [1,32]),
                noisy_actions [1,H,32], time_embedding [1,We] -> velocity [1,H,32]

The prompt is padded on the right to LeRobot's tokenizer_max_length with a 0/1 mask, as
LeRobot's preprocessor does, so every shape is static (one TensorRT profile) and the masks and
positions (pads hidden from every attention, positions counting real tokens only) are LeRobot's.
The time
embedding is an input because LeRobot computes the sinusoid in float64 (periods down to 4 ms):
the runtime does that in numpy (`conventions.flow_time_embedding`) and the graph stays float32.
Attention is written out (eager: softmax over scores + additive mask) so the exported graph has
no cache objects and the masks are the ones LeRobot builds.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import GemmaConfig, SiglipVisionConfig, SiglipVisionModel
from transformers.models.gemma.modeling_gemma import (
    GemmaAttention,
    GemmaMLP,
    GemmaRMSNorm,
    GemmaRotaryEmbedding,
    GemmaTextScaledWordEmbedding,
    apply_rotary_pos_emb,
)
from vla_runtime.export.lerobot_checkpoint import EXPERT, VLM, LeRobotCheckpoint, Pi0Sizes

logger = logging.getLogger(__name__)

MASKED = -2.3819763e38  # LeRobot's (openpi's) additive mask value for a hidden position


def gemma_config(sizes: Pi0Sizes, expert: bool) -> GemmaConfig:
    return GemmaConfig(
        vocab_size=sizes.vocab,
        hidden_size=sizes.expert_width if expert else sizes.width,
        intermediate_size=sizes.expert_mlp if expert else sizes.mlp,
        num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads,
        num_key_value_heads=sizes.kv_heads,
        head_dim=sizes.head_dim,
        hidden_activation="gelu_pytorch_tanh",
        attn_implementation="eager",
    )


class AdaptiveRMSNorm(nn.Module):
    """pi0.5's expert norm: RMS-normalise, then scale/shift (and a residual gate) from the time."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.dense = nn.Linear(width, 3 * width)
        self.eps = eps

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # [1, S, W]
        scale, shift, gate = self.dense(cond)[:, None].chunk(3, dim=-1)  # 3 x [1, 1, W]
        return normed * (1 + scale) + shift, gate


class GemmaBlock(nn.Module):
    """One Gemma decoder layer with its attention written out over explicit K/V."""

    def __init__(self, config: GemmaConfig, index: int, adaptive: bool):
        super().__init__()
        self.self_attn = GemmaAttention(config, index)
        self.mlp = GemmaMLP(config)
        norm = (lambda: AdaptiveRMSNorm(config.hidden_size, config.rms_norm_eps)) if adaptive else (
            lambda: GemmaRMSNorm(config.hidden_size, eps=config.rms_norm_eps))
        self.input_layernorm, self.post_attention_layernorm = norm(), norm()
        self.adaptive = adaptive
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim

    def _norm(self, norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None):
        return norm(x, cond) if self.adaptive else (norm(x), None)

    def qkv(self, x: torch.Tensor, cond, cos, sin):
        """-> (q [1,H,S,Dh], k [1,KV,S,Dh], v [1,KV,S,Dh], gate) for this layer's tokens."""
        h, gate = self._norm(self.input_layernorm, x, cond)
        shape = (1, x.shape[1], -1, self.head_dim)
        a = self.self_attn
        q = a.q_proj(h).view(shape).transpose(1, 2)
        k = a.k_proj(h).view(shape).transpose(1, 2)
        v = a.v_proj(h).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v, gate

    def finish(self, x, q, k, v, mask, gate, cond):
        """Attention of q over (k, v) with the additive mask, then the residuals and the MLP."""
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # [1, H, K, Dh]
        scores = torch.matmul(q, k.transpose(2, 3)) * self.self_attn.scaling + mask  # [1, H, Q, K]
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        attn = torch.matmul(probs, v).transpose(1, 2).reshape(1, x.shape[1], -1)  # [1, Q, H*Dh]
        out = self.self_attn.o_proj(attn)
        x = x + out if gate is None else x + out * gate
        h, gate = self._norm(self.post_attention_layernorm, x, cond)
        out = self.mlp(h)
        return x + out if gate is None else x + out * gate


class Pi0Vision(nn.Module):
    """pixel_values [1,3,S,S] in [-1, 1] -> image_embeds [1,N,E] (SigLIP + linear projector)."""

    def __init__(self, ckpt: LeRobotCheckpoint):
        super().__init__()
        s = ckpt.sizes
        self.tower = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=s.vision_width, intermediate_size=s.vision_mlp, num_hidden_layers=s.vision_layers,
            num_attention_heads=s.vision_heads, image_size=ckpt.image_size, patch_size=s.patch,
            hidden_act="gelu_pytorch_tanh", vision_use_head=False, attn_implementation="eager",
        ))
        self.projector = nn.Linear(s.vision_width, s.width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projector(self.tower(pixel_values).last_hidden_state)  # [1, N, E]


class Pi0Prefix(nn.Module):
    """image_embeds [1,C*N,E] + input_ids / prompt_mask [1,T] -> every layer's keys and values [1,KV,L,Dh]."""

    def __init__(self, ckpt: LeRobotCheckpoint):
        super().__init__()
        config = gemma_config(ckpt.sizes, expert=False)
        self.embed_tokens = GemmaTextScaledWordEmbedding(
            config.vocab_size, config.hidden_size, config.pad_token_id, embed_scale=config.hidden_size**0.5)
        self.layers = nn.ModuleList(GemmaBlock(config, i, adaptive=False) for i in range(config.num_hidden_layers))
        self.rotary_emb = GemmaRotaryEmbedding(config)

    def forward(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, prompt_mask: torch.Tensor):
        x = torch.cat([image_embeds, self.embed_tokens(input_ids)], dim=1)  # [1, L, E]
        valid = torch.cat([torch.ones_like(image_embeds[..., 0]), prompt_mask.to(x.dtype)], dim=1)  # [1, L]
        positions = (torch.cumsum(valid, dim=1) - 1).long()  # [1, L]: pads do not count
        seen = valid[:, None, :, None] * valid[:, None, None, :]  # [1, 1, L, L]: prefix-LM, pads hidden
        mask = (1.0 - seen) * MASKED
        cos, sin = self.rotary_emb(x, positions)
        kv = []
        for layer in self.layers:
            q, k, v, _ = layer.qkv(x, None, cos, sin)
            kv += [k, v]
            if layer is not self.layers[-1]:  # the last layer's output feeds nothing
                x = layer.finish(x, q, k, v, mask, None, None)
        return tuple(kv)


class Pi0Expert(nn.Module):
    """One Euler step's velocity from the cached prefix K/V, the state and the noisy chunk."""

    def __init__(self, ckpt: LeRobotCheckpoint):
        super().__init__()
        self.pi05 = ckpt.kind == "pi05"
        config = gemma_config(ckpt.sizes, expert=True)
        w = config.hidden_size
        self.layers = nn.ModuleList(GemmaBlock(config, i, adaptive=self.pi05) for i in range(config.num_hidden_layers))
        self.norm = AdaptiveRMSNorm(w, config.rms_norm_eps) if self.pi05 else GemmaRMSNorm(w, eps=config.rms_norm_eps)
        self.rotary_emb = GemmaRotaryEmbedding(config)
        self.action_in_proj = nn.Linear(ckpt.max_action_dim, w)
        self.action_out_proj = nn.Linear(w, ckpt.max_action_dim)
        if self.pi05:
            self.time_mlp_in, self.time_mlp_out = nn.Linear(w, w), nn.Linear(w, w)
        else:
            self.state_proj = nn.Linear(ckpt.max_state_dim, w)
            self.action_time_mlp_in, self.action_time_mlp_out = nn.Linear(2 * w, w), nn.Linear(w, w)
        self.horizon = ckpt.chunk_size

    def _suffix(self, state, noisy_actions, time_embedding):
        """-> (suffix tokens [1,S,W], adaptive-norm condition or None, suffix mask [1,1,S,S])."""
        actions = self.action_in_proj(noisy_actions)  # [1, H, W]
        h = actions.shape[1]
        if self.pi05:
            cond = nn.functional.silu(self.time_mlp_out(nn.functional.silu(self.time_mlp_in(time_embedding))))
            return actions, cond, torch.zeros(1, 1, h, h, dtype=actions.dtype)  # actions see each other
        t = time_embedding[:, None].expand(1, h, time_embedding.shape[-1])  # [1, H, W]
        fused = self.action_time_mlp_out(nn.functional.silu(self.action_time_mlp_in(torch.cat([actions, t], -1))))
        tokens = torch.cat([self.state_proj(state)[:, None], fused], dim=1)  # [1, 1+H, W]
        mask = torch.zeros(1, 1, h + 1, h + 1, dtype=actions.dtype)
        mask[..., 0, 1:] = MASKED  # block-causal: the state token does not see the action tokens
        return tokens, None, mask

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """inputs: past_key_values.{i}.key/value..., prefix_mask [1,L], (pi0: state), noisy_actions, time_embedding."""
        n = 2 * len(self.layers)
        past, prefix_mask, rest = inputs[:n], inputs[n], inputs[n + 1:]
        state, noisy_actions, time_embedding = (None, *rest) if self.pi05 else rest
        x, cond, suffix_mask = self._suffix(state, noisy_actions, time_embedding)
        valid = prefix_mask.to(x.dtype)  # [1, L]
        positions = (valid.sum(dim=1, keepdim=True) + torch.arange(x.shape[1], device=x.device)[None]).long()
        cos, sin = self.rotary_emb(x, positions)
        hidden = ((1.0 - valid) * MASKED)[:, None, None, :].expand(1, 1, x.shape[1], valid.shape[1])
        mask = torch.cat([hidden, suffix_mask], dim=-1)  # [1, 1, S, L+S]: the suffix sees valid prefix
        for i, layer in enumerate(self.layers):
            q, k, v, gate = layer.qkv(x, cond, cos, sin)
            k = torch.cat([past[2 * i], k], dim=2)  # [1, KV, L+S, Dh]
            v = torch.cat([past[2 * i + 1], v], dim=2)
            x = layer.finish(x, q, k, v, mask, gate, cond)
        x = self.norm(x, cond)[0] if self.pi05 else self.norm(x)
        return self.action_out_proj(x[:, -self.horizon:])  # [1, H, 32]


def _load(module: nn.Module, weights: dict, mapping: dict[str, str]) -> None:
    """Copy checkpoint tensors into `module`: every parameter must be found, with its shape."""
    state = {}
    for name, param in module.state_dict().items():
        source = next((src + name[len(dst):] for dst, src in mapping.items() if name.startswith(dst)), None)
        assert source is not None and source in weights, f"no checkpoint tensor for {name} ({source})"
        value = torch.from_numpy(weights[source])
        assert tuple(value.shape) == tuple(param.shape), f"{source}: {tuple(value.shape)} != {tuple(param.shape)}"
        state[name] = value
    module.load_state_dict(state, strict=True)


def build_pi0(ckpt: LeRobotCheckpoint) -> tuple[Pi0Vision, Pi0Prefix, Pi0Expert]:
    """The three graphs' modules with the checkpoint's weights, in eval mode, float32."""
    vision, prefix, expert = Pi0Vision(ckpt), Pi0Prefix(ckpt), Pi0Expert(ckpt)
    # transformers 5.5 nests SigLIP under .vision_model (LeRobot's keys); later versions do not
    nested = any(k.startswith("tower.vision_model.") for k in vision.state_dict())
    tower = VLM + ("vision_tower." if nested else "vision_tower.vision_model.")
    _load(vision, ckpt.weights, {"tower.": tower, "projector.": VLM + "multi_modal_projector.linear."})
    _load(prefix, ckpt.weights, {
        "embed_tokens.": VLM + "language_model.embed_tokens.",
        "layers.": VLM + "language_model.layers.",
    })
    pi0_heads = ("state_proj", "action_time_mlp_in", "action_time_mlp_out")
    heads = ("time_mlp_in", "time_mlp_out") if expert.pi05 else pi0_heads
    _load(expert, ckpt.weights, {
        "layers.": EXPERT + "layers.", "norm.": EXPERT + "norm.",
        **{f"{h}.": f"model.{h}." for h in ("action_in_proj", "action_out_proj", *heads)},
    })
    for m in (vision, prefix, expert):
        m.eval()
    return vision, prefix, expert
