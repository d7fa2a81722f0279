"""PyTorch eager vs onnxruntime FP32 vs INT8 (QDQ and CPU-fast), per graph and per action, one run.

For each head: build the `small` preset bundle from one seeded model, quantize it with every
INT8 variant on a synthetic recording, then time the same observations through

- PyTorch eager: the exported graph wrappers (same decomposition, KV cache, flow steps)
  under torch.inference_mode(), on the same number of threads;
- onnxruntime through the runtime's own `BundlePolicy` (FP32 and each INT8 bundle), the
  bundles interleaved round by round so they share the machine's load.

Preprocessing and tokenization are shared numpy code and excluded from the graph columns but
included in "action" for the runtime rows. Every number printed is measured in this run; the
gate figures come from each INT8 bundle's own manifest.

    python bench/bench_int8.py --heads parallel flow tokens --reps 10 --out bench/results/int8.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from vla_runtime.runtime.conventions import ActionTokens, flow_noise, flow_times, token_position

logger = logging.getLogger("bench_int8")

VARIANTS = {  # label -> quantize options (None: the FP32 bundle itself)
    "ort-fp32": None,
    "int8-qdq": {"variant": "qdq"},  # Q/DQ on int8 op inputs only (TensorRT's placement)
    "int8-qdq-fused": {"variant": "qdq", "quantize_outputs": True},  # + outputs: ORT fuses QLinearMatMul
    "int8-cpu-dynamic": {"variant": "cpu-fast", "method": "dynamic"},
}
TASK = "pick up the red block"


def write_scenes(root: Path, episodes: int = 4, length: int = 12, size=(240, 320), seed: int = 0) -> Path:
    """A recording in the runtime's --record layout: blocks sliding over a textured table."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for ep in range(episodes):
        d = root / f"episode_{ep:06d}"
        d.mkdir(parents=True)
        table = rng.uniform(60, 200, 3) + 25 * np.sin(xx / (9 + 3 * ep))[..., None]  # [H, W, 3]
        colours = rng.uniform(0, 255, (3, 3))
        start, vel = rng.uniform([20, 20], [h - 20, w - 20], (3, 2)), rng.uniform(-6, 6, (3, 2))
        frames = np.empty((length, h, w, 3), np.uint8)
        for t in range(length):
            img = table.copy()
            for (cy, cx), colour in zip(start + t * vel, colours, strict=True):
                img[(np.abs(yy - cy) < 18) & (np.abs(xx - cx) < 18)] = colour
            frames[t] = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
        np.save(d / "frames.npy", frames)
        task = [TASK, "push the blue cup to the left", "put the green block in the bowl"][ep % 3]
        (d / "meta.json").write_text(json.dumps({"task": task, "rate_hz": 10.0, "bundle": "small",
                                                 "robot": "sim", "steps": length}))
    return root


class TorchEager:
    """The reference model run graph by graph in PyTorch, timing each graph like the runtime does."""

    def __init__(self, model, manifest):
        import torch
        from vla_runtime.export import graphs as G

        self.torch, self.m = torch, manifest
        self.g = {"vision": G.VisionGraph(model), "prefill": G.PrefillGraph(model)}
        extra = {"tokens": ("decode", G.DecodeGraph), "parallel": ("head", G.HeadGraph),
                 "flow": ("velocity", G.VelocityGraph)}[manifest.head]
        self.g[extra[0]] = extra[1](model)
        self.times: dict[str, float] = {}

    def _run(self, role, *args):
        start = time.perf_counter()
        out = self.g[role](*args)
        self.times[role] = self.times.get(role, 0.0) + time.perf_counter() - start
        return out

    def infer(self, pixel_values: np.ndarray, input_ids: np.ndarray) -> None:
        torch, m = self.torch, self.m
        self.times = {}
        with torch.inference_mode():
            px, ids = torch.from_numpy(pixel_values), torch.from_numpy(input_ids)
            image = self._run("vision", px)  # [1, N, E]
            prefill = self._run("prefill", image, ids)
            if m.head == "parallel":
                self._run("head", prefill)
            elif m.head == "flow":
                x = torch.from_numpy(flow_noise(m.decode.noise_seed, m.action.horizon, m.action.dim))[None]  # [1, H, D]
                for t in torch.from_numpy(flow_times(m.decode.flow_steps))[:, None]:  # t: [1]
                    x = x - self._run("velocity", prefill, x, t) / m.decode.flow_steps
            else:
                logits, *past = prefill
                prefix = image.shape[1] + ids.shape[1]
                tokens = ActionTokens.of(m.action)
                for k in range(1, m.action.dim):
                    token = torch.tensor([[tokens.token_id(int(logits.argmax()))]])  # [1, 1]
                    pos = torch.tensor([[token_position(prefix, k)]])  # [1, 1]
                    logits, *past = self._run("decode", token, pos, *past)


