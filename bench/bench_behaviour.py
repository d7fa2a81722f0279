"""Closed-loop behaviour and latency of the trained demo heads: PyTorch eager vs onnxruntime FP32 vs INT8.

For each head with a shipped trained checkpoint (export/checkpoints/demo-<head>/): export the
FP32 bundle, quantize it with every INT8 variant on scripted-expert recordings, then run the
same held-out sim seeds through

- pytorch-eager: the checkpoint's graph wrappers as runtime backends (export/torch_policy.py),
  behind the runtime's own decoder, so only the graph arithmetic differs;
- ort-fp32 and each INT8 bundle: the runtime's `BundlePolicy` on onnxruntime CPU.

Every runner uses one thread. Runners take turns seed by seed, so host load falls on all of
them alike. Success rates carry 95 % Wilson intervals and per-colour counts; latency is the
wall time of each `infer()` (preprocess + graphs + decode) measured inside the episodes.

    python bench/bench_behaviour.py --calib calib/ --episodes 50 \
        --out bench/results/behaviour.json --plot bench/results/behaviour.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_behaviour")

INT8_VARIANTS = {"int8-qdq": "qdq", "int8-cpu-dynamic": "cpu-fast"}  # label -> quantize --variant


class TimedPolicy:
    """A loaded policy whose every infer() wall time is kept (seconds)."""

    def __init__(self, policy):
        self.policy, self.manifest, self.times = policy, policy.manifest, []

    @property
    def stage_times(self):
        return self.policy.stage_times

    def infer(self, frame, task, state=None):
        start = time.perf_counter()
        chunk = self.policy.infer(frame, task, state)
        self.times.append(time.perf_counter() - start)
        return chunk

    def reset(self) -> None:
        self.policy.reset()

    def close(self) -> None:
        self.policy.close()


def prepare(head: str, work: Path, calib: Path, args) -> dict[str, Path]:
    """label -> bundle directory: the FP32 export and every INT8 variant of it."""
    from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle
    from vla_runtime.export.build import build_bundle
    from vla_runtime.export.demo_checkpoints import shipped_checkpoint
    from vla_runtime.runtime.episodes.readers import open_source

    fp32 = work / f"{head}-fp32"
    if not (fp32 / "manifest.json").is_file():
        print(f"[{head}] exporting the trained checkpoint ...", file=sys.stderr, flush=True)
        build_bundle(fp32, head, checkpoint=shipped_checkpoint(head), progress=False)
    bundles = {"ort-fp32": fp32}
    for label, variant in INT8_VARIANTS.items():
        out = work / f"{head}-{label}"
        if not (out / "manifest.json").is_file():
            print(f"[{head}] quantizing {label} ...", file=sys.stderr, flush=True)
            opts = QuantizeOptions(variant=variant, threads=1, progress=False, force=True)
            quantize_bundle(fp32, open_source(calib), out, opts)
        bundles[label] = out
    return bundles


def per_graph(head: str, fp32: Path, calib: Path, work: Path) -> dict:
    """variant -> role -> gate agreement when only that graph is quantized (the others stay float)."""
    from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle
    from vla_runtime.calibration.quantize import QdqConfig
    from vla_runtime.runtime.episodes.readers import open_source
    from vla_runtime.runtime.manifest import HEAD_GRAPHS

    roles = [r for r in HEAD_GRAPHS[head] if r != "head"]  # the parallel head graph is float in every recipe
    out: dict = {}
    for label, variant in INT8_VARIANTS.items():
        for role in roles:
            print(f"[{head}] {label} with only {role} quantized ...", file=sys.stderr, flush=True)
            qdq = QdqConfig(float_roles=tuple(r for r in HEAD_GRAPHS[head] if r != role))
            opts = QuantizeOptions(variant=variant, qdq=qdq, threads=1, progress=False, force=True)
            report = quantize_bundle(fp32, open_source(calib), work / f"{head}-{label}-only-{role}", opts)
            m = report["metrics"]
            out.setdefault(label, {})[role] = {k: m[k] for k in ("token_agreement", "flow_cosine_min") if k in m}
    return out


def gate_of(bundle: Path) -> dict | None:
    from vla_runtime.runtime.manifest import load_manifest

    gate = load_manifest(bundle).gate
    if not gate:
        return None
    m = gate.get("metrics", {})
    keep = ("token_agreement", "flow_cosine_min", "flow_max_error")
    return {"passed": gate.get("passed"), "summary": gate.get("summary"), "worst_graph": gate.get("worst_graph"),
            **{k: m[k] for k in keep if k in m},
            "graph_cosine": {r: g.get("cosine") for r, g in gate.get("per_graph", {}).items()}}


def bench_head(head: str, work: Path, calib: Path, args) -> dict:
    from vla_runtime.export.checkpoint import load_checkpoint
    from vla_runtime.export.demo_checkpoints import shipped_checkpoint
    from vla_runtime.export.torch_policy import torch_policy
    from vla_runtime.runtime.cmd_eval import loaded_setup, run_batch
    from vla_runtime.runtime.evaluation import summarize
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.robot_description import load_robot_description
    from vla_runtime.runtime.sim.tasks import COLOURS, canonical_task

    bundles = prepare(head, work, calib, args)
    graphs = per_graph(head, bundles["ort-fp32"], calib, work) if args.per_graph else None
    model = load_checkpoint(shipped_checkpoint(head), head=head).model
    policies = {"pytorch-eager": TimedPolicy(torch_policy(bundles["ort-fp32"], model, threads=1))}
    for label, path in bundles.items():
        policies[label] = TimedPolicy(load_policy(path, threads=1, allow_failed_gate=True))
    desc = load_robot_description("sim")
    tasks = [canonical_task(c) for c in COLOURS]
    seeds = list(range(args.seed, args.seed + args.episodes))
    outcomes: dict[str, list] = {k: [] for k in policies}
    start = time.perf_counter()
    for i, seed in enumerate(seeds):  # runners take turns per seed: the host's load is shared fairly
        for label, policy in policies.items():
            setup = loaded_setup(policy, label)
            outcomes[label] += run_batch(setup, desc, [seed], [tasks[i % len(tasks)]], args.steps)
        done = {k: sum(o.success for o in v) for k, v in outcomes.items()}
        print(f"[{head}] {i + 1}/{len(seeds)} seeds: " + ", ".join(f"{k} {v}" for k, v in done.items()),
              file=sys.stderr, flush=True)
    rows = {}
    for label, policy in policies.items():
        ms = np.asarray(policy.times) * 1e3
        rows[label] = {
            "summary": summarize(outcomes[label]),
            "infer_ms_median": round(float(np.median(ms)), 2),
            "infer_ms_p90": round(float(np.percentile(ms, 90)), 2),
            "inferences": len(ms),
            "gate": gate_of(bundles[label]) if label.startswith("int8") else None,
            "episodes": [o.to_json() for o in outcomes[label]],
        }
        policy.close()
    eager = rows["pytorch-eager"]["infer_ms_median"]
    for row in rows.values():
        row["speedup_vs_eager"] = round(eager / row["infer_ms_median"], 2)
    return {"per_graph_int8": graphs, "seeds": [seeds[0], seeds[-1]],
            "wall_s": round(time.perf_counter() - start, 1), "runners": rows}


def table(results: dict) -> list[str]:
    from vla_runtime.runtime.eval_plot import colour_rates
    from vla_runtime.runtime.evaluation import format_rate

    lines = ["| head | runner | success (95 % Wilson CI) | red | green | blue | infer ms (median / p90) "
             "| x eager | action-level gate |", "|---|---|---|---|---|---|---:|---:|---|"]
    for head, r in results["heads"].items():
        for label, row in r["runners"].items():
            s = row["summary"]
            col = colour_rates(s)
            cells = [f"{col[c][0]}/{col[c][1]}" if c in col else "-" for c in ("red", "green", "blue")]
            gate = row["gate"]
            g = "-" if gate is None else ("pass" if gate["passed"] else "FAIL") + (
                f", bins {100 * gate['token_agreement']:.1f} %" if "token_agreement" in gate else "") + (
                f", cos {gate['flow_cosine_min']:.4f}" if "flow_cosine_min" in gate else "") + (
                f", worst graph {gate['worst_graph']}" if gate.get("worst_graph") else "")
            lines.append(f"| {head} | {label} | {format_rate(s)} | {' | '.join(cells)} | "
                         f"{row['infer_ms_median']:.1f} / {row['infer_ms_p90']:.1f} | "
                         f"{row['speedup_vs_eager']:.2f}x | {g} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--heads", nargs="+", default=None, help="heads to bench (default: every shipped one)")
    p.add_argument("--calib", required=True, type=Path,
                   help="recordings to calibrate INT8 on (`vla-runtime --policy scripted --episodes 10 --record DIR`)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100_000, help="first held-out seed (default 100000)")
    p.add_argument("--steps", type=int, default=100, help="ticks per episode (as eval)")
    p.add_argument("--work", type=Path, default=Path("bench-behaviour-work"), help="bundles are built here")
    p.add_argument("--out", type=Path, default=Path("bench/results/behaviour.json"))
    p.add_argument("--plot", type=Path, help="PNG of success per runner and head")
    p.add_argument("--per-graph", action="store_true",
                   help="also quantize one graph at a time and report the gate's agreement for each")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import vla_runtime.runtime.sim  # noqa: F401 - picks the offscreen GL platform before MuJoCo loads
    from vla_runtime.export.demo_checkpoints import shipped_heads
    from vla_runtime.runtime.sim.tasks import check_eval_seeds

    check_eval_seeds(args.seed, args.episodes)
    heads = args.heads or list(shipped_heads())
    results = {"episodes": args.episodes, "steps": args.steps, "threads": 1, "heads": {}}
    for head in heads:
        results["heads"][head] = bench_head(head, args.work, args.calib, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")  # after every head: a partial run still counts
    print("\n".join(table(results)))
    if args.plot:
        from vla_runtime.runtime.eval_plot import plot_success

        rows = [(f"{h} {k}", row["summary"]) for h, r in results["heads"].items() for k, row in r["runners"].items()]
        print(f"plot: {plot_success(rows, args.plot, f'closed-loop success, {args.episodes} held-out seeds')}")
    print(f"json: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
