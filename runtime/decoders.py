"""From the prefix graphs' outputs to a normalised action chunk, one decoder per head.

A decoder owns the loop after prefill (greedy action tokens over the KV cache, one parallel
head pass, or Euler steps of a flow) and nothing else: graphs are reached through a `run`
callable, so the same decoder drives onnxruntime, TensorRT or a test's session, and the policy
can tap and time every graph call. Unnormalisation into physical units is a separate step so
calibration can compare model-space actions.

The conventions these loops follow (bin centres, action ids and their positions, the seeded
flow noise and its time grid, normalisation) live in `vla_runtime.runtime.conventions`, shared
with the exporter, parity and the accuracy gate.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from vla_runtime.runtime.conventions import (
    ActionNormalizer,
    ActionTokens,
    FlowNoise,
    action_centres,
    flow_times,
    token_position,
)
from vla_runtime.runtime.manifest import ActionSpace, GraphSpec, Manifest, ManifestError

logger = logging.getLogger(__name__)

# run(role, inputs, keep) -> outputs; numpy outputs may be reused buffers, kept ones resident.
RunGraph = Callable[[str, Mapping[str, Any], tuple[str, ...]], dict[str, Any]]


@dataclass(frozen=True)
class Decoded:
    normalized: np.ndarray  # float32 [H, D], model space ([-1, 1] for binned heads)
    bins: np.ndarray | None  # int64 [H, D] chosen bins (tokens, parallel); None for flow


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

    # -- remote decoding: the robot keeps what it draws or carries, a server decodes -------------

    def extra_inputs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (dtype, shape without batch) of what `request_extras` sends; none for most heads."""
        return {}

    def request_extras(self) -> dict[str, np.ndarray]:
        """Robot side: this inference's draw or carry-over ([1, ...] arrays), as a local decode would use it."""
        return {}

    def use_extras(self, extras: Mapping[str, np.ndarray]) -> None:  # noqa: B027 - nothing to take
        """Server side: decode the next request with the robot's own draw or carry-over."""

    def observe(self, decoded: Decoded) -> None:  # noqa: B027 - nothing carries over
        """Robot side, after a server decoded: carry over what a local decode would have."""


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
        self._dim, self._bins, self._tokens = action.dim, action.bins, ActionTokens.of(action)
        self._ids = np.zeros((1, 1), dtype=np.int64)  # [1,1] previous action token id
        self._pos = np.zeros((1, 1), dtype=np.int64)  # [1,1] its position in the sequence
        self._chosen = np.zeros((1, action.dim), dtype=np.int64)  # [H=1, D]
        self._centres = action_centres(action)  # [bins] the manifest's own table

    def decode(self, prefix: Mapping[str, Any], run: RunGraph, prefix_len: int) -> Decoded:
        logits = prefix["action_logits"]  # [1, bins]
        past = {p: prefix[q] for p, q in zip(self._past, self._present, strict=True)}
        for k in range(self._dim):
            if k > 0:
                self._ids[0, 0] = self._tokens.token_id(self._chosen[0, k - 1])
                self._pos[0, 0] = token_position(prefix_len, k)
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
        self._centres = action_centres(action)  # [bins] the manifest's own table

    def decode(self, prefix: Mapping[str, Any], run: RunGraph, prefix_len: int) -> Decoded:
        feeds = {"pooled": prefix["pooled"]}
        if self._conditioned:
            feeds["past_action"] = self._past_action
        logits = run("head", feeds, ())["action_logits"]  # [1, H, D, bins]
        if logits.shape[1:] != self._shape:
            raise ManifestError(f"head action_logits shape {logits.shape[1:]} != (H, D, bins) {self._shape}")
        bins = np.argmax(logits[0], axis=-1)  # [H, D] int64
        decoded = Decoded(normalized=self._centres[bins], bins=bins)
        self.observe(decoded)
        return decoded

    def reset(self) -> None:
        self._past_action.fill(0)

    def extra_inputs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {"past_action": ("int64", (self._shape[1],))} if self._conditioned else {}

    def request_extras(self) -> dict[str, np.ndarray]:
        return {"past_action": self._past_action.copy()} if self._conditioned else {}  # [1, D] bins

    def use_extras(self, extras: Mapping[str, np.ndarray]) -> None:
        if self._conditioned:
            self._past_action[0] = np.asarray(extras["past_action"]).reshape(-1)  # [D]

    def observe(self, decoded: Decoded) -> None:
        if self._conditioned and decoded.bins is not None:
            self._past_action[0] = decoded.bins[self._carry_row]


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
        self._noise = FlowNoise(settings.noise_seed)  # once per policy: runs repeat exactly
        self._x = np.zeros((1, action.horizon, action.dim), dtype=np.float32)  # [1, H, D] x_t
        self._times = flow_times(settings.flow_steps)  # [N] 1 = noise .. towards 0 = data
        self._t = np.zeros((1,), dtype=np.float32)  # [1] the current flow time
        self._step = np.zeros_like(self._x)  # [1, H, D] one Euler increment
        self._dt = np.float32(1.0 / settings.flow_steps)
        self._given: np.ndarray | None = None  # [H, D] the robot's noise for the next decode (server side)

    def decode(self, prefix: Mapping[str, Any], run: RunGraph, prefix_len: int) -> Decoded:
        context = prefix["hidden_states"]  # [1, L, E], resident
        given, self._given = self._given, None
        self._x[0] = self._noise.draw(*self._shape) if given is None else given  # [H, D]
        for k in range(self._steps):
            self._t[0] = self._times[k]
            v = run("velocity", {"context": context, "noisy_actions": self._x, "timestep": self._t}, ())
            np.multiply(v["velocity"], self._dt, out=self._step)  # [1, H, D]
            self._x -= self._step
        return Decoded(normalized=self._x[0].copy(), bins=None)

    def extra_inputs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {"noise": ("float32", self._shape)}

    def request_extras(self) -> dict[str, np.ndarray]:
        return {"noise": self._noise.draw(*self._shape)[None]}  # [1, H, D]: the draw a local decode makes

    def use_extras(self, extras: Mapping[str, np.ndarray]) -> None:
        noise = np.asarray(extras["noise"], dtype=np.float32)
        if noise.size != self._x.size:
            raise ManifestError(f"noise has {noise.size} values, the chunk needs {self._shape}")
        self._given = noise.reshape(self._shape)


