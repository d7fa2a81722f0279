"""Parity: the exported graphs against the PyTorch model, per graph and at the action level.

Two levels, both compared rather than hard-coded, and both run the bundle the way the robot
does: through the runtime's own backends and `vla_runtime.runtime.policy.load_policy`. Per
graph: each graph and its PyTorch wrapper get identical inputs (taken from the PyTorch side, so
errors do not compound) and every output element must satisfy |got - ref| <= atol + rtol*|ref|.
Per action: the policy infers from the raw frame and task, and the reference model runs
transformers' own uncached PaliGemma forward on the same pixel_values, input_ids and noise. A
discrete head's bins must match, or (a near tie) score within tolerance of the reference's best
bin given the same earlier bins; a flow chunk must agree elementwise within tolerance.

Memory is bounded: all PyTorch references are computed first (half-precision weights computed
in float32, see precision.py), then one graph's session at a time is opened, checked and
released, then one policy at a time runs the action level. Peak memory is the PyTorch weights
plus the largest session, never every session twice over.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from vla_runtime.export import graphs as G
from vla_runtime.export.model import ReferenceVLA
from vla_runtime.export.precision import Tolerance, default_tolerance, dtype_name, float32_compute
from vla_runtime.runtime.backends import BackendOptions, select
from vla_runtime.runtime.bundle import Bundle, open_bundle
from vla_runtime.runtime.conventions import flow_noise, token_position
from vla_runtime.runtime.decoders import make_decoder
from vla_runtime.runtime.manifest import HEAD_GRAPHS, STATE_INPUT, Manifest, StateSpace
from vla_runtime.runtime.policy import BundlePolicy, default_threads, load_policy
from vla_runtime.runtime.types import Frame, Frames, RobotState

logger = logging.getLogger(__name__)

__all__ = ["ParityError", "Tolerance", "graph_errors", "parity_failure", "run_parity"]

# Instructions of different lengths, so the dynamic prompt axis is exercised at real sizes.
PARITY_TASKS = ("pick up the red block", "put the green cup into the bowl next to the yellow sponge", "open it")

Case = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (graph feeds, reference outputs by name)


class ParityError(RuntimeError):
    """The exported graphs do not reproduce the PyTorch model."""


@dataclass(frozen=True)
class Observation:
    frames: dict[str, Frame]  # one camera frame per view, uint8 [H, W, 3]
    task: str
    state: RobotState | None  # the measured state, for a bundle that reads one
    pixel_values: np.ndarray  # float32 [V, 3, S, S] as the runtime preprocesses each view
    input_ids: np.ndarray  # int64 [1, T] as the runtime tokenizes the task
    state_vector: np.ndarray | None  # float32 [1, S] the normalised state the graphs read


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


def observations(bundle: Bundle, count: int, seed: int) -> list[Observation]:
    """Frames, tasks and states turned into graph inputs by the runtime's own code, with no session loaded."""
    shell = BundlePolicy(bundle, {}, make_decoder(bundle.manifest), "none")  # preprocess, tokenizer, state
    views = shell.views
    images = parity_images(count * len(views), seed)  # a different image per view
    rng = np.random.default_rng(seed)
    found = []
    for i in range(count):
        task = PARITY_TASKS[i % len(PARITY_TASKS)]
        frames = {v: Frame(image=images[i * len(views) + j], t_capture=0.0) for j, v in enumerate(views)}
        state = parity_state(rng, bundle.manifest.state)
        # [V, 3, S, S] own copies: the preprocess buffers are reused
        px = np.concatenate([np.array(shell.preprocess(frames[v].image, v), dtype=np.float32) for v in views])
        vector = shell.state_vector(state)
        vector = None if vector is None else np.array(vector, dtype=np.float32)  # [1, S]
        found.append(Observation(frames, task, state, px, np.array(shell.tokenize(task), dtype=np.int64), vector))
    return found


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy()


