"""From the prefix graphs' outputs to a normalised action chunk, one decoder per head.

A decoder owns the loop after prefill (greedy action tokens over the KV cache, one parallel
head pass, or Euler steps of a flow) and nothing else: graphs are reached through a `run`
callable, so the same decoder drives onnxruntime, TensorRT or a test's session, and the policy
can tap and time every graph call. Unnormalisation into physical units is a separate step so
calibration can compare model-space actions.

Conventions shared with the exporter (and the accuracy gate):
- bins: `bins` uniform bins over [-1, 1]; bin j decodes to its centre -1 + (j + 0.5) * 2 / bins.
- tokens: horizon 1; step 0 takes prefill's action_logits; step k > 0 feeds action token id
  (action_token_offset + previous bin) at position prefix_len + k - 1 with the KV cache.
- flow: x ~ N(0, 1) from one generator seeded once per policy; for k in 0..N-1,
  t = 1 - k / N and x <- x - v(context, x, t) / N.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from vla_runtime.runtime.manifest import ActionSpace, GraphSpec, Manifest, ManifestError

logger = logging.getLogger(__name__)

# run(role, inputs, keep) -> outputs; numpy outputs may be reused buffers, kept ones resident.
RunGraph = Callable[[str, Mapping[str, Any], tuple[str, ...]], dict[str, Any]]


@dataclass(frozen=True)
class Decoded:
    normalized: np.ndarray  # float32 [H, D], model space ([-1, 1] for binned heads)
    bins: np.ndarray | None  # int64 [H, D] chosen bins (tokens, parallel); None for flow


def bin_centres(bins: int) -> np.ndarray:
    """float32 [bins]: the value each bin decodes to."""
    return (-1.0 + (np.arange(bins, dtype=np.float64) + 0.5) * 2.0 / bins).astype(np.float32)


def _require(spec: GraphSpec, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    missing = [n for n in inputs if n not in spec.input_names]
    missing += [n for n in outputs if n not in spec.output_names]
    if missing:
        raise ManifestError(f"graphs.{spec.role}: lacks tensor(s) {missing} this runtime needs; rebuild the bundle")


class Decoder(ABC):
    """Turns prefill outputs into one normalised action chunk."""

    role: ClassVar[str]  # the graph this decoder runs after prefill
    prefill_keep: tuple[str, ...] = ()  # prefill outputs that stay on the backend for the decoder

    @abstractmethod
    def decode(self, prefix: Mapping[str, Any], run: RunGraph, prefix_len: int) -> Decoded:
        """Run the head's graph(s) and pick the actions."""

    def reset(self) -> None:  # noqa: B027 - most heads carry nothing over
        """Forget what carries over between inferences (start of an episode)."""


class TokensDecoder(Decoder):
    """Greedy action tokens, D steps, with the KV cache kept on the backend between steps."""

    role = "decode"

    def __init__(self, manifest: Manifest):
        action = manifest.action
        if action.horizon != 1:
            raise ManifestError("action.horizon must be 1 for the tokens head (one token per dimension)")
        decode, prefill = manifest.graphs["decode"], manifest.graphs["prefill"]
        layers = sorted({n.split(".")[1] for n in decode.input_names if n.startswith("past_key_values.")}, key=int)
        if not layers:
            raise ManifestError("graphs.decode: no past_key_values.{i}.key/value inputs; rebuild the bundle")
        self._past = tuple(f"past_key_values.{i}.{kv}" for i in layers for kv in ("key", "value"))
        self._present = tuple(f"present.{i}.{kv}" for i in layers for kv in ("key", "value"))
        _require(decode, ("input_ids", "position_ids") + self._past, ("action_logits",) + self._present)
        _require(prefill, (), ("action_logits",) + self._present)
        self.prefill_keep = self._present
        self._dim, self._bins, self._offset = action.dim, action.bins, action.action_token_offset
        self._ids = np.zeros((1, 1), dtype=np.int64)  # [1,1] previous action token id
        self._pos = np.zeros((1, 1), dtype=np.int64)  # [1,1] its position in the sequence
        self._chosen = np.zeros((1, action.dim), dtype=np.int64)  # [H=1, D]
        self._centres = bin_centres(action.bins)  # [bins]

    def decode(self, prefix: Mapping[str, Any], run: RunGraph, prefix_len: int) -> Decoded:
        logits = prefix["action_logits"]  # [1, bins]
        past = {p: prefix[q] for p, q in zip(self._past, self._present, strict=True)}
        for k in range(self._dim):
            if k > 0:
                self._ids[0, 0] = self._offset + self._chosen[0, k - 1]
                self._pos[0, 0] = prefix_len + k - 1
                out = run("decode", {"input_ids": self._ids, "position_ids": self._pos, **past}, self._present)
                logits = out["action_logits"]  # [1, bins]
                past = {p: out[q] for p, q in zip(self._past, self._present, strict=True)}
            if logits.shape[-1] != self._bins:
                raise ManifestError(f"action_logits has {logits.shape[-1]} ids, action.bins is {self._bins}")
            self._chosen[0, k] = int(np.argmax(logits[0]))
        bins = self._chosen.copy()  # [1, D]
        return Decoded(normalized=self._centres[bins], bins=bins)


