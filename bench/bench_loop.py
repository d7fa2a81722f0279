"""Loop pacing and runtime overhead, measured side by side in one run.

Part 1, pacing: the same simulated work (a fixed busy time plus a seeded random part) is paced
by our absolute-deadline Scheduler (its default: one OS sleep to the deadline), the same with a
1 ms yielding spin before each deadline, the same under SCHED_FIFO when permitted, and the
common practice it replaces: sleep for the remainder of the period after the work, measured
from the tick's own start (as LeRobot's `busy_wait(1 / fps - dt)` / `precise_sleep` loops do).
For each: period error (|interval - period|) p50 / p99 / max, and drift, where tick N started
versus t0 + N * period.

Part 2, overhead: the full control loop (scheduler, profiler, chunk cursor, safety layer with
inverse kinematics) runs the tiny default bundle against an in-memory robot and a fixed camera
frame (`--image-size H`: an H x 16H/9 frame), so robot I/O costs nothing. Per tick, everything
except the backend's graph time is the runtime's own overhead; it is reported as a share of the
period, split into the loop machinery and the policy's host-side stages (preprocess, tokenize,
decode_actions). It runs several times in one process, so the paths sit side by side under the
same load: the loop's OpenCV preprocessing, the old PIL-exact numpy path, the same bundle with a
resize graph (`vla-export resize-graph`: the host hands the frame over and the graph resizes;
its graph time is printed beside the host saving), and, when permitted, the OpenCV and graph
runs again under SCHED_FIFO.

Part 3, CPU cost: wall-clock figures on a shared host include preemption, so the loop's own work
(state read, scheduler and profiler bookkeeping, safety with IK) is also replayed on part 2's
actions and measured in process CPU time.

    python bench/bench_loop.py [--hz 50] [--ticks 250] [--bundle DIR] [--image-size 480|1080]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from vla_runtime.runtime.loop import ControlLoop, LoopConfig
from vla_runtime.runtime.manifest import SafetyDefaults
from vla_runtime.runtime.profiler import Profiler
from vla_runtime.runtime.robot import Camera, Robot
from vla_runtime.runtime.robot_description import load_robot_description
from vla_runtime.runtime.safety import ActionSafety, SafetyLimits
from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig
from vla_runtime.runtime.types import Frame, RobotState

GRAPH_STAGES = ("resize", "vision", "prefill", "decode", "head", "velocity")
HOST_STAGES = ("preprocess", "tokenize", "decode_actions")
IO_STAGES = ("state", "capture", "command")


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def pacing_stats(starts: list[float], slots: list[int], period: float) -> dict[str, float]:
    """Period error per interval (against the slots it spans) and drift of the last tick from its slot."""
    s, k = np.asarray(starts), np.asarray(slots)
    err = np.abs(np.diff(s) - np.diff(k) * period) * 1e3  # ms
    drift = (s[-1] - s[0] - (k[-1] - k[0]) * period) * 1e3  # ms
    skipped = int(k[-1] - k[0] + 1 - len(k))
    return {"p50": np.percentile(err, 50), "p99": np.percentile(err, 99), "max": err.max(), "drift": drift,
            "skipped": skipped}


def run_scheduler(
    period: float, ticks: int, work: np.ndarray, spin_s: float, rt: int = 0
) -> tuple[list[float], list[int]] | None:
    config = SchedulerConfig(1.0 / period, spin_s=spin_s, max_consecutive_misses=10**9, realtime_priority=rt)
    sched = Scheduler(config)
    sched.start()
    if rt and not sched.realtime:
        return None  # not permitted here
    try:
        for k in range(ticks):
            sched.tick()
            busy(work[k])
            sched.wait()
    finally:
        sched.release()
    return sched.profiler.starts, sched.profiler.slots


def run_remainder(period: float, ticks: int, work: np.ndarray) -> tuple[list[float], list[int]]:
    """The common practice: after the work, sleep `period - elapsed` measured from this tick's start.

    Relative to the tick's own start, so each sleep's overshoot (and a late start) is never
    paid back: the error of every tick adds up into drift.
    """
    starts = []
    for k in range(ticks):
        start = time.perf_counter()
        starts.append(start)
        busy(work[k])
        time.sleep(max(period - (time.perf_counter() - start), 0.0))
    return starts, list(range(ticks))


class NullRobot(Robot):
    """A perfect in-memory arm: reads back exactly what it was last sent, at no cost."""

    def __init__(self, kinematics, q0):
        self._kin, self.q, self.g = kinematics, np.array(q0, dtype=np.float64), 1.0

    @property
    def joint_names(self):
        return tuple(f"j{i}" for i in range(len(self.q)))

    @property
    def kinematics(self):
        return self._kin

    def activate(self):
        pass

    def read_state(self, now):
        pos, rpy = self._kin.forward(self.q)
        return RobotState(self.q.copy(), pos, rpy, self.g, now)

    def command(self, joint_targets, gripper, now, period):
        self.q, self.g = np.array(joint_targets), float(gripper)
        return self.q, self.g

    def hold(self, now, period):
        pass

    def deactivate(self):
        pass


class StillCamera(Camera):
    def __init__(self, height: int):
        rng = np.random.default_rng(0)
        width = 2 * round(height * 16 / 9 / 2)  # 16:9, even: 480 -> 854, 1080 -> 1920
        self.image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)

    def read(self, now):
        return Frame(self.image, now)


def overhead(bundle: str, hz: float, ticks: int, image_size: int, rt: int = 0,
             exact: bool = False, backend: str = "cpu") -> tuple[Profiler, str]:
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.sim.world import SimWorld

    world = SimWorld()
    policy = load_policy(bundle, backend=backend, exact_preprocess=exact, allow_failed_gate=True)
    m = policy.manifest
    desc = load_robot_description("sim")
    limits = SafetyLimits.from_sources(m.safety, desc.safety, desc.joint_min, desc.joint_max, desc.joint_max_velocity)
    robot = NullRobot(world.kinematics, world.data.qpos[world.arm_qpos])
    safety = RecordingSafety(limits, m.action.kind, m.action.dim, robot.kinematics, len(robot.q))
    sched = Scheduler(SchedulerConfig(hz, max_consecutive_misses=10**9, realtime_priority=rt), Profiler(1.0 / hz))
    loop = ControlLoop(LoopConfig(ticks, m.control.replan_every), policy, robot, StillCamera(image_size), safety, sched)
    result = loop.run("pick up the red block")
    policy.close()
    fifo = f"SCHED_FIFO {rt}" if rt and sched.profiler.starts and _was_realtime(rt) else "normal scheduling"
    REPLAY[:] = safety.seen
    path = ("old PIL-exact numpy preprocess" if exact else "resize graph (host: frame check only)"
            if "resize" in m.graphs else "OpenCV preprocess") + f", {policy.backend_name}"
    return sched.profiler, (f"{m.model.get('name')}, replan every {m.control.replan_every}, {fifo}, {path},"
                            f" {result.stop_reason}")


def resize_graph_bundle(bundle: str) -> str:
    """A copy of `bundle` with a resize graph, made once beside it (vla-export resize-graph)."""
    from pathlib import Path

    from vla_runtime.export.resize_graph import add_resize_graph

    derived = Path(bundle).with_name(Path(bundle).name + "-resize-graph")
    if not derived.exists():
        add_resize_graph(bundle, derived)
    return str(derived)


REPLAY: list = []  # (state, desired action) pairs seen by the safety layer in the last part-2 run


class RecordingSafety(ActionSafety):
    """The real safety layer, remembering its inputs so part 3 can replay them."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen = []

    def enforce(self, current, desired, dt):
        self.seen.append((current, np.array(desired)))
        return super().enforce(current, desired, dt)