@torch.no_grad()
def reference_cases(
    model: ReferenceVLA, manifest: Manifest, pixel_values: np.ndarray, input_ids: np.ndarray,
    state: np.ndarray | None = None,
) -> dict:
    """role -> [(feeds, reference outputs)] for one observation, from the PyTorch graph wrappers.

    pixel_values is [V, 3, S, S] (one row per camera view, in the manifest's order); state the
    normalised state [1, S] for a bundle that reads one."""
    px, ids = torch.from_numpy(pixel_values), torch.from_numpy(input_ids)
    st = torch.from_numpy(state) if state is not None else None
    extra = {STATE_INPUT: state} if state is not None else {}
    out_names = {role: manifest.graphs[role].output_names for role in manifest.graphs}
    cases: dict[str, list[Case]] = {}
    with float32_compute(model):
        image = G.VisionGraph(model)(px)  # [V, N, E]: the vision graph runs once per view
        cases["vision"] = [({"pixel_values": pixel_values[v : v + 1]}, {"image_embeds": _np(image[v : v + 1])})
                           for v in range(len(pixel_values))]
        image = image.reshape(1, -1, image.shape[-1])  # [1, V*N, E] views concatenated in order
        ref = G.PrefillGraph(model)(image, ids)
        ref = ref if isinstance(ref, tuple) else (ref,)
        feeds = {"image_embeds": _np(image), "input_ids": input_ids}
        cases["prefill"] = [(feeds, {n: _np(r) for n, r in zip(out_names["prefill"], ref, strict=True)})]
        if manifest.head == "tokens":
            logits, *past = ref
            token = torch.tensor([[model.tokens.token_id(int(logits.argmax()))]])  # [1, 1]
            pos = torch.tensor([[token_position(image.shape[1] + ids.shape[1], 1)]])  # [1, 1] first generated id
            dec = G.DecodeGraph(model)(token, pos, *past)
            feeds = {"input_ids": token.numpy(), "position_ids": pos.numpy()}
            feeds.update({s.name: _np(p) for s, p in zip(manifest.graphs["decode"].inputs[2:], past, strict=True)})
            cases["decode"] = [(feeds, {n: _np(r) for n, r in zip(out_names["decode"], dec, strict=True)})]
        elif manifest.head == "parallel":
            pooled = ref[0]  # [1, E]
            feeds, past_action = {"pooled": _np(pooled), **extra}, None
            if manifest.decode.condition_on_past_action:
                past_action = torch.arange(manifest.action.dim)[None] * 37 % manifest.action.bins  # [1, D] any bins
                feeds["past_action"] = past_action.numpy()
            cases["head"] = [(feeds, {"action_logits": _np(G.HeadGraph(model)(pooled, past_action, st))})]
        else:
            context = ref[0]  # [1, L, E]
            a = manifest.action
            noise = torch.from_numpy(flow_noise(manifest.decode.noise_seed, a.horizon, a.dim))[None]  # [1, H, D]
            cases["velocity"] = []
            for t in (1.0, 0.5, 0.1):
                tt = torch.tensor([t])  # [1]
                feeds = {"context": _np(context), "noisy_actions": noise.numpy(), "timestep": tt.numpy(), **extra}
                velocity = G.VelocityGraph(model)(context, noise, tt, st)
                cases["velocity"].append((feeds, {"velocity": _np(velocity)}))
    return cases


