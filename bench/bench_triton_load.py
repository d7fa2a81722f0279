"""Several robots against one Triton server: chunk latency and throughput as the fleet grows.

One real `tritonserver` (the pytriton wheel's, export/triton_local.py) serves a
`vla-export triton --graphs inprocess` repository of the bundle, once with dynamic batching and
once without. For N = 1, 2, 4, 8 robots, N separate processes each run the robot's own remote
path (`RemotePolicy.infer`: preprocess, tokenize, the seeded flow noise, one gRPC request,
unnormalise) in a closed loop for `--seconds`: each robot sends its next request as soon as its
chunk is back, so the server is saturated and the figures are the fleet's limit, not a paced
10 Hz load. Per configuration: chunk latency p50 / p99 (ms, as a robot sees it, all robots
pooled) and throughput (chunks per second, all robots). Both server variants run in the same
invocation, so their ratio holds even on a loaded host.

Robots report through a JSON file each (no pickle between processes). Results go to
bench/results/triton_load.json.

    python bench/bench_triton_load.py [--bundle DIR] [--robots 1,2,4,8] [--seconds 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "triton_load.json"
TASK = "pick up the red block"


def robot(args) -> int:
    """One robot process: warm up, wait for the start time, then infer in a closed loop."""
    import logging

    logging.getLogger("vla_runtime.runtime.trust").setLevel(logging.ERROR)  # unsigned bench bundle: known
    from vla_runtime.runtime.backends.remote import RemoteConfig, open_remote_policy
    from vla_runtime.runtime.policy import verified_bundle
    from vla_runtime.runtime.types import Frame

    policy = open_remote_policy(verified_bundle(args.bundle), RemoteConfig(args.server, 10.0))
    rng = np.random.default_rng(args.seed)
    image = (rng.random((480, 640, 3)) * 255).astype(np.uint8)  # uint8 [H, W, 3], a VGA camera frame
    while time.time() < args.start:
        time.sleep(0.005)
    latencies, network = [], []
    end = args.start + args.seconds
    while time.time() < end:
        t = time.perf_counter()
        policy.infer(Frame(image, time.monotonic()), TASK)
        latencies.append(time.perf_counter() - t)
        network.append(policy.stage_times["network"])
    policy.close()
    Path(args.out).write_text(json.dumps({"latency_s": latencies, "network_s": network}))
    return 0


def fleet(bundle: Path, server: str, robots: int, seconds: float, folder: Path) -> dict:
    """N robot processes at once; pooled chunk latency and total throughput."""
    start = time.time() + 6.0 + 1.5 * robots  # every robot is connected and warm before the clock starts
    procs, outs = [], []
    for i in range(robots):
        out = folder / f"robot-{robots}-{i}.json"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--robot", "--bundle", str(bundle), "--server", server, "--seed", str(i),
             "--start", repr(start), "--seconds", str(seconds), "--out", str(out)],
            env={**os.environ, "OMP_NUM_THREADS": "1"}))
    for p in procs:
        if p.wait(timeout=seconds + 120) != 0:
            raise SystemExit(f"a robot process failed ({p.returncode})")
    lat = np.concatenate([json.loads(o.read_text())["latency_s"] for o in outs]) * 1e3  # ms
    net = np.concatenate([json.loads(o.read_text())["network_s"] for o in outs]) * 1e3  # ms
    return {"robots": robots, "chunks": int(lat.size), "throughput_per_s": round(lat.size / seconds, 1),
            "latency_ms": {"p50": _ms(lat, 50), "p99": _ms(lat, 99)},
            "network_ms_p50": _ms(net, 50)}


def _ms(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def serve_and_measure(bundle: Path, batching: bool, robots: list[int], seconds: float, threads: int,
                      venv: Path, folder: Path) -> list[dict]:
    from vla_runtime.export.triton_local import TritonServer, link_project
    from vla_runtime.export.triton_repo import RepoConfig, write_repository

    repo = folder / f"repo-{'batching' if batching else 'plain'}"
    write_repository(bundle, repo, RepoConfig(graphs="inprocess", batching=batching, threads=threads))
    link_project(repo)
    server = TritonServer(venv, repo, folder / f"{repo.name}.log")
    why = server.start()
    if why:
        raise SystemExit(f"tritonserver did not start: {why}")
    try:
        rows = []
        for n in robots:
            row = fleet(bundle, server.grpc_url, n, seconds, folder)
            row["dynamic_batching"] = batching
            print(f"  batching {'on ' if batching else 'off'} | {n} robot(s): {row['throughput_per_s']:6.1f} chunks/s"
                  f" | latency p50 {row['latency_ms']['p50']:7.2f} ms  p99 {row['latency_ms']['p99']:7.2f} ms"
                  f" | network p50 {row['network_ms_p50']:.2f} ms", flush=True)
            rows.append(row)
        return rows
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle directory (default: a tiny flow bundle, built once)")
    ap.add_argument("--robots", default="1,2,4,8", help="fleet sizes (default 1,2,4,8)")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per fleet size (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per graph on the server (default 1)")
    ap.add_argument("--robot", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--server", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.robot:
        return robot(args)

    from vla_runtime.export.triton_local import cache_root, triton_venv

    venv, why = triton_venv()
    if venv is None:
        raise SystemExit(f"no Triton venv: {why}")
    bundle = Path(args.bundle) if args.bundle else cache_root() / "bench-triton-tiny-flow"
    if not args.bundle and not (bundle / "manifest.json").is_file():
        from vla_runtime.export.build import build_bundle

        build_bundle(bundle, "flow", preset="tiny", seed=0, progress=False)
    robots = [int(n) for n in args.robots.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batching in (True, False):
            rows += serve_and_measure(bundle, batching, robots, args.seconds, args.threads, venv, Path(tmp))
    doc = {"bench": "triton_load", "bundle": str(bundle.name), "seconds_per_fleet": args.seconds,
           "server_threads_per_graph": args.threads,
           "client": "grpc, closed loop (next request when the chunk is back)",
           "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
           "rows": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
