"""Parity: the exported graphs against the PyTorch model, per graph and at the action level.

Two levels, both compared rather than hard-coded, and both run the bundle the way the robot
does: through `vla_runtime.runtime.policy.load_policy` and its backends, nothing else. Per
graph: each graph (on the policy's own runner) and its PyTorch wrapper get identical inputs
(taken from the PyTorch side, so errors do not compound) and the max abs difference over all
outputs is reported. Per action: the policy infers from the raw frame and task, and the
reference model runs transformers' own uncached PaliGemma forward on the same pixel_values,
input_ids and noise; tokens and parallel heads must pick identical bins, the flow head's chunk
must agree within a tolerance. Both sides take their conventions from
`vla_runtime.runtime.conventions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from vla_runtime.export import graphs as G
from vla_runtime.export.model import ReferenceVLA
from vla_runtime.runtime.bundle import open_bundle
from vla_runtime.runtime.conventions import action_centres, flow_noise, token_position
from vla_runtime.runtime.manifest import STATE_INPUT, Manifest, StateSpace
from vla_runtime.runtime.policy import BundlePolicy, load_policy
from vla_runtime.runtime.types import Frame, Frames, RobotState

logger = logging.getLogger(__name__)

# Instructions of different lengths, so the dynamic prompt axis is exercised at real sizes.
PARITY_TASKS = ("pick up the red block", "put the green cup into the bowl next to the yellow sponge", "open it")


@dataclass(frozen=True)
class Tolerance:
    graph_atol: float = 1e-3  # max abs error of any graph output (logits, hidden states, KV)
    flow_atol: float = 1e-3  # max abs error of the flow chunk, normalised units ([-1, 1] scale)


class ParityError(RuntimeError):
    """The exported graphs do not reproduce the PyTorch model."""


def parity_images(count: int, seed: int) -> list[np.ndarray]:
    """Seeded camera-like frames (a coloured block on a table), not square and not the model's size."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        img = rng.integers(90, 140, size=(48, 64, 3), dtype=np.uint8)  # [H, W, 3] table texture
        y, x = rng.integers(4, 30), rng.integers(4, 44)
        img[y : y + 14, x : x + 16] = rng.integers(0, 256, size=3, dtype=np.uint8)  # the object
        frames.append(img)
    return frames


def parity_state(rng: np.random.Generator, space: StateSpace) -> RobotState | None:
    """A seeded measured state (joints in rad / m, gripper 0..1) for a bundle that reads one, else None."""
    if not space.names:
        return None
    joints = rng.uniform(-1.0, 1.0, size=space.dim - int(space.has_gripper))  # [J]
    return RobotState(joints, np.zeros(3), np.zeros(3), float(rng.uniform(0.0, 1.0)), 0.0)