def machinery_cpu(robot: NullRobot, safety: ActionSafety, hz: float, repeats: int = 5) -> tuple[float, float]:
    """CPU seconds per tick of the loop's own work, replaying part 2's safety inputs on this thread.

    process time, not wall time: what a tick costs the CPU, without the preemption a shared host
    adds to wall-clock figures. Covers the state read (FK), scheduler + profiler bookkeeping with
    the loop's sections, and the safety layer with IK.
    """
    skipped = [0.0]  # seconds of sleeping skipped: the clock jumps instead, so only work is timed

    def clock() -> float:
        return time.monotonic() + skipped[0]

    def sleep(seconds: float) -> None:
        skipped[0] += max(seconds, 0.0)

    sched = Scheduler(SchedulerConfig(hz, max_consecutive_misses=10**9), clock=clock, sleep=sleep)
    sched.start()
    t = time.process_time()
    for _ in range(repeats):
        for state, desired in REPLAY:
            sched.tick()
            with sched.section("state"):
                robot.read_state(0.0)
            with sched.section("safety"):
                safety.enforce(state, desired, 1.0 / hz)
            with sched.section("command"):
                pass
            sched.wait()
    per_tick = (time.process_time() - t) / (repeats * len(REPLAY))
    safety_ms = np.percentile(np.asarray(sched.profiler._samples["safety"]) * 1e3, 50)
    return per_tick, safety_ms


