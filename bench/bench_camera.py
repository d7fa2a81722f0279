"""Per-tick cost of a camera read: the capture thread's newest-frame handoff against a synchronous grab.

A 640x480 clip (MJPG, written here with OpenCV) is served by the `video` camera, the same
capture thread and code path a V4L2 camera uses minus the device. Part 1 times what the control
loop pays per tick, `camera.read(now)` on the running ThreadedCamera (a reference handoff).
Part 2 times what a tick would pay without the thread: grab, decode and BGR->RGB on the loop's
own thread (and a USB camera would add up to one frame period of waiting on top). Both run in
this process, one after the other, so the ratio is what to compare across machines.

    python bench/bench_camera.py [--reads 3000] [--width 640] [--height 480]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
from vla_runtime.drivers.cameras import video
from vla_runtime.runtime.robot_description import CameraSpec


def write_clip(path: Path, width: int, height: int, frames: int = 60) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    for i in range(frames):
        writer.write(np.roll(base, 8 * i, axis=1))  # textured, moving: a realistic JPEG size
    writer.release()
    return path


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    us = np.asarray(samples_s) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3000, help="handoff reads timed, 1 ms apart (default 3000)")
    parser.add_argument("--grabs", type=int, default=300, help="synchronous grabs timed (default 300)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.avi", args.width, args.height)
        spec = CameraSpec(name="front", kind="video", options=MappingProxyType({"path": str(clip), "fps": 30.0}))
        camera = video.make_camera(spec)
        try:
            handoff, frames = [], set()
            for _ in range(args.reads):
                t = time.perf_counter()
                frame = camera.read(time.monotonic())
                handoff.append(time.perf_counter() - t)
                frames.add(frame.t_capture)
                time.sleep(0.001)  # let the capture thread deliver (and contend for the GIL) meanwhile
        finally:
            camera.close()

        source = video.VideoSource(video.VideoOptions(path=str(clip)))
        source.open()
        try:
            grabs = []
            for _ in range(args.grabs):
                t = time.perf_counter()
                source.grab()
                grabs.append(time.perf_counter() - t)
        finally:
            source.close()

    h50, h99 = percentiles(handoff)
    g50, g99 = percentiles(grabs)
    print(f"camera read per tick, {args.width}x{args.height} MJPG clip, {cv2.__version__=}")
    print(f"  capture-thread handoff  p50 {h50:8.2f} us   p99 {h99:8.2f} us   ({args.reads} reads, "
          f"{len(frames)} distinct frames seen)")
    print(f"  synchronous grab        p50 {g50:8.2f} us   p99 {g99:8.2f} us   ({args.grabs} grabs: decode + RGB)")
    print(f"  ratio (sync / handoff)  p50 {g50 / h50:8.0f}x  p99 {g99 / h99:8.0f}x")


if __name__ == "__main__":
    main()
