"""Behaviour cloning of the reference VLA on demonstrations, for every head.

The recipes follow the heads' published ancestors: the `tokens` head (OpenVLA) and the
`parallel` head (OpenVLA-OFT-style chunk, conditioned on the last executed action) learn a
cross-entropy over the 256 action bins, with a narrow Gaussian over neighbouring bins as the
target so that a near miss costs less than a far one; the `flow` head (pi0) learns the
flow-matching velocity from noise to the normalised chunk. Everything is seeded: the same data,
config and seed give the same weights on the same machine and thread count.

Batches hold samples whose prompts have the same length, so no padding ever enters the mean
pooling or attention the exported graphs compute for one unpadded prompt.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from vla_runtime.export.manifest_writer import siglip_preprocess
from vla_runtime.export.model import ReferenceVLA
from vla_runtime.export.train_data import Demonstrations
from vla_runtime.runtime.conventions import discretize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500  # optimiser steps
    batch_size: int = 32  # samples per step, all with the same prompt length
    lr: float = 1e-3  # AdamW peak learning rate, after warm-up; cosine decay to 5 % of it
    warmup: int = 50  # steps of linear warm-up (a random transformer diverges on a cold high rate)
    weight_decay: float = 0.01
    label_sigma: float = 1.5  # bins; std of the Gaussian target around the demonstrated bin (0: one-hot)
    seed: int = 0  # weights, batch order and flow noise
    threads: int = 1  # torch intra-op threads; one is fastest on a shared small CPU, and reproducible
    val_fraction: float = 0.05  # episodes held out to report a validation loss

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.warmup < 0 or self.threads < 1:
            raise ValueError("steps, batch_size and threads must be >= 1 and warmup >= 0")
        if not (0 < self.lr < 1) or self.label_sigma < 0 or not (0 <= self.val_fraction < 0.5):
            raise ValueError("lr must be in (0, 1), label_sigma >= 0 and val_fraction in [0, 0.5)")


@dataclass
class TrainResult:
    losses: list[float]  # training loss per step
    val_losses: list[tuple[int, float]]  # (step, validation loss)
    seconds: float  # wall time of the optimisation


class BatchSampler:
    """Random batches drawn within one prompt-length bucket, buckets chosen by their size."""

    def __init__(self, lengths: np.ndarray, indices: np.ndarray, batch_size: int, rng: np.random.Generator):
        self.rng, self.batch_size = rng, batch_size
        self.buckets = [indices[lengths[indices] == n] for n in np.unique(lengths[indices])]
        sizes = np.array([len(b) for b in self.buckets], dtype=np.float64)
        self.weights = sizes / sizes.sum()

    def __call__(self) -> np.ndarray:
        bucket = self.buckets[self.rng.choice(len(self.buckets), p=self.weights)]
        return self.rng.choice(bucket, size=min(self.batch_size, len(bucket)), replace=False)


class DemoTensors:
    """The demonstrations as torch tensors, normalised the way the exported vision graph expects."""

    def __init__(self, data: Demonstrations, image_size: int, bins: int):
        p = siglip_preprocess(image_size)
        std = torch.tensor(p.image_std, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.scale = p.rescale_factor / std  # [1, 3, 1, 1]
        self.shift = -torch.tensor(p.image_mean, dtype=torch.float32).reshape(1, 3, 1, 1) / std
        self.images = torch.from_numpy(data.images)  # uint8 [N, S, S, 3] or [N, V, S, S, 3]
        self.prompts = data.prompts
        self.targets = torch.from_numpy(data.targets)  # [N, H, D]
        self.bins = torch.from_numpy(discretize(data.targets, bins))  # [N, H, D]
        self.past = torch.from_numpy(data.past)  # [N, D]
        self.weight = torch.from_numpy(data.weights())  # [N, D] 0 where a target says nothing
        self.state = torch.from_numpy(data.states) if data.states is not None else None  # [N, S] normalised

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        i = torch.from_numpy(idx)
        images = self.images[i].reshape(-1, *self.images.shape[-3:])  # [B*V, S, S, 3], view-major within a sample
        pixels = images.permute(0, 3, 1, 2).float() * self.scale + self.shift  # [B*V, 3, S, S]
        prompt = torch.from_numpy(np.stack([self.prompts[k] for k in idx]))  # [B, T]
        batch = {"pixels": pixels, "prompt": prompt, "targets": self.targets[i], "bins": self.bins[i],
                 "past": self.past[i], "weight": self.weight[i]}
        if self.state is not None:
            batch["state"] = self.state[i]  # [B, S]
        return batch


def soft_targets(bins: torch.Tensor, n: int, sigma: float) -> torch.Tensor:
    """[..., n] probabilities: a Gaussian over bin index centred on `bins` (one-hot when sigma is 0)."""
    if sigma <= 0:
        return F.one_hot(bins, n).float()
    grid = torch.arange(n, dtype=torch.float32)  # [n]
    logits = -0.5 * ((grid - bins[..., None].float()) / sigma) ** 2  # [..., n]
    return torch.softmax(logits, dim=-1)


def head_loss(model: ReferenceVLA, batch: dict[str, torch.Tensor], sigma: float, gen: torch.Generator) -> torch.Tensor:
    """The training loss of `model.cfg.head` on one batch."""
    cfg = model.cfg
    if cfg.head == "parallel":
        hidden = model.prefix_hidden(batch["pixels"], batch["prompt"])  # [B, N+T, E]
        pooled = model.add_state(model.pool(hidden, batch["past"]), batch.get("state"))  # [B, E]
        logits = model.head_logits(pooled)  # [B, H, D, 256]
        target = soft_targets(batch["bins"], cfg.bins, sigma)  # [B, H, D, 256]
        return _weighted(-(target * F.log_softmax(logits, dim=-1)).sum(-1), batch["weight"][:, None, :])
    if cfg.head == "tokens":
        bins = batch["bins"][:, 0]  # [B, D]: the tokens head predicts one step, dimension by dimension
        teacher = model.tokens.token_id(bins[:, :-1])  # [B, D-1] ids fed back, as greedy decoding does
        logits = model.sequence_action_logits(batch["pixels"], batch["prompt"], teacher)  # [B, D, 256]
        target = soft_targets(bins, cfg.bins, sigma)
        return _weighted(-(target * F.log_softmax(logits, dim=-1)).sum(-1), batch["weight"])  # [B, D]
    # flow matching: x_t = t * noise + (1 - t) * actions, velocity = noise - actions (t=1 is noise)
    actions = batch["targets"]  # [B, H, D]
    context = model.prefix_hidden(batch["pixels"], batch["prompt"])  # [B, L, E]
    noise = torch.randn(actions.shape, generator=gen)
    t = torch.rand(actions.shape[0], generator=gen)  # [B]
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
    error = (model.expert(context, x_t, t, batch.get("state")) - (noise - actions)) ** 2  # [B, H, D]
    return _weighted(error, batch["weight"][:, None, :])


def _weighted(loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of per-dimension losses over the dimensions whose targets supervise them."""
    w = weight.expand_as(loss)
    return (loss * w).sum() / w.sum().clamp(min=1.0)


