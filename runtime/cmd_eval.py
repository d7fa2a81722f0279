"""`vla-runtime eval`: closed-loop success of a bundle (or the scripted expert) on held-out sim seeds.

Each episode gets its own freshly seeded scene; the bundle's sessions are created once and the
policy is reset between episodes. Episodes run on the skipping clock (runtime.sim.episode), so
the figures are those of a paced run while the wall time is only the compute. The same batch
runner records demonstrations for `vla-runtime --policy scripted --episodes N --record DIR`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vla_runtime.common.errors import UserError
from vla_runtime.runtime.manifest import DEFAULT_CAMERA_VIEWS, SafetyDefaults
from vla_runtime.runtime.robot_description import RobotDescription, RobotDescriptionError

logger = logging.getLogger(__name__)

DEFAULT_EPISODES = 50
EPISODE_STEPS = 100  # ticks: 10 s at 10 Hz, enough for the expert to lift any block


def register(sub) -> None:
    from vla_runtime.runtime.assemble import add_robot_args
    from vla_runtime.runtime.sim.tasks import HELD_OUT_SEED_START

    p = sub.add_parser("eval", help="closed-loop success rate on held-out simulator seeds")
    p.add_argument("--bundle", metavar="DIR", help="bundle directory (default: the embedded demo bundle)")
    p.add_argument("--policy", choices=("bundle", "scripted"), default="bundle",
                   help="'scripted': the model-free expert, the ceiling a trained policy can reach")
    p.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, help=f"episodes (default {DEFAULT_EPISODES})")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED_START,
                   help=f"first sim seed; episode i uses seed+i (held-out: >= {HELD_OUT_SEED_START})")
    p.add_argument("--task", action="append", metavar="TEXT",
                   help="instruction; repeat to cycle several (default: red, green and blue in turn)")
    p.add_argument("--steps", type=int, default=EPISODE_STEPS, help=f"ticks per episode (default {EPISODE_STEPS})")
    add_robot_args(p)
    p.add_argument("--backend", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"),
                   help="device that runs the graphs (default cpu)")
    p.add_argument("--allow-failed-gate", action="store_true", help="evaluate a bundle whose INT8 gate failed")
    p.add_argument("--trusted-keys", metavar="DIR", help="trust store of signing keys (*.pub), as for `run`")
    p.add_argument("--json", metavar="OUT", help="write every episode and the summary as JSON")
    p.add_argument("--plot", metavar="PNG", help="draw success with its 95 %% interval and per colour (matplotlib)")
    p.add_argument("--compare", action="append", default=[], metavar="JSON",
                   help="earlier `eval --json` results drawn beside this run in --plot (repeatable)")
    p.set_defaults(func=cmd_eval, head=None)


@dataclass
class PolicySetup:
    """What the batch runner needs to know about the policy, however it was made."""

    make: Callable  # (world, block) -> Policy for one episode
    kind: str  # action space: ee_delta | joint_position
    dim: int
    horizon: int
    rate_hz: float
    replan_every: int
    defaults: SafetyDefaults
    label: str
    views: tuple[str, ...]  # camera views the policy reads (the first feeds it)
    action: object | None  # the bundle's ActionSpace, for the recording's channel names
    close: Callable[[], None]


def scripted_views(args, desc) -> tuple[str, ...]:
    """The camera views a scripted run records: --record-views, else the robot file's first camera."""
    if getattr(args, "record_views", None) is None:
        return (next(iter(desc.cameras)),)
    if args.policy != "scripted":
        raise UserError("--record-views is for --policy scripted; a bundle records the camera views it reads")
    views = tuple(v.strip() for v in args.record_views.split(","))
    if not all(views) or len(set(views)) != len(views):
        raise UserError(f"--record-views {args.record_views!r}: name each view once, e.g. --record-views front,wrist")
    return views


def scripted_setup(views: tuple[str, ...] = DEFAULT_CAMERA_VIEWS) -> PolicySetup:
    from vla_runtime.runtime.scripted import GraspScript, ScriptedGraspPolicy

    script = GraspScript()

    def make(world, block):
        return ScriptedGraspPolicy(lambda: world.body_position(block), script)

    return PolicySetup(make, "ee_delta", 7, script.horizon, 10.0, 2, SafetyDefaults(),
                       "scripted reach-and-grasp expert (reads the block position from the simulator)",
                       views, None, lambda: None)