def _median_ms(values) -> float:
    return round(1000 * statistics.median(values), 2)


def interleaved(runners: dict, reps: int, warmup: int) -> dict:
    """Time every runner once per round, round after round, so all see the same machine load.

    Each runner is `() -> {role: graph seconds}`; the action time is the call's wall time.
    """
    totals: dict[str, list[float]] = {k: [] for k in runners}
    graphs: dict[str, dict[str, list[float]]] = {k: {} for k in runners}
    for i in range(warmup + reps):
        for label, once in runners.items():
            start = time.perf_counter()
            per_graph = once()
            total = time.perf_counter() - start
            if i >= warmup:
                totals[label].append(total)
                for role, sec in per_graph.items():
                    graphs[label].setdefault(role, []).append(sec)
    return {k: {"action_ms": _median_ms(totals[k]), "graphs_ms": {r: _median_ms(v) for r, v in graphs[k].items()}}
            for k in runners}


def torch_runner(eager: TorchEager, pixel_values, input_ids):
    def once():
        eager.infer(pixel_values, input_ids)
        return dict(eager.times)

    return once


def policy_runner(policy, image: np.ndarray):
    from vla_runtime.runtime.types import Frame

    roles = list(policy.manifest.graphs)

    def once():
        policy.infer(Frame(image, 0.0), TASK)
        return {r: policy.stage_times.get(r, 0.0) for r in roles}

    return once


def gate_figures(bundle: Path) -> dict:
    from vla_runtime.runtime.manifest import load_manifest

    gate = load_manifest(bundle).gate or {}
    m = gate.get("metrics", {})
    worst = m.get("worst_dim")
    out = {"passed": gate.get("passed"), "worst_graph": gate.get("worst_graph"),
           "worst_mae_fraction": m.get("mae_fraction", {}).get(worst),
           "graph_cosine": {r: g.get("cosine") for r, g in gate.get("per_graph", {}).items()}}
    for key in ("token_agreement", "flow_cosine_min", "flow_max_error"):
        if key in m:
            out[key] = m[key]
    return out


