"""`vla-runtime profile`: measure a bundle's per-stage latency without a robot.

Each inference runs as one tick of the real scheduler at the control rate, on a fixed synthetic
camera frame, so the table reads exactly like the one printed after a robot run (same stages,
same deadline accounting) and shows whether the bundle fits its period on this machine.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from vla_runtime.common.errors import UserError
from vla_runtime.runtime.assemble import open_policy
from vla_runtime.runtime.cmd_run import DEFAULT_TASK, add_timing_args
from vla_runtime.runtime.manifest import BUILT_IN_HEADS
from vla_runtime.runtime.state_input import resting_state

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("profile", help="time every stage of a bundle's inference, no robot needed")
    p.add_argument("--bundle", metavar="DIR", help="bundle directory (default: the embedded tiny bundle)")
    p.add_argument("--head", choices=BUILT_IN_HEADS, default=None, help="head of the embedded default bundle")
    p.add_argument("--task", default=DEFAULT_TASK, help="instruction fed to the tokenizer")
    p.add_argument("--iterations", type=int, default=50, help="measured inferences (default 50)")
    p.add_argument("--warmup", type=int, default=3, help="inferences run first and not measured (default 3)")
    p.add_argument("--image-size", type=int, default=224, metavar="PX", help="synthetic camera frame side")
    add_timing_args(p)
    p.set_defaults(func=cmd_profile)


def synthetic_frame(size: int) -> np.ndarray:
    """A fixed, textured RGB frame (uint8 [size, size, 3]); the same bytes on every machine."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // max(size - 1, 1), yy * 255 // max(size - 1, 1), (xx + yy) % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def cmd_profile(args: argparse.Namespace) -> int:
    from vla_runtime.runtime.profiler import Profiler
    from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig
    from vla_runtime.runtime.trace import write_trace
    from vla_runtime.runtime.types import Frame

    if args.iterations < 1 or args.warmup < 0:
        raise UserError("--iterations must be >= 1 and --warmup >= 0")
    if not (16 <= args.image_size <= 4096):
        raise UserError(f"--image-size {args.image_size}: must be within 16..4096 pixels")
    if args.hz is not None and not (0 < args.hz <= 1000):
        raise UserError(f"--hz {args.hz}: must be in (0, 1000]")
    policy, manifest, label = open_policy(args)
    try:
        rate = args.hz or manifest.control.rate_hz
        image = synthetic_frame(args.image_size)  # feeds every camera view the bundle reads
        state = resting_state(manifest.state)  # a fixed measured state, for a bundle that reads one
        for _ in range(args.warmup):
            policy.infer(Frame(image, time.monotonic()), args.task, state)
        sched = Scheduler(SchedulerConfig(rate, max_consecutive_misses=10**9), Profiler(1.0 / rate))
        sched.start()
        for _ in range(args.iterations):
            sched.tick()
            t = time.monotonic()
            with sched.section("infer"):
                policy.infer(Frame(image, t), args.task, state)
            sched.profiler.record_stages(dict(policy.stage_times), t)
            sched.wait()
    finally:
        policy.close()
    print(f"bundle: {label}")
    print(f"{args.iterations} inferences at {rate:g} Hz on a {args.image_size}x{args.image_size} frame")
    print(sched.profiler.table())
    extra = {"bundle": label, "head": manifest.head, "image_size": args.image_size}
    if args.profile:
        print(f"profile: {sched.profiler.save_json(args.profile, extra)}")
    if args.trace:
        print(f"trace: {write_trace(sched.profiler, args.trace, extra)}")
    return 0