def split_episodes(episode: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices, split by whole episodes."""
    episodes = np.unique(episode)
    n_val = int(round(len(episodes) * fraction)) if len(episodes) > 2 else 0
    val_eps = rng.choice(episodes, size=n_val, replace=False) if n_val else np.array([], dtype=np.int64)
    is_val = np.isin(episode, val_eps)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def train(model: ReferenceVLA, data: Demonstrations, cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Optimise `model` in place on `data`; returns the loss history."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if bool(model.cfg.state_dim) != (data.states is not None):
        raise ValueError(f"the model reads {model.cfg.state_dim} state values but the demonstrations carry "
                         f"{0 if data.states is None else data.states.shape[1]}")
    tensors = DemoTensors(data, model.cfg.image_size, model.cfg.bins)
    lengths = np.array([len(p) for p in data.prompts])
    train_idx, val_idx = split_episodes(data.episode, cfg.val_fraction, rng)
    sample = BatchSampler(lengths, train_idx, cfg.batch_size, rng)
    val_batches = _fixed_batches(lengths, val_idx, cfg.batch_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    losses, val_losses = [], []
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=f"train {model.cfg.head}", unit="step", disable=not progress)
    for step in bar:
        loss = head_loss(model, tensors.batch(sample()), cfg.label_sigma, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if val_batches and (step + 1) % max(1, cfg.steps // 10) == 0:
            val_losses.append((step + 1, _validate(model, tensors, val_batches, cfg)))
            model.train()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    seconds = time.perf_counter() - start
    logger.info("trained %d steps in %.0f s; final loss %.4f", cfg.steps, seconds, np.mean(losses[-20:]))
    return TrainResult(losses, val_losses, seconds)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _fixed_batches(lengths: np.ndarray, idx: np.ndarray, size: int, limit: int = 8) -> list[np.ndarray]:
    """A few deterministic validation batches (same prompt length within each)."""
    out = []
    for n in np.unique(lengths[idx]):
        same = idx[lengths[idx] == n]
        out.extend(same[i : i + size] for i in range(0, len(same), size))
    step = max(1, len(out) // limit)
    return out[::step][:limit]


@torch.no_grad()
def _validate(model: ReferenceVLA, tensors: DemoTensors, batches: list[np.ndarray], cfg: TrainConfig) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # the same flow noise at every check
    return float(np.mean([float(head_loss(model, tensors.batch(b), cfg.label_sigma, gen)) for b in batches]))