def bench_head(head: str, work: Path, scenes: Path, args) -> dict:
    import torch
    from vla_runtime.calibration.cpu_fast import CpuFastConfig
    from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle
    from vla_runtime.calibration.quantize import QdqConfig
    from vla_runtime.export.build import build_from_source, load_source
    from vla_runtime.runtime.bundle import open_bundle
    from vla_runtime.runtime.episodes.readers import open_source
    from vla_runtime.runtime.preprocess import Preprocessor
    from vla_runtime.runtime.tokenizer import PromptTokenizer

    source = load_source(head, preset=args.preset, seed=0)
    print(f"[{head}] building the {args.preset} bundle ...", file=sys.stderr)
    fp32 = build_from_source(source, work / f"{head}-fp32", progress=True)
    bundles = {"ort-fp32": fp32}
    for label, spec in VARIANTS.items():
        if spec is None:
            continue
        print(f"[{head}] quantizing {label} ...", file=sys.stderr)
        cpu = CpuFastConfig(method=spec.get("method", "dynamic"), bits=spec.get("bits", 8))
        qdq = QdqConfig(quantize_outputs=spec.get("quantize_outputs", False))
        opts = QuantizeOptions(variant=spec["variant"], cpu_fast=cpu, qdq=qdq, calib_frames=args.calib_frames,
                               gate_frames=args.gate_frames, threads=args.threads, progress=True)
        bundles[label] = work / f"{head}-{label}"
        quantize_bundle(fp32, open_source(scenes), bundles[label], opts)

    manifest = open_bundle(fp32).manifest
    image = np.load(scenes / "episode_000000" / "frames.npy")[3]  # uint8 [H, W, 3]
    pixel_values = Preprocessor(manifest.preprocess)(image).copy()  # [1, 3, S, S]
    input_ids = PromptTokenizer(manifest.prompt, fp32 / manifest.prompt.tokenizer_file)(TASK).copy()  # [1, T]
    from vla_runtime.runtime.policy import load_policy

    torch.set_num_threads(args.threads)
    gc.collect()  # drop the build's and the gate's sessions: their idle threads must not compete
    # PyTorch first, while no onnxruntime session exists: idle ORT workers spinning after
    # their own runs starve torch's OpenMP barriers on 2 cores and made eager look 10x slower.
    eager = torch_runner(TorchEager(source.model, manifest), pixel_values, input_ids)
    rows = interleaved({"pytorch-eager": eager}, args.reps, args.warmup)
    policies = {k: load_policy(b, threads=args.threads, allow_failed_gate=True) for k, b in bundles.items()}
    try:
        rows.update(interleaved({k: policy_runner(p, image) for k, p in policies.items()}, args.reps, args.warmup))
    finally:
        for p in policies.values():
            p.close()
    for label, bundle in bundles.items():
        if label != "ort-fp32":
            rows[label]["gate"] = gate_figures(bundle)
    eager = rows["pytorch-eager"]["action_ms"]
    for row in rows.values():
        row["speedup_vs_eager"] = round(eager / row["action_ms"], 2)
    passing = [k for k, r in rows.items() if k.startswith("int8") and r["gate"]["passed"]]
    best = max(passing, key=lambda k: rows[k]["speedup_vs_eager"]) if passing else None
    return {"rows": rows, "best_int8_passing_gate": best,
            "ort_fp32_speedup": rows["ort-fp32"]["speedup_vs_eager"],
            "best_int8_speedup": rows[best]["speedup_vs_eager"] if best else None}


def print_table(head: str, result: dict) -> None:
    rows = result["rows"]
    roles = list(next(iter(rows.values()))["graphs_ms"])
    head_line = f"{'runner':<18}" + "".join(f"{r + ' ms':>13}" for r in roles)
    head_line += f"{'action ms':>12}{'x eager':>9}  gate"
    print(f"\n== {head} head ==")
    print(head_line)
    for label, row in rows.items():
        cells = "".join(f"{row['graphs_ms'].get(r, float('nan')):>13.2f}" for r in roles)
        gate = row.get("gate")
        note = ""
        if gate:
            figures = [f"{'PASS' if gate['passed'] else 'FAIL'}"]
            if "token_agreement" in gate:
                figures.append(f"tokens {gate['token_agreement']:.1%}")
            if "flow_cosine_min" in gate:
                figures.append(f"cos {gate['flow_cosine_min']:.4f}")
            if gate.get("worst_mae_fraction") is not None:
                figures.append(f"MAE {gate['worst_mae_fraction']:.2%} of span")
            figures.append(f"worst graph {gate['worst_graph']}")
            note = ", ".join(figures)
        print(f"{label:<18}{cells}{row['action_ms']:>12.2f}{row['speedup_vs_eager']:>8.2f}x  {note}")
    best = result["best_int8_passing_gate"]
    print(f"onnxruntime FP32 vs PyTorch eager: {result['ort_fp32_speedup']:.2f}x (target >= 1.2x)")
    if best:
        print(f"best INT8 passing the gate ({best}) vs PyTorch eager: "
              f"{result['best_int8_speedup']:.2f}x (target >= 2x)")
    else:
        print("no INT8 variant passed the gate")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", nargs="+", default=["parallel", "flow", "tokens"], choices=("tokens", "parallel", "flow"))
    p.add_argument("--preset", default="small", choices=("tiny", "small"))
    p.add_argument("--reps", type=int, default=10, help="timed inferences per runner (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed inferences first")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch and onnxruntime alike")
    p.add_argument("--calib-frames", type=int, default=16)
    p.add_argument("--gate-frames", type=int, default=8)
    p.add_argument("--out", type=Path, help="write all numbers as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import onnxruntime
    import torch

    results = {"preset": args.preset, "threads": args.threads, "reps": args.reps,
               "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}, "heads": {}}
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        work = Path(tmp)
        scenes = write_scenes(work / "scenes")
        for head in args.heads:
            results["heads"][head] = bench_head(head, work, scenes, args)
            print_table(head, results["heads"][head])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