def _was_realtime(rt: int) -> bool:
    """Whether this process may use SCHED_FIFO (the scheduler falls back silently otherwise)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        return True
    except (AttributeError, OSError):
        return False


def print_overhead(prof: Profiler, label: str, hz: float, ticks: int, image_size: int) -> dict[str, float]:
    """Print part 2's table for one run; returns its headline figures (ms and % of the period)."""
    loop_period = 1.0 / hz
    work_s = np.asarray([s.duration for s in prof.spans if s.name == "work"])
    graphs = tick_sums(prof, GRAPH_STAGES)
    host = tick_sums(prof, HOST_STAGES)
    io = tick_sums(prof, IO_STAGES)
    safety = tick_sums(prof, ("safety",))
    machinery = work_s - graphs - host - io - safety  # scheduler, profiler, chunking, bookkeeping
    total = work_s - graphs - io
    print(f"\npart 2: runtime overhead per tick at {hz:g} Hz, {ticks} ticks ({label}),"
          f" in-memory robot, {image_size}p frame")
    print(f"{'per tick':<46}{'p50 ms':>9}{'p99 ms':>9}{'p50 %period':>13}{'p99 %period':>13}")
    for name, v in (("backend graphs (excluded)", graphs),
                    ("loop machinery (sched, profiler, chunks)", machinery),
                    ("safety + IK", safety),
                    ("policy host stages (preprocess, tokenize..)", host),
                    ("runtime overhead = all but graphs", total)):
        p50, p99 = np.percentile(v, [50, 99]) * 1e3
        print(f"{name:<46}{p50:>9.3f}{p99:>9.3f}{p50 / loop_period / 10:>12.2f}%{p99 / loop_period / 10:>12.2f}%")
    print(f"mean runtime overhead: {total.mean() / loop_period * 100:.2f}% of the period"
          f" (loop machinery alone {machinery.mean() / loop_period * 100:.2f}%,"
          f" safety + IK {safety.mean() / loop_period * 100:.2f}%)")
    print(f"per-stage table:\n{prof.table()}")
    stats = prof.stage_stats()
    pre = stats.get("preprocess", {"p50": float("nan")})
    return {"preprocess_p50_ms": pre["p50"],
            "resize_graph_p50_ms": stats.get("resize", {"p50": 0.0})["p50"],
            "overhead_mean_pct": total.mean() / loop_period * 100,
            "overhead_p50_pct": np.percentile(total, 50) / loop_period * 100,
            "machinery_mean_pct": machinery.mean() / loop_period * 100,
            "safety_mean_pct": safety.mean() / loop_period * 100,
            "overhead_no_safety_mean_pct": (total - safety).mean() / loop_period * 100}


def print_comparison(figures: dict[str, dict[str, float]], image_size: int) -> None:
    """The part-2 runs side by side: the loop's paths against the old exact path, same process and load."""
    names = list(figures)
    print(f"\npart 2 summary, {image_size}p frame, same process and load (columns: preprocessing path, scheduling):")
    print(f"{'':<46}" + "".join(f"{n:>19}" for n in names))
    for key, name in (("preprocess_p50_ms", "host preprocess p50 (ms)"),
                      ("resize_graph_p50_ms", "resize graph p50 (ms, a graph: excluded)"),
                      ("overhead_mean_pct", "runtime overhead, all but graphs (% period)"),
                      ("overhead_no_safety_mean_pct", "  of which not safety + IK (% period)"),
                      ("safety_mean_pct", "  safety + IK (% period)"),
                      ("machinery_mean_pct", "  loop machinery alone (% period)")):
        print(f"{name:<46}" + "".join(f"{figures[n][key]:>19.3f}" for n in names))
    verdicts = ["yes" if f["preprocess_p50_ms"] < 1.0 and f["overhead_mean_pct"] < 1.0 else "no"
                for f in figures.values()]
    print(f"{'targets met (preprocess < 1 ms, overhead < 1%)':<46}" + "".join(f"{v:>19}" for v in verdicts))
    ours, old = figures.get("OpenCV"), figures.get("old exact")
    if ours and old:
        print(f"host preprocess, old exact / OpenCV: {old['preprocess_p50_ms'] / ours['preprocess_p50_ms']:.0f}x")
    graph = figures.get("resize graph")
    if ours and graph:
        print(f"resize graph: host preprocess {ours['preprocess_p50_ms']:.3f} -> "
              f"{graph['preprocess_p50_ms']:.3f} ms p50,"
              f" for {graph['resize_graph_p50_ms']:.2f} ms of graph time on this device"
              f" (meant for a GPU; on a CPU the loop keeps OpenCV)")


