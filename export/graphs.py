"""One nn.Module per exported graph, with flat tensor inputs and outputs named as the manifest says.

Whole-model export of PaliGemma trips on data-dependent checks (image placeholder counting,
mask shortcuts) and hides the KV cache in a Python object. These wrappers take the backbone's
own submodules and expose exactly the tensors the runtime feeds: image embeddings are
concatenated in front of the prompt instead of scattered into placeholders, the prefix mask
is an explicit zero (fully visible) 4D mask, and the cache crosses the boundary as
`past_key_values.{i}.key/value` -> `present.{i}.key/value`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import DynamicCache
from vla_runtime.export.model import ReferenceVLA

logger = logging.getLogger(__name__)

# PaliGemma counts positions from 1; the runtime counts from 0, so graphs add this offset.
POSITION_OFFSET = 1


def _weights_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _float32(*tensors: torch.Tensor):
    """Graph outputs leave in float32 whatever the export dtype: the runtime's one float type."""
    out = tuple(t.float() for t in tensors)
    return out if len(out) > 1 else out[0]


def _visible_mask(q_len: torch.Tensor | int, kv_len: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """An additive mask of zeros: every query sees every key (prefix-LM prefix, or decode over the past)."""
    return torch.zeros((1, 1, q_len, kv_len), dtype=like.dtype, device=like.device)  # [1, 1, Q, K]


class VisionGraph(nn.Module):
    """pixel_values [1,3,S,S] -> image_embeds [1,N,E] (SigLIP tower + projector)."""

    def __init__(self, model: ReferenceVLA):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _float32(self.model.image_embeds(pixel_values.to(_weights_dtype(self.model))))  # [1, N, E]


class PrefillGraph(nn.Module):
    """image_embeds [1,N,E] + input_ids [1,T] -> head-specific outputs over the bidirectional prefix."""

    def __init__(self, model: ReferenceVLA):
        super().__init__()
        self.model = model
        self.head = model.cfg.head

    def forward(self, image_embeds: torch.Tensor, input_ids: torch.Tensor):
        lm = self.model.language_model
        text = lm.embed_tokens(input_ids)  # [1, T, E] (Gemma scales by sqrt(E) inside)
        embeds = torch.cat([image_embeds.to(text.dtype), text], dim=1)  # [1, L=N+T, E]
        length = embeds.shape[1]
        positions = torch.arange(length, device=embeds.device)[None] + POSITION_OFFSET  # [1, L]
        cache = DynamicCache() if self.head == "tokens" else None
        out = lm(
            inputs_embeds=embeds,
            attention_mask=_visible_mask(length, length, embeds),
            position_ids=positions,
            cache=cache,
            use_cache=cache is not None,
        )
        hidden = out.last_hidden_state  # [1, L, E]
        if self.head == "flow":
            return _float32(hidden)
        if self.head == "parallel":
            return _float32(self.model.pool(hidden, None))  # [1, E]
        logits = self.model.action_slice(self.model.vlm.lm_head(hidden[:, -1]))  # [1, 256]
        flat = [t for layer in cache.layers for t in (layer.keys, layer.values)]  # 2*layers x [1,KV,L,Dh]
        return _float32(logits, *flat)


class DecodeGraph(nn.Module):
    """One action id + past KV -> next action logits and the grown KV (tokens head)."""

    def __init__(self, model: ReferenceVLA):
        super().__init__()
        self.model = model
        self.layers = model.cfg.text_layers

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor):
        lm = self.model.language_model
        past = tuple(p.to(_weights_dtype(self.model)) for p in past)  # the cache travels in float32
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        embeds = lm.embed_tokens(input_ids)  # [1, 1, E]
        kv_len = past[0].shape[2] + 1
        out = lm(
            inputs_embeds=embeds,
            attention_mask=_visible_mask(1, kv_len, embeds),
            position_ids=position_ids + POSITION_OFFSET,
            cache=cache,
            use_cache=True,
        )
        logits = self.model.action_slice(self.model.vlm.lm_head(out.last_hidden_state[:, -1]))  # [1, 256]
        flat = [t for layer in cache.layers for t in (layer.keys, layer.values)]  # [1, KV, P+1, Dh] each
        return _float32(logits, *flat)


class HeadGraph(nn.Module):
    """pooled [1,E] (+ past_action [1,D] bins) (+ state [1,S]) -> action_logits [1,H,D,256] (parallel head)."""

    def __init__(self, model: ReferenceVLA):
        super().__init__()
        self.model = model

    def forward(
        self, pooled: torch.Tensor, past_action: torch.Tensor | None = None, state: torch.Tensor | None = None
    ) -> torch.Tensor:
        dtype = _weights_dtype(self.model)
        pooled = pooled.to(dtype)
        if past_action is not None:
            pooled = self.model.condition(pooled, past_action)  # [1, E]
        state = None if state is None else state.to(dtype)
        return _float32(self.model.head_logits(self.model.add_state(pooled, state)))  # [1, H, D, 256]


class StateHeadGraph(HeadGraph):
    """The parallel head reading the state but no past action: pooled [1,E], state [1,S]."""

    def forward(self, pooled: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return super().forward(pooled, None, state)


class VelocityGraph(nn.Module):
    """context [1,L,E], noisy_actions [1,H,D], timestep [1] -> velocity [1,H,D] (flow head)."""

    def __init__(self, model: ReferenceVLA):
        super().__init__()
        self.expert = model.expert

    def forward(
        self,
        context: torch.Tensor,
        noisy_actions: torch.Tensor,
        timestep: torch.Tensor,
        state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        dtype = _weights_dtype(self.expert)
        state = None if state is None else state.to(dtype)
        velocity = self.expert(context.to(dtype), noisy_actions.to(dtype), timestep.to(dtype), state)  # [1, H, D]
        return _float32(velocity)