def bundle_setup(args) -> PolicySetup:
    from vla_runtime.runtime.assemble import open_policy

    policy, _, label = open_policy(args)
    return loaded_setup(policy, label)


def loaded_setup(policy, label: str) -> PolicySetup:
    """A loaded bundle policy as a batch-runner setup; closing the setup closes the policy."""
    m = policy.manifest
    return PolicySetup(lambda world, block: policy, m.action.kind, m.action.dim, m.action.horizon,
                       m.control.rate_hz, m.control.replan_every, m.safety, label,
                       tuple(m.preprocess.camera_views), m.action, policy.close)


def run_batch(setup: PolicySetup, desc: RobotDescription, seeds: list[int], tasks: list[str], steps: int,
              record_args=None, on_episode: Callable | None = None) -> list:
    """One fresh scene per seed; returns the EpisodeOutcome list in seed order.

    `record_args` (the run command's arguments, with --record) records every episode.
    """
    from vla_runtime.runtime.assemble import build_robot, open_recorder
    from vla_runtime.runtime.loop import LoopConfig
    from vla_runtime.runtime.safety import ActionSafety, SafetyConfigError, SafetyLimits
    from vla_runtime.runtime.sim.episode import run_sim_episode
    from vla_runtime.runtime.sim.tasks import UnknownTaskError, task_block

    if setup.kind != desc.mapping:
        raise UserError(f"the policy emits {setup.kind} actions but {desc.source} maps actions as {desc.mapping}")
    try:
        blocks = [task_block(t) for t in tasks]
        specs = desc.cameras_for(setup.views)
        limits = SafetyLimits.from_sources(setup.defaults, desc.safety, desc.joint_min, desc.joint_max,
                                           desc.joint_max_velocity)
        loop = LoopConfig(steps, setup.replan_every, False, limits.max_consecutive_rejects,
                          min(spec.max_age for spec in specs))
    except (UnknownTaskError, RobotDescriptionError, SafetyConfigError, ValueError) as exc:
        raise UserError(str(exc)) from None
    outcomes = []
    for i, seed in enumerate(seeds):
        task, block = tasks[i % len(tasks)], blocks[i % len(tasks)]
        robot, cameras, world = build_robot(desc, seed, setup.views)
        try:
            if world is None:
                raise UserError(f"{desc.source}: episodes need the simulated robot (arm driver 'sim')")
            safety = ActionSafety(limits, setup.kind, setup.dim, robot.kinematics, len(robot.joint_names))
            policy = setup.make(world, block)
            recorder = None
            if record_args is not None:
                record_args.task = task
                recorder = open_recorder(record_args, desc, robot, policy, setup.rate_hz, setup.kind, setup.action,
                                         setup.views)
            outcome = None
            try:
                views = {s.name: cameras[s.name] for s in specs}
                outcome = run_sim_episode(policy, robot, views, world, safety, task, block, seed,
                                          setup.rate_hz, loop, recorder)
            finally:
                if recorder is not None:
                    recorder.close(outcome.stop_reason if outcome is not None else "error")
        finally:
            for part in (robot, *cameras.values()):
                part.close()
        outcomes.append(outcome)
        if on_episode is not None:
            on_episode(i, outcome)
    return outcomes


def episode_line(i: int, n: int, o) -> str:
    when = f" at {o.time_to_success_s:.1f} s" if o.success and o.time_to_success_s is not None else ""
    verdict = "lifted" if o.success else "FAILED" + (" (lifted, then dropped)" if o.time_to_success_s else "")
    return (f"[{i + 1}/{n}] seed {o.seed} {o.task!r}: {verdict}{when} ({o.block} +{o.lifted_m:.3f} m)"
            + ("" if o.stop_reason == "completed" else f" [{o.stop_reason}]"))


def sim_description(args) -> RobotDescription:
    from vla_runtime.runtime.assemble import load_robot

    desc = load_robot(args)
    if desc.arm.driver != "sim":
        raise UserError(f"{desc.source}: evaluation runs in the simulator; pass --robot sim")
    return desc