def _max_err(a: torch.Tensor | np.ndarray, b: np.ndarray) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    if a.shape != b.shape:
        raise ParityError(f"shape mismatch: PyTorch {a.shape} vs ONNX {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


@torch.no_grad()
def graph_errors(
    model: ReferenceVLA,
    policy: BundlePolicy,
    pixel_values: np.ndarray,
    input_ids: np.ndarray,
    state: np.ndarray | None = None,
) -> dict:
    """role -> max abs error over that graph's outputs, for one observation.

    pixel_values is [V, 3, S, S] (one row per camera view, in the manifest's order); state the
    normalised state [1, S] for a bundle that reads one."""
    m = policy.manifest
    px, ids = torch.from_numpy(pixel_values), torch.from_numpy(input_ids)
    st = torch.from_numpy(state) if state is not None else None
    extra = {STATE_INPUT: state} if state is not None else {}
    errors = {}
    image = G.VisionGraph(model)(px)  # [V, N, E]
    errors["vision"] = max(  # the vision graph runs once per view
        _max_err(image[v : v + 1], policy.run_graph("vision", {"pixel_values": view})["image_embeds"])
        for v, view in enumerate(np.split(pixel_values, len(pixel_values)))  # [1, 3, S, S] each
    )
    image = image.reshape(1, -1, image.shape[-1])  # [1, V*N, E] views concatenated in order
    ref = G.PrefillGraph(model)(image, ids)
    got = policy.run_graph("prefill", {"image_embeds": image.numpy(), "input_ids": input_ids})
    ref = ref if isinstance(ref, tuple) else (ref,)
    errors["prefill"] = max(_max_err(r, got[s.name]) for r, s in zip(ref, m.graphs["prefill"].outputs, strict=True))
    if m.head == "tokens":
        logits, *past = ref
        prefix = image.shape[1] + ids.shape[1]
        token = torch.tensor([[model.tokens.token_id(int(logits.argmax()))]])  # [1, 1]
        pos = torch.tensor([[token_position(prefix, 1)]])  # [1, 1] position of the first generated id
        ref_dec = G.DecodeGraph(model)(token, pos, *past)
        feeds = {"input_ids": token.numpy(), "position_ids": pos.numpy()}
        feeds.update({s.name: p.numpy() for s, p in zip(m.graphs["decode"].inputs[2:], past, strict=True)})
        got_dec = policy.run_graph("decode", feeds)
        specs = m.graphs["decode"].outputs
        errors["decode"] = max(_max_err(r, got_dec[s.name]) for r, s in zip(ref_dec, specs, strict=True))
    elif m.head == "parallel":
        pooled = ref[0]  # [1, E]
        feeds = {"pooled": pooled.numpy(), **extra}
        past_action = None
        if m.decode.condition_on_past_action:
            past_action = torch.arange(m.action.dim)[None] * 37 % m.action.bins  # [1, D] arbitrary bins
            feeds["past_action"] = past_action.numpy()
        got_head = policy.run_graph("head", feeds)["action_logits"]  # [1, H, D, 256]
        errors["head"] = _max_err(G.HeadGraph(model)(pooled, past_action, st), got_head)
    else:
        context = ref[0]  # [1, L, E]
        noise = torch.from_numpy(flow_noise(m.decode.noise_seed, m.action.horizon, m.action.dim))[None]  # [1, H, D]
        worst = 0.0
        for t in (1.0, 0.5, 0.1):
            tt = torch.tensor([t])  # [1]
            feeds = {"context": context.numpy(), "noisy_actions": noise.numpy(), "timestep": tt.numpy(), **extra}
            out = policy.run_graph("velocity", feeds)["velocity"]
            worst = max(worst, _max_err(G.VelocityGraph(model)(context, noise, tt, st), out))
        errors["velocity"] = worst
    return errors


def _policy_actions(
    bundle_dir: Path, frames: Frames, task: str, state: RobotState | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(normalised [H, D], bins [H, D] or None) from a fresh runtime policy's first inference.

    Fresh per observation: the flow noise is the generator's first draw and a conditioned
    parallel head starts from "no previous action", as in the reference.
    """
    with load_policy(bundle_dir, backend="cpu", allow_failed_gate=True, verify=False) as policy:
        policy.infer(frames, task, state)
        bins = policy.last_bins
        return np.array(policy.last_normalized, dtype=np.float32), None if bins is None else np.array(bins)


def _reference_actions(
    model: ReferenceVLA, manifest: Manifest, px: torch.Tensor, ids: torch.Tensor, state: torch.Tensor | None
):
    """(normalised [H, D], bins [H, D] or None) from transformers' uncached forward (px: [V, 3, S, S])."""
    centres = action_centres(manifest.action)
    if manifest.head == "tokens":
        bins = np.asarray(model.reference_tokens(px, ids))[None]  # [1, D]
        return centres[bins], bins
    if manifest.head == "parallel":
        past = None
        if manifest.decode.condition_on_past_action:
            past = torch.zeros(1, manifest.action.dim, dtype=torch.long)  # [1, D] no previous action yet
        bins = model.reference_parallel_logits(px, ids, past, state)[0].argmax(-1).numpy()  # [H, D]
        return centres[bins], bins
    noise = torch.from_numpy(flow_noise(manifest.decode.noise_seed, manifest.action.horizon, manifest.action.dim))
    return model.reference_flow(px, ids, noise, manifest.decode.flow_steps, state).numpy(), None


def run_parity(
    model: ReferenceVLA,
    bundle_dir: Path,
    manifest: Manifest,
    seed: int = 0,
    tol: Tolerance | None = None,
    progress: bool = False,
) -> dict:
    """Both levels over a few observations; returns the manifest's `parity` report (never raises on mismatch)."""
    tol = tol or Tolerance()
    bundle_dir = Path(bundle_dir)
    # Every hash and the seal are checked; the signature is not: a bundle is signed after it is
    # built, so a workstation that also has a trust store must still be able to build one.
    open_bundle(bundle_dir, verify=True)
    policy = load_policy(bundle_dir, backend="cpu", allow_failed_gate=True, verify=False)
    name = f"vla_runtime.runtime.policy ({policy.backend_name})"
    per_graph: dict[str, float] = {}
    bins_equal, bins_total, flow_err = 0, 0, 0.0
    views = policy.views
    images = parity_images(len(PARITY_TASKS) * len(views), seed)  # a different image per view
    rng = np.random.default_rng(seed)
    with policy:
        for i, task in enumerate(tqdm(PARITY_TASKS, desc="parity", unit="obs", disable=not progress)):
            frames = {v: Frame(image=images[i * len(views) + j], t_capture=0.0) for j, v in enumerate(views)}
            state = parity_state(rng, manifest.state)
            # [V, 3, S, S] own copies: the preprocess buffers are reused
            px = np.concatenate([np.array(policy.preprocess(frames[v].image, v), dtype=np.float32) for v in views])
            ids = np.array(policy.tokenize(task), dtype=np.int64)  # [1, T]
            vector = policy.state_vector(state)
            vector = None if vector is None else np.array(vector, dtype=np.float32)  # [1, S]
            for role, err in graph_errors(model, policy, px, ids, vector).items():
                per_graph[role] = max(per_graph.get(role, 0.0), err)
            st = None if vector is None else torch.from_numpy(vector)
            ref_norm, ref_bins = _reference_actions(model, manifest, torch.from_numpy(px), torch.from_numpy(ids), st)
            got_norm, got_bins = _policy_actions(bundle_dir, frames, task, state)
            if ref_bins is not None:
                if got_bins is None:
                    raise ParityError("the runtime policy returned no action bins for a discrete head")
                bins_equal += int((np.asarray(got_bins) == ref_bins).sum())
                bins_total += ref_bins.size
            flow_err = max(flow_err, float(np.max(np.abs(got_norm.astype(np.float64) - ref_norm))))
    graphs_ok = all(err <= tol.graph_atol for err in per_graph.values())
    action = {"max_abs_err": flow_err, "observations": len(PARITY_TASKS)}
    if manifest.head == "flow":
        action["tolerance"] = tol.flow_atol
        action_ok = flow_err <= tol.flow_atol
    else:
        action.update(identical_bins=bins_equal == bins_total, bins_matched=bins_equal, bins_total=bins_total)
        action_ok = bins_equal == bins_total
    action["passed"] = action_ok
    return {
        "passed": bool(graphs_ok and action_ok),
        "runner": name,
        "reference": "transformers PaliGemmaForConditionalGeneration forward (uncached) + head, fp32",
        "graph_tolerance": tol.graph_atol,
        "graphs": {role: {"max_abs_err": err, "passed": err <= tol.graph_atol} for role, err in per_graph.items()},
        "action": action,
    }


def parity_failure(report: dict) -> str | None:
    """One line naming what failed, or None when parity passed."""
    if report.get("passed"):
        return None
    bad = [f"{r} max abs err {g['max_abs_err']:.2e} > {report['graph_tolerance']:.0e}"
           for r, g in report["graphs"].items() if not g["passed"]]
    act = report["action"]
    if not act["passed"]:
        if "bins_total" in act:
            bad.append(f"action bins differ ({act['bins_matched']}/{act['bins_total']} identical)")
        else:
            bad.append(f"flow chunk max abs err {act['max_abs_err']:.2e} > {act['tolerance']:.0e}")
    return "; ".join(bad)