def tick_sums(profiler: Profiler, names: tuple[str, ...]) -> np.ndarray:
    """Seconds per tick spent in the given stages (inference stages are laid inside their tick)."""
    starts = np.asarray(profiler.starts)
    out = np.zeros(len(starts))
    for span in profiler.spans:
        if span.name in names:
            i = max(int(np.searchsorted(starts, span.t_start, side="right")) - 1, 0)
            out[i] += span.duration
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hz", type=float, default=50.0, help="pacing rate for part 1 (Hz)")
    ap.add_argument("--ticks", type=int, default=250, help="ticks per pacing variant")
    ap.add_argument("--work-ms", type=float, default=3.0, help="fixed busy work per tick (ms), plus up to 2 ms random")
    ap.add_argument("--rt-priority", type=int, default=20, help="also pace under SCHED_FIFO at this priority "
                    "when permitted (0 = skip)")
    ap.add_argument("--bundle", help="bundle for part 2 (default: the embedded default, built on first use)")
    ap.add_argument("--loop-hz", type=float, default=10.0, help="control rate for part 2 (Hz)")
    ap.add_argument("--loop-ticks", type=int, default=100, help="ticks for part 2")
    ap.add_argument("--no-resize-graph", dest="resize_graph", action="store_false",
                    help="skip the run with the bundle's resize graph (vla-export resize-graph) in part 2")
    ap.add_argument("--image-size", type=int, default=480,
                    help="camera frame height for part 2 (px; width 16:9), e.g. 480 or 1080")
    args = ap.parse_args()

    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    period = 1.0 / args.hz
    rng = np.random.default_rng(0)
    work = args.work_ms * 1e-3 + rng.uniform(0, 2e-3, args.ticks)  # seconds per tick
    rows = {
        "scheduler (default: abs. sleep)": pacing_stats(*run_scheduler(period, args.ticks, work, 0.0), period),
        "scheduler + 1 ms yielding spin": pacing_stats(*run_scheduler(period, args.ticks, work, 0.001), period),
        "sleep(period - work) (common)": pacing_stats(*run_remainder(period, args.ticks, work), period),
    }
    fifo = run_scheduler(period, args.ticks, work, 0.0, rt=args.rt_priority) if args.rt_priority else None
    if fifo is not None:
        rows[f"scheduler (SCHED_FIFO {args.rt_priority})"] = pacing_stats(*fifo, period)
    print(f"\npart 1: pacing at {args.hz:g} Hz, {args.ticks} ticks, work {args.work_ms:g} ms + U(0, 2) ms per tick")
    print(f"{'loop':<32}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'drift ms':>11}{'skipped':>9}")
    for name, r in rows.items():
        print(f"{name:<32}{r['p50']:>9.3f}{r['p99']:>9.3f}{r['max']:>9.3f}{r['drift']:>11.3f}{r['skipped']:>9}")
    ours, common = rows["scheduler (default: abs. sleep)"], rows["sleep(period - work) (common)"]
    print(f"drift, common / ours: {abs(common['drift']) / max(abs(ours['drift']), 1e-3):.0f}x"
          f"  |  p99 period error, common / ours: {common['p99'] / max(ours['p99'], 1e-6):.1f}x")

    bundle = args.bundle
    if bundle is None:
        from vla_runtime.runtime.default_bundle import ensure_default_bundle

        bundle = str(ensure_default_bundle(announce=print))
    runs = [("OpenCV", bundle, 0, False), ("old exact", bundle, 0, True)]
    if args.resize_graph:
        runs.append(("resize graph", resize_graph_bundle(bundle), 0, False))
    if args.rt_priority and _was_realtime(args.rt_priority):
        runs += [(f"{name}, FIFO", b, args.rt_priority, False) for name, b, _, exact in runs if not exact]
    figures = {}
    for name, path, rt, exact in runs:
        prof, label = overhead(path, args.loop_hz, args.loop_ticks, args.image_size, rt, exact)
        figures[name] = print_overhead(prof, label, args.loop_hz, args.loop_ticks, args.image_size)
    print_comparison(figures, args.image_size)
    from vla_runtime.runtime.sim.world import SimWorld

    world = SimWorld()
    m = load_robot_description("sim")
    limits = SafetyLimits.from_sources(SafetyDefaults(), m.safety, m.joint_min, m.joint_max, m.joint_max_velocity)
    robot = NullRobot(world.kinematics, world.data.qpos[world.arm_qpos])
    cpu, safety_ms = machinery_cpu(robot, ActionSafety(limits, "ee_delta", 7, robot.kinematics, 6), args.loop_hz)
    print(f"\npart 3: loop machinery CPU time per tick (state read + scheduler/profiler + safety with IK,"
          f" replaying part 2's {len(REPLAY)} actions): {cpu * 1e3:.3f} ms = {cpu * args.loop_hz * 100:.2f}%"
          f" of a {1e3 / args.loop_hz:g} ms period (safety p50 {safety_ms:.3f} ms wall)")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")

if __name__ == "__main__":
    main()
