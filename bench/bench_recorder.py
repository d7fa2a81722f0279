"""What `--record` costs the control loop: the enqueue in the tick, against the writer running beside it.

A paced loop (default 30 Hz) builds the tick record exactly as `ControlLoop` does (a fresh
640x480 camera frame per tick, the state and command vectors, the stage timings) and hands it
to a real `FlightRecorder` writing to a real file, while the writer thread encodes JPEG (or raw
rgb8) and compresses chunks in the same process. Timed per tick, on the loop thread:

- `enqueue`: `recorder.record(TickRecord(...))`, what recording adds to the tick;
- `baseline`: the same loop's other bookkeeping with recording off (the record call skipped),
  measured in the same run for the ratio.

Also printed: ticks written and dropped, file size and the writer's throughput. The target is
recording adding < 0.1 ms p99 to the tick.

    python bench/bench_recorder.py [--hz 30] [--ticks 600] [--size 640x480] [--raw]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from vla_runtime.runtime import recording_format as fmt
from vla_runtime.runtime.recorder import FlightRecorder, RecorderConfig, TickRecord


def run(hz: float, ticks: int, size: tuple[int, int], raw: bool, record: bool, out: Path) -> dict:
    run_info = fmt.RunInfo(task="pick up the red block", rate_hz=hz, bundle="bench", bundle_id="bench",
                           robot="bench", robot_file="bench.toml", cameras=("front",),
                           joint_names=tuple(f"j{i}" for i in range(6)), action_kind="ee_delta",
                           action_names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"))
    recorder = FlightRecorder(out, run_info, RecorderConfig(raw_images=raw)) if record else None
    if recorder is not None:
        recorder.open()
    w, h = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    scene = (np.stack([90 + 60 * np.sin(xx / 40), 110 + 40 * np.cos(yy / 30), 100 + 0 * xx], -1)
             + rng.normal(0, 4, (h, w, 3)))  # a smooth table with sensor noise (sigma 4)
    scene[(abs(yy - h // 2) < 30) & (abs(xx - w // 3) < 30)] = (200, 30, 30)  # a red block
    scene = np.clip(scene, 0, 255).astype(np.uint8)
    period, t0 = 1.0 / hz, time.monotonic()
    costs = np.zeros(ticks)  # seconds spent on the recording call per tick
    for k in range(ticks):
        image = np.roll(scene, k, axis=1)  # a new frame each tick, as a camera delivers (not timed)
        state = rng.normal(size=7)
        desired = rng.normal(size=7)
        stages = {"state": 2e-4, "capture": 1.1e-3, "infer": 4e-2, "safety": 3e-4, "command": 4e-4}  # seconds
        joints, gripper = state[:6], float(state[6])
        t = time.perf_counter()
        if recorder is not None:  # the loop's record call, argument for argument
            recorder.record(TickRecord(k, time.monotonic(), {"front": image}, joints, gripper, desired, desired, joints,
                                       gripper, desired, (), False, k // 2, k % 2, k if k % 2 == 0 else -1,
                                       dict(stages), time.monotonic() > t0 + (k + 1) * period))
        costs[k] = time.perf_counter() - t
        time.sleep(max(0.0, t0 + (k + 1) * period - time.monotonic()))
    result = {"ms": costs * 1e3}
    if recorder is not None:
        t = time.monotonic()
        summary = recorder.close("completed")
        result.update(summary=summary, close_s=time.monotonic() - t, seconds=time.monotonic() - t0)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hz", type=float, default=30.0, help="loop rate (default 30)")
    p.add_argument("--ticks", type=int, default=600, help="ticks per run (default 600: 20 s at 30 Hz)")
    p.add_argument("--size", default="640x480", help="frame WxH (default 640x480)")
    p.add_argument("--raw", action="store_true", help="record raw rgb8 frames instead of JPEG")
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        base = run(args.hz, args.ticks, size, args.raw, False, Path(tmp))
        rec = run(args.hz, args.ticks, size, args.raw, True, Path(tmp))
    s = rec["summary"]
    kind = "raw rgb8" if args.raw else "JPEG q90"
    print(f"recorder: {args.ticks} ticks at {args.hz:g} Hz, {size[0]}x{size[1]} {kind}, writer thread in-process")
    print(f"{'':<26}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, ms in (("record call (recording on)", rec["ms"]), ("same slot (recording off)", base["ms"])):
        p50, p99 = np.percentile(ms, [50, 99])
        print(f"{name:<26}{p50:>9.4f}{p99:>9.4f}{ms.max():>9.4f}")
    added = np.percentile(rec["ms"], 99) - np.percentile(base["ms"], 99)
    verdict = "within" if added < 0.1 else "OVER"
    print(f"recording adds {added:.4f} ms p99 to the tick ({verdict} the 0.1 ms budget)")
    mb = s.bytes / 1e6
    print(f"written {s.ticks} ticks, dropped {s.dropped_ticks}, without images {s.dropped_images}; "
          f"{mb:.1f} MB ({mb / rec['seconds']:.2f} MB/s, {s.bytes / max(s.ticks, 1) / 1e3:.0f} kB per tick); "
          f"close {rec['close_s'] * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
