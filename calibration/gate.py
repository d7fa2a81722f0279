"""The accuracy gate: is the quantized bundle still the same policy, in the robot's own units?

The verdict is taken at the action level on held-out frames (never the calibration frames),
comparing the quantized bundle with its FP32 source through the runtime's real inference
path: per-dimension mean absolute error in physical units (as a fraction of each dimension's
normalised span, so metres and radians share one threshold), agreement of the chosen action
bins (tokens / parallel heads), and cosine similarity and maximum error of flow chunks, which
see the same noise because both policies draw it from the same seeded generator in the same
order. Per-graph cosine and max error on the same captured inputs do not vote; they say which
graph lost the most, so the fix (exclude nodes, keep a graph float) can be aimed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from vla_runtime.calibration.collect import GraphSample, Replay
from vla_runtime.runtime.decoders import Unnormalizer
from vla_runtime.runtime.manifest import Manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateThresholds:
    """Pass limits; each is checked only for heads that produce the metric."""

    max_mae_fraction: float = 0.02  # per-dim MAE / the dim's physical span (normalised -1..1); all dims
    min_token_agreement: float = 0.90  # fraction of identical action bins (tokens, parallel heads)
    min_flow_cosine: float = 0.99  # worst per-frame cosine of normalised flow chunks
    max_flow_error: float = 0.10  # worst absolute error of normalised flow chunk values (span is 2)

    def __post_init__(self):
        if not 0 < self.max_mae_fraction <= 1:
            raise ValueError("max_mae_fraction must be in (0, 1]")
        if not 0 <= self.min_token_agreement <= 1:
            raise ValueError("min_token_agreement must be in [0, 1]")
        if not -1 <= self.min_flow_cosine <= 1:
            raise ValueError("min_flow_cosine must be in [-1, 1]")
        if self.max_flow_error <= 0:
            raise ValueError("max_flow_error must be > 0")


def action_metrics(manifest: Manifest, reference: Replay, candidate: Replay) -> dict:
    """Action-level differences between two replays of the same frames."""
    ref = np.stack(reference.actions)  # [F, H, D] physical
    got = np.stack(candidate.actions)
    if ref.shape != got.shape:
        raise ValueError(f"replays differ in shape: {ref.shape} vs {got.shape}")
    action = manifest.action
    unnorm = Unnormalizer(action)
    ones = np.ones((1, action.dim), np.float32)
    span = np.abs(unnorm(ones) - unnorm(-ones))[0]  # [D] physical width of the normalised range
    mae = np.abs(got - ref).mean(axis=(0, 1))  # [D]
    frac = mae / np.where(span > 0, span, 1.0)
    names = list(action.names)
    metrics: dict = {
        "frames": int(ref.shape[0]),
        "mae": {n: float(v) for n, v in zip(names, mae, strict=True)},
        "units": dict(zip(names, action.units, strict=True)),
        "mae_fraction": {n: float(v) for n, v in zip(names, frac, strict=True)},
        "worst_dim": names[int(np.argmax(frac))],
        "max_abs": {n: float(v) for n, v in zip(names, np.abs(got - ref).max(axis=(0, 1)), strict=True)},
    }
    if reference.bins and reference.bins[0] is not None:
        rb, gb = np.stack(reference.bins), np.stack(candidate.bins)  # [F, H, D]
        metrics["token_agreement"] = float((rb == gb).mean())
        metrics["mean_bin_distance"] = float(np.abs(rb.astype(np.int64) - gb.astype(np.int64)).mean())
    if manifest.head == "flow":
        rn = np.stack(reference.normalized).reshape(len(reference.normalized), -1)  # [F, H*D]
        gn = np.stack(candidate.normalized).reshape(len(candidate.normalized), -1)
        cos = [cosine(a, b) for a, b in zip(rn, gn, strict=True)]
        metrics["flow_cosine_min"] = float(min(cos))
        metrics["flow_cosine_mean"] = float(np.mean(cos))
        metrics["flow_max_error"] = float(np.abs(rn - gn).max())
    return metrics


def verdict(metrics: dict, thresholds: GateThresholds) -> list[str]:
    """Failed checks, each one short line; empty when the gate passes."""
    fails = []
    worst = metrics["worst_dim"]
    if metrics["mae_fraction"][worst] > thresholds.max_mae_fraction:
        fails.append(
            f"{worst} MAE {metrics['mae'][worst]:.3g} {metrics['units'][worst]} is "
            f"{metrics['mae_fraction'][worst]:.1%} of its span > {thresholds.max_mae_fraction:.1%}"
        )
    if "token_agreement" in metrics and metrics["token_agreement"] < thresholds.min_token_agreement:
        fails.append(f"token agreement {metrics['token_agreement']:.1%} < {thresholds.min_token_agreement:.1%}")
    if "flow_cosine_min" in metrics and metrics["flow_cosine_min"] < thresholds.min_flow_cosine:
        fails.append(f"flow cosine {metrics['flow_cosine_min']:.4f} < {thresholds.min_flow_cosine}")
    if "flow_max_error" in metrics and metrics["flow_max_error"] > thresholds.max_flow_error:
        fails.append(f"flow max error {metrics['flow_max_error']:.3g} > {thresholds.max_flow_error}")
    return fails


def graph_metrics(
    roles: Sequence[str],
    reference_files: Mapping[str, Path],
    candidate_files: Mapping[str, Path],
    samples: Mapping[str, Sequence[GraphSample]],
    threads: int = 2,
) -> dict[str, dict]:
    """role -> worst cosine and max error over outputs and samples, each graph fed the same inputs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    out: dict[str, dict] = {}
    for role in roles:
        cases = samples.get(role, [])
        if not cases:
            continue
        ref = ort.InferenceSession(str(reference_files[role]), opts, providers=["CPUExecutionProvider"])
        got = ort.InferenceSession(str(candidate_files[role]), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in ref.get_outputs()]
        worst_cos, worst_abs, worst_out = 1.0, 0.0, names[0]
        for case in cases:
            for name, a, b in zip(names, ref.run(names, case.inputs), got.run(names, case.inputs), strict=True):
                c, m = cosine(a, b), float(np.abs(a - b).max()) if a.size else 0.0
                if c < worst_cos:
                    worst_cos, worst_out = c, name
                worst_abs = max(worst_abs, m)
        out[role] = {"cosine": round(worst_cos, 6), "max_abs": worst_abs, "worst_output": worst_out,
                     "samples": len(cases)}
    return out


def judge(
    manifest: Manifest,
    reference: Replay,
    candidate: Replay,
    per_graph: dict[str, dict],
    thresholds: GateThresholds,
) -> dict:
    """The gate report that goes into manifest.gate."""
    metrics = action_metrics(manifest, reference, candidate)
    fails = verdict(metrics, thresholds)
    worst_graph = min(per_graph, key=lambda r: per_graph[r]["cosine"]) if per_graph else None
    summary = "; ".join(fails) if fails else "all action-level checks within thresholds"
    report = {
        "passed": not fails,
        "summary": summary,
        "failures": fails,
        "thresholds": asdict(thresholds),
        "metrics": metrics,
        "per_graph": per_graph,
        "worst_graph": worst_graph,
    }
    logger.info("accuracy gate %s: %s (worst graph %s)", "PASSED" if not fails else "FAILED", summary, worst_graph)
    return report


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors, flattened; 1.0 when both are zero."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))
