"""The exported graphs run with plain onnxruntime sessions, decoded by the bundle's conventions.

Parity prefers the onboard inference path (`vla_runtime.runtime.policy`); this small runner
is the fallback when that module is not importable, and the per-graph parity uses its
sessions. It follows the decoding conventions written in the manifest: greedy action ids with
a KV cache (tokens), argmax over bins (parallel), seeded Euler integration (flow).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from vla_runtime.runtime.manifest import Manifest

logger = logging.getLogger(__name__)


def flow_noise(seed: int, horizon: int, dim: int) -> np.ndarray:
    """The start noise both sides use: the first draw of a seeded numpy generator."""
    return np.random.default_rng(seed).standard_normal((horizon, dim)).astype(np.float32)  # [H, D]


def bin_centres(bins: int) -> np.ndarray:
    return (-1.0 + (np.arange(bins) + 0.5) * 2.0 / bins).astype(np.float32)  # [bins]


class OrtGraphs:
    """One CPU session per graph of a bundle, fed and read by tensor name."""

    def __init__(self, bundle_dir: Path, manifest: Manifest):
        self.manifest = manifest
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sessions = {
            role: ort.InferenceSession(str(Path(bundle_dir) / spec.file), opts, providers=["CPUExecutionProvider"])
            for role, spec in manifest.graphs.items()
        }

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[role]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds), strict=True))

    def actions(
        self, pixel_values: np.ndarray, input_ids: np.ndarray, past_action: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(normalised actions f32 [H, D], bins int [H, D] or None for the flow head)."""
        m = self.manifest
        image = self.run("vision", {"pixel_values": pixel_values})["image_embeds"]  # [1, N, E]
        prefill = self.run("prefill", {"image_embeds": image, "input_ids": input_ids})
        centres = bin_centres(m.action.bins)
        if m.head == "tokens":
            bins = self._greedy(prefill, image.shape[1] + input_ids.shape[1])  # [D]
            return centres[bins][None], bins[None]
        if m.head == "parallel":
            feeds = {"pooled": prefill["pooled"]}
            if m.decode.condition_on_past_action:
                zeros = np.zeros((1, m.action.dim), dtype=np.int64)  # [1, D]
                feeds["past_action"] = zeros if past_action is None else past_action.astype(np.int64)
            logits = self.run("head", feeds)["action_logits"][0]  # [H, D, 256]
            bins = logits.argmax(-1)  # [H, D]
            return centres[bins], bins
        context = prefill["hidden_states"]  # [1, L, E]
        x = flow_noise(m.decode.noise_seed, m.action.horizon, m.action.dim)[None]  # [1, H, D]
        steps = m.decode.flow_steps
        for k in range(steps):
            t = np.array([1.0 - k / steps], dtype=np.float32)  # [1]
            feeds = {"context": context, "noisy_actions": x, "timestep": t}
            x = x - np.float32(1.0 / steps) * self.run("velocity", feeds)["velocity"]  # [1, H, D]
        return x[0], None

    def _greedy(self, prefill: dict[str, np.ndarray], prefix_len: int) -> np.ndarray:
        m = self.manifest
        layers = m.decode.num_layers
        offset = m.action.action_token_offset
        bins = [int(prefill["action_logits"][0].argmax())]
        past = _as_past(prefill, layers)
        for k in range(1, m.action.dim):
            feeds = {
                "input_ids": np.array([[offset + bins[-1]]], dtype=np.int64),  # [1, 1]
                "position_ids": np.array([[prefix_len + k - 1]], dtype=np.int64),  # [1, 1]
                **past,
            }
            out = self.run("decode", feeds)
            bins.append(int(out["action_logits"][0].argmax()))
            past = _as_past(out, layers)
        return np.asarray(bins, dtype=np.int64)  # [D]


def _as_past(outputs: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """present.{i}.key/value of one step become past_key_values.{i}.key/value of the next."""
    return {
        f"past_key_values.{i}.{kv}": outputs[f"present.{i}.{kv}"] for i in range(layers) for kv in ("key", "value")
    }