def _errors(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> tuple[float, float]:
    """(max abs error, worst error as a fraction of its allowed bound; <= 1 passes)."""
    if ref.shape != got.shape:
        raise ParityError(f"shape mismatch: PyTorch {ref.shape} vs ONNX {got.shape}")
    if not ref.size:
        return 0.0, 0.0
    ref64, diff = ref.astype(np.float64), np.abs(ref.astype(np.float64) - got.astype(np.float64))
    bound = tol.atol + tol.rtol * np.abs(ref64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)
    return float(diff.max()), float(np.nan_to_num(ratio, nan=np.inf).max())


def check_graphs(bundle: Bundle, cases: dict[str, list[Case]], tol: Tolerance, threads: int | None = None) -> dict:
    """Run every case through its graph, one session at a time; role -> {max_abs_err, worst, passed}."""
    m = bundle.manifest
    specs = [m.graphs[r] for r in HEAD_GRAPHS[m.head]]
    chosen = select("cpu", specs)
    options = BackendOptions(threads=threads or default_threads())
    results = {}
    for spec in specs:
        err, worst = 0.0, 0.0
        with chosen.cls(spec, bundle.path(spec.file), chosen.device, options) as runner:
            for feeds, expected in cases[spec.role]:
                outputs = runner.run(feeds)
                for name, ref in expected.items():
                    e, w = _errors(ref, runner.fetch(outputs[name]), tol)
                    err, worst = max(err, e), max(worst, w)
        gc.collect()  # the session's arena goes before the next graph's loads
        results[spec.role] = {"max_abs_err": err, "worst": worst, "passed": worst <= 1.0}
    return results


def graph_errors(
    model: ReferenceVLA, policy: BundlePolicy, pixel_values: np.ndarray, input_ids: np.ndarray,
    state: np.ndarray | None = None,
) -> dict:
    """role -> max abs error over that graph's outputs for one observation, on a loaded policy's runners."""
    errors = {}
    for role, role_cases in reference_cases(model, policy.manifest, pixel_values, input_ids, state).items():
        worst = 0.0
        for feeds, expected in role_cases:
            got = policy.run_graph(role, feeds)
            worst = max([worst] + [_errors(ref, got[name], Tolerance())[0] for name, ref in expected.items()])
        errors[role] = worst
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


@torch.no_grad()
def _reference_bin_logits(model: ReferenceVLA, manifest: Manifest, obs: Observation, got_bins: np.ndarray | None):
    """Reference action logits [H, D, 256] at every bin the policy chose, given the policy's earlier bins."""
    px, ids = torch.from_numpy(obs.pixel_values), torch.from_numpy(obs.input_ids)
    with float32_compute(model):
        if manifest.head == "parallel":
            past = None
            if manifest.decode.condition_on_past_action:
                past = torch.zeros(1, manifest.action.dim, dtype=torch.long)  # [1, D] no previous action yet
            st = None if obs.state_vector is None else torch.from_numpy(obs.state_vector)
            return model.reference_parallel_logits(px, ids, past, st)[0].float().numpy()  # [H, D, 256]
        steps = []
        for k in range(manifest.action.dim):  # teacher-forced on the policy's own earlier bins
            gen = torch.tensor([[model.tokens.token_id(int(b)) for b in got_bins[0, :k]]]) if k else None
            steps.append(model.reference_token_logits(px, ids, gen)[0].float().numpy())  # [256]
        return np.stack(steps)[None]  # [1, D, 256]


def _check_bins(logits: np.ndarray, got: np.ndarray, tol: Tolerance) -> tuple[int, int]:
    """(identical bins, bins within tolerance): a chosen bin passes if it scores within the bound of the best."""
    best = logits.max(-1)  # [H, D]
    chosen = np.take_along_axis(logits, got[..., None].astype(np.int64), -1)[..., 0]  # [H, D]
    identical = int((logits.argmax(-1) == got).sum())
    within = int((best - chosen <= tol.atol + tol.rtol * np.abs(best)).sum())
    return identical, within


@torch.no_grad()
def reference_actions(model: ReferenceVLA, manifest: Manifest, o: Observation) -> np.ndarray:
    """Flow: the reference chunk [H, D]; parallel: the reference logits [H, D, 256] (no policy needed)."""
    px, ids = torch.from_numpy(o.pixel_values), torch.from_numpy(o.input_ids)
    if manifest.head == "parallel":
        return _reference_bin_logits(model, manifest, o, None)
    a = manifest.action
    noise = torch.from_numpy(flow_noise(manifest.decode.noise_seed, a.horizon, a.dim))
    st = None if o.state_vector is None else torch.from_numpy(o.state_vector)
    with float32_compute(model):
        return model.reference_flow(px, ids, noise, manifest.decode.flow_steps, st).float().numpy()  # [H, D]


def check_actions(
    model: ReferenceVLA, bundle: Bundle, obs: list[Observation], tol: Tolerance, expected: list | None = None
) -> dict:
    """The action level: one fresh policy per observation against the reference model.

    `expected` holds `reference_actions` per observation (flow, parallel); the tokens head's
    references depend on the bins the policy chose, so they are computed here from `model`.
    """
    m = bundle.manifest
    identical, within, total, flow_err, flow_worst = 0, 0, 0, 0.0, 0.0
    for i, o in enumerate(obs):
        got_norm, got_bins = _policy_actions(bundle.root, o.frames, o.task, o.state)
        gc.collect()
        if m.head == "flow":
            e, w = _errors(expected[i], got_norm, tol)
            flow_err, flow_worst = max(flow_err, e), max(flow_worst, w)
            continue
        if got_bins is None:
            raise ParityError("the runtime policy returned no action bins for a discrete head")
        logits = expected[i] if expected is not None else _reference_bin_logits(model, m, o, got_bins)
        same, ok = _check_bins(logits, got_bins, tol)
        identical, within, total = identical + same, within + ok, total + got_bins.size
    action: dict = {"observations": len(obs)}
    if m.head == "flow":
        action.update(max_abs_err=flow_err, worst=flow_worst, tolerance=tol.atol, passed=flow_worst <= 1.0)
    else:
        action.update(identical_bins=identical == total, bins_matched=identical, bins_within_tolerance=within,
                      bins_total=total, max_abs_err=0.0, passed=within == total)
    return action


def run_parity(
    model: ReferenceVLA,
    bundle_dir: Path,
    manifest: Manifest | None = None,
    seed: int = 0,
    tol: Tolerance | None = None,
    progress: bool = False,
    count: int = len(PARITY_TASKS),
    threads: int | None = None,
    references_done: Callable[[], None] | None = None,
) -> dict:
    """Both levels over `count` observations; returns the manifest's `parity` report (never raises on mismatch).

    `references_done` is called once every PyTorch reference is computed and before any
    session loads (the build frees the PyTorch weights there); the tokens head needs the model
    after its policy has run (teacher-forced near-tie checks), so there it is called at the end.
    """
    # Every hash and the seal are checked; the signature is not: a bundle is signed after it is
    # built, so a workstation that also has a trust store must still be able to build one.
    bundle = open_bundle(Path(bundle_dir), verify=True)
    manifest = manifest or bundle.manifest
    dtype = manifest.model.get("dtype", "fp32")  # the graphs' precision; `model` should hold the same weights
    if dtype_name(model) != dtype:
        logger.warning("parity: the reference model is %s but the bundle's graphs are %s; cast it with "
                       "precision.cast_parameters for a like-for-like check", dtype_name(model), dtype)
    tol = tol or default_tolerance(dtype)
    obs = observations(bundle, count, seed)
    logger.info("stage: %s", "parity references (PyTorch)")
    cases: dict[str, list[Case]] = {}
    for o in tqdm(obs, desc="parity references", unit="obs", disable=not progress):
        for role, role_cases in reference_cases(model, manifest, o.pixel_values, o.input_ids, o.state_vector).items():
            cases.setdefault(role, []).extend(role_cases)
    expected = None if manifest.head == "tokens" else [reference_actions(model, manifest, o) for o in obs]
    if expected is not None and references_done is not None:
        references_done()
    logger.info("stage: %s", "parity graphs (one session at a time)")
    graphs = check_graphs(bundle, cases, tol, threads)
    del cases
    logger.info("stage: %s", "parity actions (runtime policy)")
    action = check_actions(model, bundle, obs, tol, expected)
    if expected is None and references_done is not None:
        references_done()
    runner = select("cpu", bundle.manifest.graphs.values())
    return {
        "passed": bool(all(g["passed"] for g in graphs.values()) and action["passed"]),
        "runner": f"vla_runtime.runtime.policy ({runner.device})",
        "reference": f"transformers PaliGemmaForConditionalGeneration forward (uncached) + head, "
        f"{dtype} weights computed in float32",
        "dtype": dtype,
        "tolerance": {"atol": tol.atol, "rtol": tol.rtol},
        "graph_tolerance": tol.atol,
        "graphs": graphs,
        "action": action,
    }


def parity_failure(report: dict) -> str | None:
    """One line naming what failed, or None when parity passed."""
    if report.get("passed"):
        return None
    t = report.get("tolerance", {"atol": report.get("graph_tolerance", 0.0), "rtol": 0.0})
    bound = f"atol {t['atol']:.0e} + rtol {t['rtol']:.0e} x |ref|"
    bad = [f"{r} max abs err {g['max_abs_err']:.2e} exceeds {bound} ({g.get('worst', 0):.3g}x the bound)"
           for r, g in report["graphs"].items() if not g["passed"]]
    act = report["action"]
    if not act["passed"]:
        if "bins_total" in act:
            bad.append(f"action bins differ ({act['bins_matched']}/{act['bins_total']} identical, "
                       f"{act.get('bins_within_tolerance', act['bins_matched'])} within tolerance)")
        else:
            bad.append(f"flow chunk max abs err {act['max_abs_err']:.2e} exceeds {bound}")
    return "; ".join(bad)
