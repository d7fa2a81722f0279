"""Scale proof: the PaliGemma-3B shape exported in fp16 on a small CPU machine, memory per stage.

Builds the `paligemma-3b` preset (the real PaliGemma-3B backbone shape: SigLIP So400m/14 at
224 px, Gemma-2B with its 257,216-id vocabulary; random weights, nothing downloaded) with one
action head, exports every graph in fp16 with its weights streamed to external data, checks
parity graph by graph (PyTorch references first, then one onnxruntime session at a time, the
PyTorch weights freed before the first session), writes the bundle, then loads it through the
runtime and runs one inference, printing the runtime's own per-stage profile.

Random init is cheap on purpose: transformers' and torch's initialisers are switched off
(`transformers.initialization.no_init_weights`, parameters created directly in fp16), then every
matrix is filled by tiling one seeded N(0, 0.02) block of a prime length (so rows do not
repeat in step) and norms/biases get their identity values. A real init of 2.9B parameters
costs minutes of CPU and proves nothing about export.

Peak RSS is sampled every 50 ms from /proc/self/status and kept per stage; the stages are the
build's own "stage: ..." log lines. Prints one table and writes JSON.

    nice -n 10 timeout 3h python bench/bench_export_3b.py --out /tmp/pg3b --json bench/results/export_3b.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_export_3b")
BLOCK = 1_000_003  # prime: a tiled block never lines up with a row length


class StageMeter(logging.Handler):
    """Peak RSS and wall time per stage; stages switch on "stage: <name>" log records or by hand."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.rows: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self, name: str) -> None:
        with self._lock:
            now = time.perf_counter()
            if self.rows:
                self.rows[-1]["seconds"] = now - self.rows[-1]["t0"]
            self.rows.append({"stage": name, "t0": now, "seconds": 0.0, "peak_rss_gb": _rss_gb()})
        logger.info("-- %s", name)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "stage: %s" and record.args:
            self.start(str(record.args[0]))

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            rss = _rss_gb()
            with self._lock:
                if self.rows:
                    self.rows[-1]["peak_rss_gb"] = max(self.rows[-1]["peak_rss_gb"], rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.start("end")
        self._stop.set()
        self._thread.join()
        self.rows.pop()


def _rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2  # kB -> GiB
    return 0.0


def cheap_random(model, seed: int) -> None:
    """Seeded N(0, 0.02)-like weights by tiling one block; LayerNorm weight 1, biases and Gemma norms 0."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    block = (torch.randn(BLOCK, generator=gen) * 0.02).to(next(model.parameters()).dtype)
    layer_norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for i, p in enumerate({id(p): p for p in model.parameters()}.values()):
            flat = p.data.view(-1)
            if id(p) in layer_norm_weights:
                flat.fill_(1.0)
            elif p.dim() == 1:
                flat.zero_()  # biases; Gemma's RMSNorm stores (weight - 1)
            else:
                offset = (i * 7919) % BLOCK  # a different phase per tensor
                rolled = torch.cat([block[offset:], block[:offset]])
                for start in range(0, flat.numel(), BLOCK):
                    n = min(BLOCK, flat.numel() - start)
                    flat[start : start + n].copy_(rolled[:n])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/paligemma-3b-fp16", help="bundle directory (replaced)")
    ap.add_argument("--preset", default="paligemma-3b", help="size preset (a smaller one for a dry run)")
    ap.add_argument("--head", default="parallel", choices=("parallel", "flow", "tokens"))
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    ap.add_argument("--observations", type=int, default=1, help="parity observations (each runs the 3B model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the bundle (about 6 GB)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    for noisy in ("vla_runtime.runtime", "vla_runtime.export.tokenizer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch
    from transformers.initialization import no_init_weights
    from vla_runtime.export.build import build_from_source
    from vla_runtime.export.checkpoint import from_preset
    from vla_runtime.export.model import count_parameters
    from vla_runtime.export.onnx_export import weight_bytes
    from vla_runtime.export.precision import building_in
    from vla_runtime.runtime.manifest import load_manifest
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.types import Frame

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    wall = time.perf_counter()
    meter = StageMeter()
    logging.getLogger("vla_runtime").addHandler(meter)
    with meter:
        meter.start("model init (empty fp16 + tiled random)")
        with building_in(args.dtype), no_init_weights():
            source = from_preset(args.preset, args.head, seed=0)
        cheap_random(source.model, seed=0)
        params, nbytes = count_parameters(source.model), weight_bytes(source.model)
        logger.info("%.3fB parameters, %.2f GB of %s weights", params / 1e9, nbytes / 1e9, args.dtype)
        build_from_source(source, out, progress=False, force=True, dtype=args.dtype,
                          parity_observations=args.observations, release_model=True)
        del source
        meter.start("runtime: load policy")
        policy = load_policy(out, backend="cpu", threads=args.threads)
        meter.start("runtime: one inference")
        rng = np.random.default_rng(0)
        frame = Frame(image=rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8), t_capture=0.0)
        policy.infer(frame, "pick up the red block")
        profile = dict(policy.stage_times)
        policy.close()
    total = time.perf_counter() - wall
    manifest = load_manifest(out)
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    parity = manifest.parity
    rows = [{k: v for k, v in r.items() if k != "t0"} for r in meter.rows]
    print(f"\n{args.preset} / {args.head} / {args.dtype}: {params / 1e9:.3f}B parameters, "
          f"{nbytes / 1e9:.2f} GB weights in {args.dtype}, bundle {sum(sizes.values()) / 1e9:.2f} GB on disk")
    print(f"{'stage':<44} {'wall s':>8} {'peak RSS GB':>12}")
    for r in rows:
        print(f"{r['stage']:<44} {r['seconds']:>8.1f} {r['peak_rss_gb']:>12.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{'total':<44} {total:>8.1f} {peak:>12.2f}  (ru_maxrss, whole run)")
    print(f"\nparity ({'PASSED' if parity['passed'] else 'FAILED'}, atol {parity['tolerance']['atol']}, "
          f"rtol {parity['tolerance']['rtol']}):")
    for role, g in parity["graphs"].items():
        print(f"  {role:<9} max abs err {g['max_abs_err']:.2e}  ({g['worst']:.2f} of the bound)")
    print(f"  actions   {parity['action']}")
    print("\nruntime per-stage profile of one inference (ms):")
    for stage, seconds in profile.items():
        print(f"  {stage:<16} {seconds * 1e3:>10.1f}")
    doc = {
        "date": datetime.date.today().isoformat(), "preset": args.preset, "head": args.head, "dtype": args.dtype,
        "parameters": params, "weight_bytes": nbytes, "bundle_bytes": sizes, "stages": rows,
        "total_seconds": total, "ru_maxrss_gb": peak, "parity": parity,
        "inference_ms": {k: v * 1e3 for k, v in profile.items()}, "threads": args.threads,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if parity["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
