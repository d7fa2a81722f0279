"""The reference VLA: a transformers PaliGemma backbone (SigLIP + Gemma) with one action head.

The backbone is the real `PaliGemmaForConditionalGeneration`, built from a config, so a user's
fine-tuned checkpoint loads into the same classes. The `reference_*` methods run the backbone
through transformers' own full forward (prefix-LM mask, image placeholders, no cache); the
exported graphs are a decomposition of that forward and parity compares the two.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig
from vla_runtime.export.flow_expert import FlowExpert
from vla_runtime.export.presets import VLAConfig
from vla_runtime.runtime.conventions import ActionTokens, flow_times

logger = logging.getLogger(__name__)


MAX_POSITIONS = 1024  # presets: positions the rotary tables cover (image tokens + prompt + actions)


def eager(config: PaliGemmaConfig) -> PaliGemmaConfig:
    """Eager attention everywhere: the explicit prefix mask must survive the trace."""
    config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    return config


def paligemma_config(cfg: VLAConfig, vocab_size: int) -> PaliGemmaConfig:
    """PaliGemma config for a preset's sizes; every other hyper-parameter is transformers' default.

    A checkpoint never goes through here: its own config.json is the backbone config.
    """
    vision = SiglipVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_mlp,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        vision_use_head=False,
    )
    text = GemmaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_mlp,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=MAX_POSITIONS,
    )
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab_size,  # out of vocabulary: placeholders never collide with real ids
        vocab_size=vocab_size,
        projection_dim=cfg.text_hidden,
        hidden_size=cfg.text_hidden,
    )
    return eager(config)


def backbone_sizes(backbone: PaliGemmaConfig) -> dict:
    """The VLAConfig backbone fields of a PaliGemma config (the architecture's source of truth)."""
    v, t = backbone.vision_config, backbone.text_config
    return dict(
        image_size=int(v.image_size),
        patch_size=int(v.patch_size),
        vision_hidden=int(v.hidden_size),
        vision_layers=int(v.num_hidden_layers),
        vision_heads=int(v.num_attention_heads),
        vision_mlp=int(v.intermediate_size),
        text_hidden=int(t.hidden_size),
        text_layers=int(t.num_hidden_layers),
        text_heads=int(t.num_attention_heads),
        text_kv_heads=int(t.num_key_value_heads),
        head_dim=int(t.head_dim),
        text_mlp=int(t.intermediate_size),
    )


class AttentionPool(nn.Module):
    """hidden [B, L, E] -> [B, E]: one learned query per head attends over the prefix, plus its mean.

    A mean over 64 image tokens dilutes the few patches a 4 cm block covers; a query that has
    learnt to look for them keeps where they are. The mean stays as a residual, so the pool starts
    out as the mean pool it replaces.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.dh = heads, width // heads
        self.query = nn.Parameter(torch.randn(1, heads, 1, self.dh) * 0.02)  # [1, nh, 1, dh]
        self.norm = nn.LayerNorm(width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        b, n, w = hidden.shape
        k, v = self.kv(self.norm(hidden)).reshape(b, n, 2, self.heads, self.dh).permute(2, 0, 3, 1, 4)  # [B,nh,L,dh]
        weights = torch.softmax(self.query @ k.transpose(-1, -2) * self.dh**-0.5, dim=-1)  # [B, nh, 1, L]
        return hidden.mean(dim=1) + self.out((weights @ v).reshape(b, w))  # [B, E]


class ReferenceVLA(nn.Module):
    """PaliGemma backbone + the head named by `cfg.head`.

    The backbone is built from `backbone` (a checkpoint's own PaliGemmaConfig, every
    hyper-parameter as written) or, for presets, from the sizes in `cfg`; `vlm` hands in a
    backbone transformers already loaded (`from_pretrained`, the parity reference).
    """

    def __init__(
        self,
        cfg: VLAConfig,
        vocab_size: int,
        tokens: ActionTokens,
        backbone: PaliGemmaConfig | None = None,
        vlm: PaliGemmaForConditionalGeneration | None = None,
    ):
        super().__init__()
        tokens.check_vocabulary(vocab_size)
        if tokens.bins != cfg.bins:
            raise ValueError(f"the action ids cover {tokens.bins} bins but the model predicts {cfg.bins}")
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.tokens = tokens  # which vocabulary id is which bin
        if vlm is None:
            vlm = PaliGemmaForConditionalGeneration(eager(backbone) if backbone else paligemma_config(cfg, vocab_size))
        self.vlm = vlm
        self.action_head: nn.Module | None = None
        self.expert: FlowExpert | None = None
        self.pooler = AttentionPool(cfg.text_hidden, cfg.pool_heads) if cfg.pooling == "attention" else None
        if cfg.head == "parallel":
            out = cfg.horizon * cfg.action_dim * cfg.bins
            self.action_head = nn.Sequential(
                nn.Linear(cfg.text_hidden, cfg.head_hidden),
                nn.GELU(approximate="tanh"),
                nn.Linear(cfg.head_hidden, out),
            )
        elif cfg.head == "flow":
            self.expert = FlowExpert(cfg)
        # the parallel head adds the projected state to the pooled prefix (the flow expert has its own)
        reads_state = cfg.state_dim and cfg.head == "parallel"
        self.state_proj = nn.Linear(cfg.state_dim, cfg.text_hidden) if reads_state else None
        self.eval()

    # --- pieces shared by the graph wrappers and the reference path -----------------------------

    @property
    def language_model(self):
        return self.vlm.model.language_model

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vlm.model.get_image_features(pixel_values).pooler_output  # [B, N, E]

    def pool(self, hidden: torch.Tensor, past_action: torch.Tensor | None) -> torch.Tensor:
        """Mean (or attention pool) over the prefix; past bins enter through their action-token embeddings."""
        pooled = hidden.mean(dim=1) if self.pooler is None else self.pooler(hidden)  # [B, E]
        if self.cfg.condition_on_past_action and past_action is not None:
            pooled = self.condition(pooled, past_action)
        return pooled

    def condition(self, pooled: torch.Tensor, past_action: torch.Tensor) -> torch.Tensor:
        """Add the mean embedding of the previous action's ids (bins [B, D]) to the pooled prefix."""
        emb = self.language_model.embed_tokens(self.tokens.token_id(past_action))  # [B, D, E]
        return pooled + emb.mean(dim=1)  # [B, E]

    def add_state(self, pooled: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """pooled [B, E] + the projected normalised state [B, S] (parallel head reading the state)."""
        return pooled if self.state_proj is None else pooled + self.state_proj(state)  # [B, E]

    def head_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        return self.action_head(pooled).reshape(-1, c.horizon, c.action_dim, c.bins)  # [B, H, D, 256]

    def action_slice(self, logits: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits -> action logits in bin order."""
        first, stop = self.tokens.span
        sliced = logits[..., first:stop]  # [..., bins] in id order
        return sliced if self.tokens.order == "ascending" else sliced.flip(-1)

    # --- reference path: transformers' own full forward, no cache -------------------------------

    def _full_inputs(self, input_ids: torch.Tensor, suffix: torch.Tensor | None):
        n = self.cfg.prefix_image_tokens  # pixel_values hold B x V images, view-major within a sample
        image_ids = torch.full((input_ids.shape[0], n), self.vlm.config.image_token_id, dtype=torch.long)  # [B, N]
        parts = [image_ids, input_ids] + ([suffix] if suffix is not None else [])
        ids = torch.cat(parts, dim=1)  # [B, N+T(+k)]
        token_type = torch.zeros_like(ids)  # 0 = bidirectional prefix
        if suffix is not None:
            token_type[:, n + input_ids.shape[1] :] = 1  # generated ids are causal
        return ids, token_type

    def prefix_hidden(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Backbone hidden states over image + prompt, batched and differentiable (training uses it)."""
        ids, token_type = self._full_inputs(input_ids, None)
        out = self.vlm.model(input_ids=ids, pixel_values=pixel_values, token_type_ids=token_type, use_cache=False)
        return out.last_hidden_state  # [B, N+T, E]

    def sequence_action_logits(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, generated: torch.Tensor | None
    ) -> torch.Tensor:
        """Action logits at every position from the last prompt id on, via one uncached forward."""
        ids, token_type = self._full_inputs(input_ids, generated)
        out = self.vlm(input_ids=ids, pixel_values=pixel_values, token_type_ids=token_type, use_cache=False)
        k = 0 if generated is None else generated.shape[1]
        return self.action_slice(out.logits[:, -(k + 1) :])  # [B, k+1, 256]

    @torch.no_grad()
    def reference_hidden(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.prefix_hidden(pixel_values, input_ids)  # [1, N+T, E]

    @torch.no_grad()
    def reference_token_logits(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, generated: torch.Tensor | None
    ) -> torch.Tensor:
        """Action logits after the prompt and `generated` action ids, via one uncached forward."""
        return self.sequence_action_logits(pixel_values, input_ids, generated)[:, -1]  # [1, 256]

    @torch.no_grad()
    def reference_tokens(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> list[int]:
        """Greedy bins for D dims, each step re-running the whole sequence."""
        bins: list[int] = []
        for _ in range(self.cfg.action_dim):
            gen = torch.tensor([[self.tokens.token_id(b) for b in bins]], dtype=torch.long) if bins else None
            bins.append(int(self.reference_token_logits(pixel_values, input_ids, gen).argmax(-1)))
        return bins

    @torch.no_grad()
    def reference_parallel_logits(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        past_action: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        pooled = self.pool(self.reference_hidden(pixel_values, input_ids), past_action)  # [1, E]
        return self.head_logits(self.add_state(pooled, state))

    @torch.no_grad()
    def reference_flow(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        noise: torch.Tensor,
        steps: int,
        state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Euler-integrate the expert from noise (t=1) to t=0; returns normalised actions [H, D]."""
        context = self.reference_hidden(pixel_values, input_ids)  # [1, L, E]
        x = noise[None].float()  # [1, H, D]
        for t in torch.from_numpy(flow_times(steps))[:, None]:  # t: [1]
            x = x - (1.0 / steps) * self.expert(context, x, t, state)  # [1, H, D]
        return x[0]


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_model(
    cfg: VLAConfig, vocab_size: int, tokens: ActionTokens, seed: int = 0, backbone: PaliGemmaConfig | None = None
) -> ReferenceVLA:
    """Seeded random weights: the same (cfg, backbone, seed) always gives the same model."""
    torch.manual_seed(seed)
    model = ReferenceVLA(cfg, vocab_size, tokens, backbone=backbone)
    logger.info("built %s/%s VLA with %.2fM parameters", cfg.preset, cfg.head, count_parameters(model) / 1e6)
    return model
