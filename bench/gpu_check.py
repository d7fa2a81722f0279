"""Every GPU path in one command, for the first machine with an NVIDIA GPU and TensorRT.

The TensorRT and CUDA code paths have been written against the documented TensorRT 10.x / 11
and onnxruntime-gpu APIs and tested on CPU through fakes only. This script is what verifies
them for real: for each head (parallel, tokens, flow) it builds the FP32 bundle from a preset,
quantizes a QDQ INT8 bundle from generated calibration images, builds native TensorRT engines
from both (`vla-export engine`: FP16 and INT8, and FP32 with FP16 off), adds a resize graph
(`vla-export resize-graph`: the camera frame resized and normalised on the GPU) and builds FP16
engines with it, then runs every path that exists here

- native TensorRT engines, FP16, INT8, FP32 and FP16 with the resize graph
  (runtime/backends/tensorrt.py),
- the onnxruntime TensorRT provider on the FP32 graphs (FP16 enabled) and the CUDA provider,
  also on the bundle with the resize graph,

against the FP32 bundle on onnxruntime CPU, printing parity (action cosine, max |delta| in
normalised units, discrete-bin agreement) and per-stage latency p50, and finally runs the
control loop on the FP16 engines, with and without the resize graph (bench_loop.py's part 2),
for its overhead tables. A failing
path becomes one row saying why; the rest still run.

Without a GPU it stops at the first check, printing one line and exiting 77 (the usual code
for "skipped: cannot run here"), before building anything.

    python bench/gpu_check.py [--heads parallel tokens flow] [--preset tiny] [--frames 20] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

EXIT_NO_GPU = 77
HEADS = ("parallel", "tokens", "flow")
TASKS = ("pick up the red block", "put the green block on the blue block", "push the yellow block left")
STAGES = ("preprocess", "resize", "vision", "prefill", "decode", "head", "velocity", "decode_actions")


def gpu_problem() -> str | None:
    """None when a GPU, TensorRT and cuda-python are usable here, else the one-line reason."""
    from vla_runtime.runtime.backends.device import live_device
    from vla_runtime.runtime.backends.tensorrt import TensorrtBackend

    live = live_device()
    if isinstance(live, str):
        return live
    return TensorrtBackend.probe("tensorrt")


def frames(n: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """Tabletop-like uint8 RGB frames: a gradient table with coloured blocks at random places."""
    rng = np.random.default_rng(seed)
    width = 2 * round(height * 16 / 9 / 2)
    out = []
    for _ in range(n):
        y, x = np.mgrid[0:height, 0:width]
        img = np.stack([x * 200 // width, y * 200 // height, np.full_like(x, 90)], axis=-1).astype(np.uint8)
        for colour in ((220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 210, 40)):
            cy, cx = int(rng.integers(0, height - height // 8)), int(rng.integers(0, width - width // 10))
            img[cy:cy + height // 8, cx:cx + width // 10] = colour
        out.append(img)
    return out


def calib_folder(root: Path, n: int = 24) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames(n, 240, seed=1)):
        Image.fromarray(img).save(root / f"frame_{i:03d}.png")
    return root


def measure(label: str, reference: Path, bundle: Path, backend: str, images: list[np.ndarray]) -> dict:
    """Parity of `bundle` on `backend` against the FP32 bundle on CPU, and its stage latencies."""
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.types import Frame

    row: dict = {"path": label}
    with load_policy(reference, backend="cpu", allow_failed_gate=True) as ref, \
            load_policy(bundle, backend=backend, allow_failed_gate=True) as dut:
        row["device"] = dut.backend_name
        cos, err, bins_equal, bins_total, stages = [], 0.0, 0, 0, {}
        for i, image in enumerate(images):
            task = TASKS[i % len(TASKS)]
            ref.infer(Frame(image, 0.0), task)
            t = time.perf_counter()
            dut.infer(Frame(image, 0.0), task)
            wall = time.perf_counter() - t
            a, b = ref.last_normalized.astype(np.float64).ravel(), dut.last_normalized.astype(np.float64).ravel()
            cos.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
            err = max(err, float(np.abs(a - b).max()))
            if ref.last_bins is not None and dut.last_bins is not None:
                bins_equal += int((ref.last_bins == dut.last_bins).sum())
                bins_total += ref.last_bins.size
            if i == 0:
                continue  # the first inference pays for lazy initialisation: not a latency sample
            for name, seconds in {**dut.stage_times, "infer": wall}.items():
                stages.setdefault(name, []).append(seconds * 1e3)
    row.update(cos_min=min(cos), max_abs=err, bins=f"{bins_equal}/{bins_total}" if bins_total else "-",
               p50_ms={k: float(np.percentile(v, 50)) for k, v in stages.items()})
    return row


def attempt(rows: list[dict], label: str, fn) -> object:
    """Run one path; a failure becomes a row with its first line instead of ending the check."""
    try:
        result = fn()
    except Exception as exc:  # the point is to see every path's outcome on the first GPU
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        rows.append({"path": label, "failed": f"{type(exc).__name__}: {first[:160]}"})
        traceback.print_exc(file=sys.stderr)
        return None
    if isinstance(result, dict) and "path" in result:  # a measured row (quantize returns its gate report)
        rows.append(result)
    return result


def print_rows(head: str, rows: list[dict]) -> None:
    print(f"\n{head} head: parity against FP32 on onnxruntime CPU, latency p50 in ms")
    print(f"{'path':<48}{'device':>9}{'cos min':>9}{'max|d|':>9}{'bins':>9}"
          + "".join(f"{s[:9]:>10}" for s in STAGES) + f"{'infer':>9}")
    for r in rows:
        if "failed" in r:
            print(f"{r['path']:<48}  FAILED  {r['failed']}")
            continue
        p50 = r["p50_ms"]
        print(f"{r['path']:<48}{r['device']:>9}{r['cos_min']:>9.4f}{r['max_abs']:>9.4f}{r['bins']:>9}"
              + "".join(f"{p50[s]:>10.3f}" if s in p50 else f"{'-':>10}" for s in STAGES)
              + f"{p50.get('infer', float('nan')):>9.3f}")


def check_head(head: str, args, work: Path, calib: Path, images: list[np.ndarray]) -> int:
    """Build, quantize, build engines and measure every path for one head; returns failed paths."""
    from bench_loop import overhead, print_overhead
    from vla_runtime.calibration.pipeline import QuantizeOptions, quantize_bundle
    from vla_runtime.export.build import build_bundle
    from vla_runtime.export.cmd_engine import build_engine_bundle, plan
    from vla_runtime.export.resize_graph import add_resize_graph
    from vla_runtime.runtime.backends.onnxrt import OrtBackend
    from vla_runtime.runtime.episodes.readers import open_source

    rows: list[dict] = []
    fp32 = attempt(rows, "build fp32 bundle", lambda: build_bundle(
        work / head / "fp32", head, preset=args.preset, seed=0, progress=False, force=True))
    if fp32 is None:
        print_rows(head, rows)
        return 1
    qdq = work / head / "qdq"
    attempt(rows, "quantize qdq bundle", lambda: quantize_bundle(
        fp32, open_source(calib, list(TASKS)), qdq,
        QuantizeOptions(calib_frames=16, gate_frames=8, progress=False, force=True)))
    resized = attempt(rows, "add resize graph", lambda: add_resize_graph(fp32, work / head / "resize", force=True))
    engines = {}
    for name, precision, src in (("fp16", "fp16", fp32), ("int8", "int8", qdq), ("fp32", "fp32", fp32),
                                 ("fp16+resize", "fp16", resized)):
        if src is None or not Path(src).exists():
            continue
        def build(n=name, p=precision, s=src):
            bundle, cfg, profiles = plan(s, p, {}, allow_failed_gate=True)
            t = time.perf_counter()
            out = build_engine_bundle(bundle, cfg, profiles, work / head / f"engines-{n.replace('+', '-')}", None,
                                      True, progress=False)
            print(f"{head}: {n} engines built in {time.perf_counter() - t:.1f} s")
            return out
        engines[name] = attempt(rows, f"build {name} engines", build)
        if engines[name] is not None:
            attempt(rows, f"native TensorRT {name}",
                    lambda e=engines[name], n=name: measure(f"native TensorRT {n}", fp32, e, "tensorrt", images))
    for device, label in (("tensorrt", "onnxruntime TensorRT EP (fp16)"), ("cuda", "onnxruntime CUDA EP")):
        why = OrtBackend.probe(device)
        if why:
            rows.append({"path": label, "failed": f"not available: {why}"})
            continue
        attempt(rows, label, lambda d=device, lb=label: measure(lb, fp32, fp32, d, images))
        if resized is not None:
            attempt(rows, f"{label} + resize graph",
                    lambda d=device, lb=f"{label} + resize graph": measure(lb, fp32, resized, d, images))
    print_rows(head, rows)
    failures = sum("failed" in r for r in rows)
    for name in ("fp16", "fp16+resize"):
        if engines.get(name) is None:
            continue
        def loop(e=engines[name]):
            prof, label = overhead(str(e), 10.0, args.loop_ticks, args.image_size, backend="tensorrt")
            print_overhead(prof, label, 10.0, args.loop_ticks, args.image_size)
        loop_failed: list[dict] = []
        attempt(loop_failed, f"control loop on the {name} engines", loop)
        for r in loop_failed:
            print(f"{head}: control loop on the {name} engines FAILED: {r['failed']}")
        failures += len(loop_failed)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    ap.add_argument("--preset", default="tiny", help="model preset for the bundles (tiny, demo, small)")
    ap.add_argument("--frames", type=int, default=20, help="observations per path (the first is warm-up)")
    ap.add_argument("--image-size", type=int, default=480, help="camera frame height (px; width 16:9)")
    ap.add_argument("--loop-ticks", type=int, default=50, help="control-loop ticks on the FP16 engines")
    ap.add_argument("--work", help="folder for bundles and engines (default: a fresh temporary folder)")
    args = ap.parse_args()

    problem = gpu_problem()
    if problem:
        print(f"gpu_check: no usable GPU here ({problem}); nothing was built", file=sys.stderr)
        return EXIT_NO_GPU

    from vla_runtime.runtime.backends.device import live_device

    live = live_device()
    print(f"gpu_check: {live.gpu_name} (compute capability {live.compute_capability}), TensorRT "
          f"{live.tensorrt_version}, CUDA driver {live.cuda_version}")
    work = Path(args.work or tempfile.mkdtemp(prefix="vla-gpu-check-"))
    calib = calib_folder(work / "calib")
    images = frames(args.frames, args.image_size)
    failures = sum(check_head(head, args, work, calib, images) for head in args.heads)
    print(f"\ngpu_check: done, {failures} failed path(s); bundles and engines in {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
