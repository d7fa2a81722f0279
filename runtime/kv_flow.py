"""pi0 / pi0.5 on the robot: views + state + task -> prefix KV cache -> N Euler steps of the expert.

The order is LeRobot's (`PI0Pytorch.sample_actions`), with no torch:

1. the state is normalised with the bundle's statistics (`StateInput`, as LeRobot's normaliser); pi0 pads
   it with zeros to `decode.state_pad` for the expert, pi0.5 writes it into the prompt as
   256-bin numbers (`conventions.state_prompt_bins`) and the expert never sees it;
2. the prompt is BOS + the encoded template, truncated and right-padded to `prompt.max_tokens`
   with a 0/1 mask (LeRobot's tokenizer step, `padding="max_length"`);
3. `vision` runs once per camera view (the manifest's `preprocess.camera_views`, in order) and
   `prefill` turns [images..., prompt] into every layer's keys and values, kept on the backend;
4. from x = N(0, 1) noise [1, H, decode.action_pad] (numpy, seeded by `decode.noise_seed`:
   LeRobot draws the same shape with torch), for k in 0..N-1 with t = 1 - k / N:
   x <- x - v(cache, state, x, embed(t)) / N (`conventions.flow_times`, `flow_time_embedding`);
5. the first `action.dim` columns are the normalised chunk; `Unnormalizer` maps them to units.

The decoder keeps its buffers between inferences; `prepare` hands it the tick's state and
prefix mask, and `inject_noise` lets parity replay LeRobot's recorded start noise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from vla_runtime.runtime.conventions import (
    FlowNoise,
    flow_time_embedding,
    flow_times,
    pi05_task_text,
    state_prompt_bins,
)
from vla_runtime.runtime.decoders import Decoded, Decoder, RunGraph, _require
from vla_runtime.runtime.manifest import Manifest, ManifestError
from vla_runtime.runtime.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

PAD_ID = 0  # the prompt's pad id; pads are masked out of every attention, so its value is moot


class Pi0Prompt:
    """Task (+ normalised state for pi0.5) -> input_ids, prompt_mask int64 [1, max_tokens]."""

    def __init__(self, manifest: Manifest, tokenizer_path: str | Path):
        self.prompt, self.state_in_prompt = manifest.prompt, manifest.decode.state_in_prompt
        self._tok = load_tokenizer(tokenizer_path)
        n = manifest.prompt.max_tokens
        self._ids = np.zeros((1, n), dtype=np.int64)  # [1, T]
        self._mask = np.zeros((1, n), dtype=np.int64)  # [1, T]

    def text(self, task: str, normalized_state: np.ndarray | None) -> str:
        if self.state_in_prompt:
            return self.prompt.template.format(task=pi05_task_text(task), state=state_prompt_bins(normalized_state))
        return self.prompt.template.format(task=task)

    def __call__(self, task: str, normalized_state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(task, str) or not task.strip():
            raise ValueError("task must be a non-empty instruction, e.g. --task \"pick up the red block\"")
        ids = self._tok.encode(self.text(task, normalized_state), add_special_tokens=False).ids
        if self.prompt.bos_token_id is not None:
            ids = [self.prompt.bos_token_id] + ids
        n = self.prompt.max_tokens
        if len(ids) > n:
            logger.warning("prompt for task %r is %d tokens; truncated to %d (prompt.max_tokens)", task, len(ids), n)
            ids = ids[:n]
        self._ids.fill(PAD_ID)
        self._mask.fill(0)
        self._ids[0, : len(ids)], self._mask[0, : len(ids)] = ids, 1
        return self._ids, self._mask


class Pi0Decoder(Decoder):
    """N Euler steps of the action expert against the resident prefix KV cache."""

    role = "expert"

    def __init__(self, manifest: Manifest):
        d, action = manifest.decode, manifest.action
        expert, prefill = manifest.graphs["expert"], manifest.graphs["prefill"]
        layers = sorted({n.split(".")[1] for n in expert.input_names if n.startswith("past_key_values.")}, key=int)
        if not layers or d.action_pad < action.dim or d.time_embedding_width < 2 or len(d.time_periods) != 2:
            raise ManifestError("decode: a pi0 bundle needs past_key_values inputs, action_pad >= action.dim, "
                                "time_embedding_width and time_periods; rebuild the bundle")
        self._past = tuple(f"past_key_values.{i}.{kv}" for i in layers for kv in ("key", "value"))
        self.prefill_keep = tuple(f"present.{i}.{kv}" for i in layers for kv in ("key", "value"))
        self._with_state = not d.state_in_prompt
        _require(expert, self._past + ("prefix_mask", "noisy_actions", "time_embedding")
                 + (("state",) if self._with_state else ()), ("velocity",))
        _require(prefill, ("image_embeds", "input_ids", "prompt_mask"), self.prefill_keep)
        self._dim, self._steps = action.dim, d.flow_steps
        self._noise = FlowNoise(d.noise_seed)  # once per policy: runs repeat exactly
        self._injected: np.ndarray | None = None
        self._x = np.zeros((1, action.horizon, d.action_pad), dtype=np.float32)  # [1, H, Ap] x_t
        self._step = np.zeros_like(self._x)  # [1, H, Ap] one Euler increment
        self._dt = np.float32(1.0 / d.flow_steps)
        self._embeds = [flow_time_embedding(t, d.time_embedding_width, *d.time_periods)
                        for t in flow_times(d.flow_steps)]  # N x [1, W]: the grid is fixed
        self._state = np.zeros((1, max(d.state_pad, 1)), dtype=np.float32)  # [1, Sp] normalised, padded
        self._prefix_mask: np.ndarray | None = None  # [1, L]

    def prepare(self, normalized_state: np.ndarray, prefix_mask: np.ndarray) -> None:
        """This tick's normalised state (pi0: padded with zeros) and which prefix positions are real."""
        self._state.fill(0.0)
        if self._with_state:
            self._state[0, : normalized_state.shape[0]] = normalized_state
        self._prefix_mask = prefix_mask

    def inject_noise(self, noise: np.ndarray) -> None:
        """Use this start noise [1, H, Ap] for the next decode only (parity replays LeRobot's)."""
        self._injected = np.asarray(noise, dtype=np.float32).reshape(self._x.shape)

    def decode(self, prefix: Mapping[str, Any], run: RunGraph, prefix_len: int) -> Decoded:
        if self._prefix_mask is None:
            raise RuntimeError("Pi0Decoder.decode before prepare(state, prefix_mask)")
        if self._injected is not None:
            self._x[...], self._injected = self._injected, None
        else:
            self._x[0] = self._noise.draw(*self._x.shape[1:])  # [H, Ap]
        feeds = {p: prefix[q] for p, q in zip(self._past, self.prefill_keep, strict=True)}
        feeds["prefix_mask"] = self._prefix_mask
        if self._with_state:
            feeds["state"] = self._state
        for k in range(self._steps):
            feeds["noisy_actions"], feeds["time_embedding"] = self._x, self._embeds[k]
            v = run("expert", feeds, ())["velocity"]  # [1, H, Ap]
            np.multiply(v, self._dt, out=self._step)
            self._x -= self._step
        return Decoded(normalized=self._x[0, :, : self._dim].copy(), bins=None)


def infer_pi0(
    prompt: Pi0Prompt,
    decoder: Pi0Decoder,
    run: RunGraph,
    pixels: Sequence[np.ndarray],
    task: str,
    normalized_state: np.ndarray,
) -> Decoded:
    """One pi0 inference through `run` (the policy's timed graph runner): preprocessed views in the
    bundle's order [1,3,S,S] each, the task and the normalised state [S] -> the normalised chunk."""
    ids, mask = prompt(task, normalized_state)  # [1, T] each
    embeds = [np.array(run("vision", {"pixel_values": p}, ())["image_embeds"], copy=True) for p in pixels]
    image_embeds = np.concatenate(embeds, axis=1)  # [1, C*N, E]
    prefix = run("prefill", {"image_embeds": image_embeds, "input_ids": ids, "prompt_mask": mask},
                 decoder.prefill_keep)
    prefix_mask = np.concatenate([np.ones((1, image_embeds.shape[1]), np.int64), mask], axis=1)  # [1, L]
    decoder.prepare(normalized_state, prefix_mask)
    return decoder.decode(prefix, run, prefix_mask.shape[1])


__all__ = ["Pi0Decoder", "Pi0Prompt", "infer_pi0"]
