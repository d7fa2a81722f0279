"""The flow-matching action expert (pi0-style): predicts the velocity that carries noise to actions.

The expert is a small transformer over the H action steps that cross-attends to the VLM
context. Attention is written with plain matmuls so the exported graph holds only default
ONNX ops that TensorRT parses; the Euler loop stays in the runtime, in float32.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from vla_runtime.export.presets import VLAConfig

logger = logging.getLogger(__name__)


def timestep_embedding(t: torch.Tensor, width: int, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sine/cosine features of the flow time t in [0, 1] over geometric periods, as in pi0."""
    half = width // 2
    fraction = torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1)  # [W/2]
    period = min_period * (max_period / min_period) ** fraction  # [W/2]
    angle = t.float()[:, None] * (2.0 * math.pi / period)[None, :]  # [B, W/2]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)  # [B, W]


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, kv_width: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(kv_width, width)
        self.v = nn.Linear(kv_width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape  # [B, H, W]
        dh = w // self.heads
        q = self.q(x).reshape(b, n, self.heads, dh).transpose(1, 2)  # [B, nh, H, dh]
        k = self.k(memory).reshape(b, -1, self.heads, dh).transpose(1, 2)  # [B, nh, L, dh]
        v = self.v(memory).reshape(b, -1, self.heads, dh).transpose(1, 2)  # [B, nh, L, dh]
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)  # [B, nh, H, L]
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, w))  # [B, H, W]


class _Block(nn.Module):
    """Self-attention over action steps, cross-attention to the VLM context, then an MLP."""

    def __init__(self, width: int, heads: int, context_width: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = _Attention(width, heads, width)
        self.cross_attn = _Attention(width, heads, width)
        self.context_proj = nn.Linear(context_width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h)  # [B, H, W]
        x = x + self.cross_attn(self.norm2(x), self.context_proj(context))  # [B, H, W]
        return x + self.mlp(self.norm3(x))  # [B, H, W]


class FlowExpert(nn.Module):
    """velocity(context [B,L,E], x_t [B,H,D], t [B]) -> [B,H,D]; t=1 is pure noise, t=0 the action."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        w = cfg.expert_width
        self.action_in = nn.Linear(cfg.action_dim, w)
        self.time_mlp = nn.Sequential(nn.Linear(2 * w, w), nn.SiLU(), nn.Linear(w, w))
        self.step_embed = nn.Parameter(torch.randn(cfg.horizon, w) * 0.02)  # learned position of each step
        self.blocks = nn.ModuleList(_Block(w, cfg.expert_heads, cfg.text_hidden) for _ in range(cfg.expert_layers))
        self.norm_out = nn.LayerNorm(w)
        self.action_out = nn.Linear(w, cfg.action_dim)
        self.width = w
        # the measured state [B, S] conditions every action step (pi0 feeds it to the expert too)
        self.state_in = nn.Linear(cfg.state_dim, w) if cfg.state_dim else None

    def forward(
        self,
        context: torch.Tensor,
        noisy_actions: torch.Tensor,
        timestep: torch.Tensor,
        state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        a = self.action_in(noisy_actions)  # [B, H, W]
        t = timestep_embedding(timestep, self.width).to(a.dtype)[:, None, :].expand_as(a)  # [B, H, W] angles in fp32
        x = self.time_mlp(torch.cat([a, t], dim=-1)) + self.step_embed  # [B, H, W]
        if self.state_in is not None:
            x = x + self.state_in(state)[:, None, :]  # [B, H, W]
        for block in self.blocks:
            x = block(x, context)  # [B, H, W]
        return self.action_out(self.norm_out(x))  # [B, H, D]