def cmd_eval(args) -> int:
    from vla_runtime.runtime.evaluation import format_summary, summarize
    from vla_runtime.runtime.sim.tasks import COLOURS, canonical_task, check_eval_seeds

    if args.episodes < 1 or args.steps < 1:
        raise UserError("--episodes and --steps must be at least 1")
    if args.policy == "scripted" and args.bundle:
        raise UserError("--policy scripted runs without a bundle; drop --bundle")
    try:
        check_eval_seeds(args.seed, args.episodes)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    tasks = args.task or [canonical_task(c) for c in COLOURS]
    earlier = [_load_eval_json(p) for p in args.compare]  # bad files are refused before any episode runs
    if args.compare and not args.plot:
        raise UserError("--compare only adds rows to --plot; pass --plot OUT.png")
    if args.plot:
        _require_matplotlib()
    desc = sim_description(args)
    setup = scripted_setup() if args.policy == "scripted" else bundle_setup(args)
    seeds = list(range(args.seed, args.seed + args.episodes))
    print(f"policy: {setup.label}", flush=True)
    start = time.perf_counter()
    try:
        outcomes = run_batch(setup, desc, seeds, tasks, args.steps,
                             on_episode=lambda i, o: print(episode_line(i, len(seeds), o), flush=True))
    finally:
        setup.close()
    wall = time.perf_counter() - start
    summary = summarize(outcomes)
    summary["wall_s"] = round(wall, 1)
    for line in format_summary(summary):
        print(line)
    print(f"episodes: {len(seeds)} on seeds {seeds[0]}..{seeds[-1]} in {wall:.0f} s wall time")
    if args.json:
        doc = {"policy": setup.label, "seeds": [seeds[0], seeds[-1]], "steps": args.steps,
               "summary": summary, "episodes": [o.to_json() for o in outcomes]}
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"json: {path}")
    if args.plot:
        from vla_runtime.runtime.eval_plot import plot_success

        rows = [*earlier, (_short_label(setup.label), summary)]
        title = f"closed-loop success, seeds {seeds[0]}..{seeds[-1]}"
        print(f"plot: {plot_success(rows, args.plot, title)}")
    return 0 if summary["successes"] else 1


def _short_label(label: str) -> str:
    return label.split(" (")[0][:40]


def _load_eval_json(path: str) -> tuple[str, dict]:
    """(label, summary) of an earlier `eval --json` file; one line when it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
        return _short_label(str(doc["policy"])), doc["summary"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--compare {path}: not an `eval --json` result ({exc})") from None


def _require_matplotlib() -> None:
    from vla_runtime.common.cli import missing_dependency

    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        if missing_dependency(exc) != "matplotlib":
            raise
        raise UserError("--plot needs matplotlib: pip install 'vla-runtime[viz]'") from None


def record_demonstrations(args, desc: RobotDescription) -> int:
    """`run --policy scripted --episodes N --record DIR`: many expert episodes, seeds first..first+N-1."""
    from vla_runtime.runtime.sim.tasks import check_demo_seeds, demo_task

    if desc.arm.driver != "sim":
        raise UserError(f"{desc.source}: --episodes runs the simulator; pass --robot sim")
    first = args.seed or 0
    try:
        check_demo_seeds(first, args.episodes)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    seeds = list(range(first, first + args.episodes))
    tasks = [args.task] if args.task else [demo_task(s) for s in seeds]
    if args.record:  # the recorder's packages, before anything runs
        from vla_runtime.runtime.assemble import require_record_deps

        require_record_deps()
    views = scripted_views(args, desc)
    setup = scripted_setup(views) if args.policy == "scripted" else bundle_setup(args)
    start = time.perf_counter()
    try:
        outcomes = run_batch(setup, desc, seeds, tasks, args.steps, record_args=args if args.record else None,
                             on_episode=lambda i, o: print(episode_line(i, len(seeds), o), flush=True))
    finally:
        setup.close()
    ok = sum(o.success for o in outcomes)
    print(f"episodes: {ok}/{len(outcomes)} lifted their block in {time.perf_counter() - start:.0f} s wall time"
          + (f"; recorded under {args.record}" if args.record else ""))
    if args.record and ok < len(outcomes):
        print("note: failed episodes are recorded too; drop them before training if they are not wanted",
              file=sys.stderr)
    return 0 if all(o.stop_reason == "completed" for o in outcomes) else 1