class ParallelDecoder(Decoder):
    """One head pass; argmax per step and dimension. Optionally conditioned on the last action."""

    role = "head"
    prefill_keep = ("pooled",)

    def __init__(self, manifest: Manifest):
        action, head = manifest.action, manifest.graphs["head"]
        self._conditioned = manifest.decode.condition_on_past_action
        _require(head, ("pooled",) + (("past_action",) if self._conditioned else ()), ("action_logits",))
        _require(manifest.graphs["prefill"], (), ("pooled",))
        self._shape = (action.horizon, action.dim, action.bins)
        # The step executed last before the next inference, given how often the loop replans.
        self._carry_row = min(manifest.control.replan_every, action.horizon) - 1
        self._past_action = np.zeros((1, action.dim), dtype=np.int64)  # [1, D] bins; zeros at start
        self._centres = bin_centres(action.bins)  # [bins]

    def decode(self, prefix: Mapping[str, Any], run: RunGraph, prefix_len: int) -> Decoded:
        feeds = {"pooled": prefix["pooled"]}
        if self._conditioned:
            feeds["past_action"] = self._past_action
        logits = run("head", feeds, ())["action_logits"]  # [1, H, D, bins]
        if logits.shape[1:] != self._shape:
            raise ManifestError(f"head action_logits shape {logits.shape[1:]} != (H, D, bins) {self._shape}")
        bins = np.argmax(logits[0], axis=-1)  # [H, D] int64
        if self._conditioned:
            self._past_action[0] = bins[self._carry_row]
        return Decoded(normalized=self._centres[bins], bins=bins)

    def reset(self) -> None:
        self._past_action.fill(0)


class FlowDecoder(Decoder):
    """N Euler steps of the learned velocity field from seeded Gaussian noise, in float32."""

    role = "velocity"
    prefill_keep = ("hidden_states",)

    def __init__(self, manifest: Manifest):
        action, settings = manifest.action, manifest.decode
        _require(manifest.graphs["velocity"], ("context", "noisy_actions", "timestep"), ("velocity",))
        _require(manifest.graphs["prefill"], (), ("hidden_states",))
        self._shape = (action.horizon, action.dim)
        self._steps = settings.flow_steps
        self._rng = np.random.default_rng(settings.noise_seed)  # once per policy: runs repeat exactly
        self._x = np.zeros((1, action.horizon, action.dim), dtype=np.float32)  # [1, H, D] x_t
        self._t = np.zeros((1,), dtype=np.float32)  # [1] flow time, 1 = noise, 0 = data
        self._step = np.zeros_like(self._x)  # [1, H, D] one Euler increment
        self._dt = np.float32(1.0 / settings.flow_steps)

    def decode(self, prefix: Mapping[str, Any], run: RunGraph, prefix_len: int) -> Decoded:
        context = prefix["hidden_states"]  # [1, L, E], resident
        self._x[0] = self._rng.standard_normal(self._shape)  # [H, D] float64 draw -> float32
        for k in range(self._steps):
            self._t[0] = 1.0 - k / self._steps
            v = run("velocity", {"context": context, "noisy_actions": self._x, "timestep": self._t}, ())
            np.multiply(v["velocity"], self._dt, out=self._step)  # [1, H, D]
            self._x -= self._step
        return Decoded(normalized=self._x[0].copy(), bins=None)


DECODERS: dict[str, type[Decoder]] = {"tokens": TokensDecoder, "parallel": ParallelDecoder, "flow": FlowDecoder}


class Unnormalizer:
    """Model-space float32 [H, D] -> physical float64 [H, D] with the bundle's statistics."""

    def __init__(self, action: ActionSpace):
        norm = action.normalization
        d = action.dim
        self.kind = norm.kind
        self._mask = np.asarray(norm.mask if norm.mask else (True,) * d, dtype=bool)  # [D]
        if norm.kind == "q01_q99":
            low, high = np.asarray(norm.low, np.float64), np.asarray(norm.high, np.float64)  # [D]
            self._scale, self._offset = 0.5 * (high - low), 0.5 * (high - low) + low  # a = x*scale + offset
        elif norm.kind == "mean_std":
            self._scale, self._offset = np.asarray(norm.std, np.float64), np.asarray(norm.mean, np.float64)
        else:
            self._scale, self._offset = np.ones(d), np.zeros(d)
        self._scale = np.where(self._mask, self._scale, 1.0)  # [D] masked dims stay in model units
        self._offset = np.where(self._mask, self._offset, 0.0)  # [D]

    def __call__(self, normalized: np.ndarray) -> np.ndarray:
        actions = normalized.astype(np.float64) * self._scale + self._offset  # [H, D], a fresh array
        if not np.isfinite(actions).all():
            # The safety layer rejects non-finite commands; here we only make the cause visible.
            logger.warning("policy produced %d non-finite action value(s)", int((~np.isfinite(actions)).sum()))
        return actions


def make_decoder(manifest: Manifest) -> Decoder:
    return DECODERS[manifest.head](manifest)


__all__ = [
    "Decoded",
    "Decoder",
    "FlowDecoder",
    "ParallelDecoder",
    "RunGraph",
    "TokensDecoder",
    "Unnormalizer",
    "bin_centres",
    "make_decoder",
]
