"""FP32 bundle + calibration data -> INT8 bundle with its accuracy gate filled in.

The steps, each with its own module: plan frames (sampling), replay the FP32 policy and
capture every graph's inputs (collect), quantize each graph with onnxruntime (quantize /
cpu_fast), write the derived bundle (pack), then replay held-out frames through both
bundles and judge (gate). A bundle that fails the gate is still written, marked failed, so
it can be inspected; the runtime refuses it unless told otherwise.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm
from vla_runtime.calibration.behaviour import BehaviourOptions, compare_behaviour, sim_robot_for
from vla_runtime.calibration.collect import load_frames, replay, representative, sample_counts
from vla_runtime.calibration.cpu_fast import CpuFastConfig, quantize_cpu_fast
from vla_runtime.calibration.gate import GateThresholds, graph_metrics, judge
from vla_runtime.calibration.quantize import QdqConfig, quantize_qdq
from vla_runtime.calibration.sampling import plan_samples
from vla_runtime.runtime.bundle import open_bundle
from vla_runtime.runtime.derived_bundle import NewGraph, check_destination, set_gate, write_derived_bundle
from vla_runtime.runtime.episodes.frames import CalibSource
from vla_runtime.runtime.manifest import HEAD_GRAPHS
from vla_runtime.runtime.policy import load_policy

logger = logging.getLogger(__name__)

VARIANTS = {"qdq": "int8", "cpu-fast": "int8-cpu"}  # --variant -> manifest precision


class QuantizeInputError(ValueError):
    """The source bundle cannot be quantized as asked; one line with the fix."""


@dataclass(frozen=True)
class QuantizeOptions:
    variant: str = "qdq"  # "qdq" (TensorRT-compatible, runs on ORT CPU) or "cpu-fast" (ORT CPU only)
    calib_frames: int = 32  # frames replayed through the FP32 policy to collect graph inputs
    gate_frames: int = 16  # held-out frames the gate compares FP32 and INT8 on
    gate_graph_samples: int = 16  # captured inputs per graph for the per-graph table
    seed: int = 0  # frame sampling seed; the same seed gives the same bundle
    threads: int | None = None  # onnxruntime threads; None: every core this process may use
    qdq: QdqConfig = field(default_factory=QdqConfig)  # QDQ recipe; its exclusions apply to cpu-fast too
    cpu_fast: CpuFastConfig = field(default_factory=CpuFastConfig)  # cpu-fast recipe
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    behaviour: BehaviourOptions = field(default_factory=BehaviourOptions)  # closed-loop stage; off by default
    progress: bool = True  # tqdm bars on stderr
    force: bool = False  # replace a non-empty --out

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant {self.variant!r} is not one of {sorted(VARIANTS)}")
        if self.calib_frames < 1 or self.gate_frames < 1 or self.gate_graph_samples < 1:
            raise ValueError("calib_frames, gate_frames and gate_graph_samples must be >= 1")


def quantize_bundle(source_dir: str | Path, calib: CalibSource, out_dir: str | Path, opts: QuantizeOptions) -> dict:
    """Write the quantized bundle to `out_dir`; returns the gate report stored in its manifest."""
    source = open_bundle(source_dir)
    manifest = source.manifest
    out = Path(out_dir).expanduser().absolute()
    check_destination(out, opts.force)
    not_fp32 = [f"{r}:{g.format}/{g.precision}" for r, g in manifest.graphs.items()
                if g.format != "onnx" or g.precision != "fp32"]
    if not_fp32:
        raise QuantizeInputError(
            f"{source.root.name} holds {', '.join(not_fp32)}; quantize the FP32 ONNX bundle it was made from"
        )
    if opts.behaviour.episodes:  # refused before any work, not after minutes of calibration
        sim_robot_for(manifest, source.root.name)
    roles = HEAD_GRAPHS[manifest.head]
    plan = plan_samples(calib.episode_lengths(), opts.calib_frames, opts.gate_frames, seed=opts.seed)
    calib_frames = load_frames(calib, plan.calibration, "calibration frames", opts.progress)
    held_frames = load_frames(calib, plan.held_out, "held-out frames", opts.progress)

    chosen: dict = {role: [] for role in roles}
    if opts.variant == "qdq":  # cpu-fast quantizes weights only and needs no activation ranges
        with load_policy(source.root, backend="cpu", threads=opts.threads) as fp32:
            recorded = replay(fp32, calib_frames, True, "fp32 replay (calibration)", opts.progress)
        chosen = {role: representative(recorded.samples.get(role, []), opts.qdq.max_samples) for role in roles}

    precision = VARIANTS[opts.variant]
    with tempfile.TemporaryDirectory(prefix="vla-quant-") as tmp:
        graphs, extra, notes = {}, {}, {}
        for role in tqdm(roles, desc=f"quantize ({opts.variant})", unit="graph", disable=not opts.progress):
            src = source.path(manifest.graphs[role].file)
            dst = Path(tmp) / f"{role}.{precision}.onnx"
            if opts.variant == "qdq":
                ranges = Path(tmp) / f"{role}.ranges.json"
                res = quantize_qdq(src, dst, role, [s.inputs for s in chosen[role]], opts.qdq, ranges_out=ranges)
                if res.quantized:
                    extra[f"calibration/{role}.ranges.json"] = ranges
            else:
                res = quantize_cpu_fast(src, dst, role, opts.cpu_fast, opts.qdq)
            if res.quantized:  # a graph with nothing to quantize stays the source's file
                graphs[role] = NewGraph(dst, dst.name, precision, data_files=res.data_files)
            notes[role] = {"precision": precision if res.quantized else "fp32",
                           "int8_nodes": len(res.quantized_nodes), "float_nodes": len(res.excluded_nodes)}
        write_derived_bundle(source, out, graphs, extra_files=extra, versions=_versions(),
                             model_notes={"quantized_from": manifest.model.get("name", source.root.name)},
                             force=opts.force)

    report = run_gate(source.root, out, held_frames, opts)
    report.update(
        source_bundle=str(source.root),
        variant=opts.variant,
        graphs=notes,
        calibration={
            "source": calib.describe(),
            "method": opts.qdq.calibration if opts.variant == "qdq" else f"none ({opts.cpu_fast.method})",
            "frames": len(calib_frames) if opts.variant == "qdq" else 0,
            "held_out_frames": len(held_frames),
            "held_out_episodes": list(plan.held_out_episodes),
            "samples": sample_counts(chosen),
        },
    )
    if opts.behaviour.episodes:
        add_behaviour(report, compare_behaviour(source.root, out, opts.behaviour, threads=opts.threads,
                                                progress=opts.progress, label=VARIANTS[opts.variant]))
    set_gate(out, report)
    return report


def add_behaviour(report: dict, behaviour: dict) -> None:
    """Fold the closed-loop verdict into the gate: either stage failing fails the bundle."""
    report["behaviour"] = behaviour
    if not behaviour["passed"]:
        report["failures"] = [*report["failures"], f"closed loop: {behaviour['summary']}"]
        report["passed"] = False
        report["summary"] = "; ".join(report["failures"])


def run_gate(source_dir: Path, quantized_dir: Path, frames, opts: QuantizeOptions) -> dict:
    """Replay held-out frames through both bundles (fresh policies: same noise) and judge."""
    source, quantized = open_bundle(source_dir), open_bundle(quantized_dir)
    roles = HEAD_GRAPHS[source.manifest.head]
    with load_policy(source.root, backend="cpu", threads=opts.threads) as fp32:
        reference = replay(fp32, frames, record=True, desc="gate: fp32", progress=opts.progress)
    with load_policy(quantized.root, backend="cpu", threads=opts.threads, allow_failed_gate=True) as q:
        candidate = replay(q, frames, record=False, desc=f"gate: {opts.variant}", progress=opts.progress)
    per_graph = graph_metrics(
        roles,
        {r: source.path(source.manifest.graphs[r].file) for r in roles},
        {r: quantized.path(quantized.manifest.graphs[r].file) for r in roles},
        {r: representative(reference.samples.get(r, []), opts.gate_graph_samples) for r in roles},
        threads=opts.threads or 2,
    )
    return judge(source.manifest, reference, candidate, per_graph, opts.thresholds)


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime_quantization": onnxruntime.__version__}