DECODERS: dict[str, type[Decoder]] = {"tokens": TokensDecoder, "parallel": ParallelDecoder, "flow": FlowDecoder}


class Unnormalizer:
    """Model-space float32 [H, D] -> physical float64 [H, D] with the bundle's statistics."""

    def __init__(self, action: ActionSpace):
        self._normalizer = ActionNormalizer(action.normalization, action.dim)
        self.kind = self._normalizer.kind

    def __call__(self, normalized: np.ndarray) -> np.ndarray:
        actions = self._normalizer.unnormalize(normalized)  # [H, D], a fresh array
        if not np.isfinite(actions).all():
            # The safety layer rejects non-finite commands; here we only make the cause visible.
            logger.warning("policy produced %d non-finite action value(s)", int((~np.isfinite(actions)).sum()))
        return actions


def make_decoder(manifest: Manifest) -> Decoder:
    if manifest.head not in DECODERS:  # "pi0": runtime.kv_flow.Pi0Decoder, which builds on this module
        raise ManifestError(f"decode.head {manifest.head!r} has its own decoder (runtime.kv_flow for pi0)")
    return DECODERS[manifest.head](manifest)


__all__ = [
    "Decoded",
    "Decoder",
    "FlowDecoder",
    "ParallelDecoder",
    "RunGraph",
    "TokensDecoder",
    "Unnormalizer",
    "make_decoder",
]
