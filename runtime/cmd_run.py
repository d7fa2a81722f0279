"""`vla-runtime run` (the default command): one bounded episode of a policy on a robot.

The robot, cameras, policy and recorder are built by `runtime.assemble` (shared with `eval`);
the safety layer and scheduler are added here and everything is handed to the loop.
"""

from __future__ import annotations

import argparse
import logging
import sys

from vla_runtime.common.errors import UserError
from vla_runtime.runtime.assemble import (
    add_remote_args,
    add_robot_args,
    build_robot,
    load_robot,
    open_policy,
    open_recorder,
    require_record_deps,
)
from vla_runtime.runtime.manifest import BUILT_IN_HEADS, SafetyDefaults
from vla_runtime.runtime.robot_description import RobotDescription, RobotDescriptionError

logger = logging.getLogger(__name__)

DEFAULT_TASK = "pick up the red block"
DEFAULT_STEPS = 100  # ticks: 10 s at the default 10 Hz


def register(sub) -> None:
    p = sub.add_parser("run", help="run a policy bundle on a robot (default: the embedded demo on the sim)")
    p.add_argument("--task", help=f"instruction for the policy (default: {DEFAULT_TASK!r}; with --episodes,"
                   " the sim's instructions in turn)")
    p.add_argument("--bundle", metavar="DIR", help="bundle directory (default: the embedded tiny bundle, built once)")
    p.add_argument("--head", choices=BUILT_IN_HEADS, default=None,
                   help="head of the embedded default bundle (parallel)")
    p.add_argument("--policy", choices=("bundle", "scripted"), default="bundle",
                   help="'scripted': a model-free reach-and-grasp reference policy (sim only)")
    add_robot_args(p)
    p.add_argument("--joint-map", metavar="MAP",
                   help="which robot joint each bundle joint drives: BUNDLE=ROBOT,... or by-name "
                        "(default: the robot file's [action] joint_map, else names and order must match)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"ticks to run (default {DEFAULT_STEPS})")
    add_timing_args(p)
    p.add_argument("--replan-every", type=int, metavar="K", help="ticks between inferences (default: bundle's)")
    p.add_argument("--async", dest="asynchronous", action="store_true",
                   help="infer in a worker thread while the loop keeps commanding the current chunk")
    p.add_argument("--max-misses", type=int, default=3, metavar="N",
                   help="consecutive deadline misses, or inferences a remote server did not answer in time,"
                        " before a safe stop (default 3)")
    p.add_argument("--rt-priority", type=int, default=0, metavar="P",
                   help="run the loop thread SCHED_FIFO at priority P (1..99; needs CAP_SYS_NICE); 0 = off")
    p.add_argument("--mlockall", action="store_true",
                   help="lock the process's memory into RAM (no page faults in a tick; needs a memlock limit)")
    p.add_argument("--cpus", metavar="LIST", help="pin the process to these cores, e.g. 2,3 or 2-3")
    p.add_argument("--record", metavar="DIR",
                   help="stream the episode to DIR/episode_NNNNNN.mcap (open it in Foxglove or Rerun; "
                        "`vla-runtime replay` runs it through a bundle)")
    p.add_argument("--record-raw", action="store_true",
                   help="record lossless rgb8 frames instead of JPEG (for INT8 calibration; ~15x larger)")
    p.add_argument("--record-views", metavar="LIST",
                   help="--policy scripted: camera views to record, e.g. front,wrist (default: the robot file's "
                        "first camera); a bundle records the views it reads")
    p.add_argument("--seed", type=int, help="simulator seed (block placement)")
    p.add_argument("--episodes", type=int, metavar="N",
                   help="run N sim episodes on seeds seed..seed+N-1 without pacing (demonstrations with --record)")
    p.set_defaults(func=cmd_run)


def add_timing_args(p: argparse.ArgumentParser) -> None:
    """Flags shared with `profile`."""
    p.add_argument("--hz", type=float, help="control rate in Hz (default: the bundle's control.rate_hz)")
    p.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda", "tensorrt", "remote"),
                   help="device that runs the graphs (default auto); remote: an inference server (--server)")
    add_remote_args(p)
    p.add_argument("--precision", default="fp16", choices=("fp16", "fp32"),
                   help="float precision the onnxruntime TensorRT provider may use for an fp32 bundle: fp16 "
                   "(default, faster) or fp32 (FP16 off: a model that overflows in fp16); native engines keep "
                   "the precision they were built with (vla-export engine --precision)")
    p.add_argument("--allow-failed-gate", action="store_true", help="run a bundle whose INT8 accuracy gate failed")
    p.add_argument("--trusted-keys", metavar="DIR", help="trust store of signing keys (*.pub); default "
                   "$VLA_RUNTIME_TRUSTED_KEYS or /etc/vla-runtime/trusted-keys when it exists")
    p.add_argument("--profile", metavar="OUT.json", help="save the per-stage statistics as JSON")
    p.add_argument("--trace", metavar="OUT.json", help="save every span as a Chrome/Perfetto trace")


def cmd_run(args) -> int:
    if args.steps < 1:
        raise UserError(f"--steps {args.steps}: must be at least 1 tick")
    if args.hz is not None and not (0 < args.hz <= 1000):
        raise UserError(f"--hz {args.hz}: must be in (0, 1000]")
    if args.max_misses < 1:
        raise UserError("--max-misses must be at least 1")
    if args.policy == "scripted" and (args.bundle or args.head):
        raise UserError("--policy scripted runs without a bundle; drop --bundle / --head")
    _apply_realtime(args)  # refused in one line before any file is read or port opened
    desc = load_robot(args)
    if args.episodes is not None:
        from vla_runtime.runtime.cmd_eval import record_demonstrations

        if args.episodes < 1:
            raise UserError(f"--episodes {args.episodes}: must be at least 1")
        return record_demonstrations(args, desc)
    args.task = args.task or DEFAULT_TASK
    return run_episode(args, desc)



def target_block(task: str) -> str:
    """The sim block a task names (red when it names none); used by the scripted policy and the summary."""
    from vla_runtime.runtime.sim.tasks import UnknownTaskError, task_block

    try:
        return task_block(task)
    except UnknownTaskError:
        return "red_block"


def _check_mapping(kind: str, desc: RobotDescription) -> None:
    if kind != desc.mapping:
        raise UserError(
            f"the policy emits {kind} actions but {desc.source} maps actions as {desc.mapping}; "
            "set [action] mapping to match or use another bundle"
        )


def _apply_realtime(args) -> None:
    from vla_runtime.runtime.realtime import RealtimeConfig, RealtimeError, apply, parse_cpus

    try:
        cpus = parse_cpus(args.cpus) if args.cpus else ()
        apply(RealtimeConfig(priority=args.rt_priority, lock_memory=args.mlockall, cpus=cpus))
    except RealtimeError as exc:
        raise UserError(str(exc)) from None


def _arm_kinematics(desc: RobotDescription):
    from vla_runtime.runtime.kinematics_files import KinematicModelError, arm_kinematics

    try:
        return arm_kinematics(desc)
    except KinematicModelError as exc:
        raise UserError(str(exc)) from None


def _check_contract(policy, manifest, desc: RobotDescription, kinematics, cli_map: str | None):
    """The bundle's joint names, order and units against the robot's; nothing has opened yet."""
    from vla_runtime.runtime.joint_contract import ContractError, RobotLayout, contract_policy, parse_joint_map
    from vla_runtime.runtime.state_input import unmet_state

    problem = unmet_state(manifest.state, desc.gripper is not None)
    if problem:
        policy.close()
        raise UserError(f"{desc.source}: {problem}; nothing was opened on the robot")
    joints = tuple(j.name for j in desc.arm.joints)
    kinds = kinematics.chain.kinds if kinematics is not None else None
    layout = RobotLayout.of(joints, kinds, desc.has_kinematics)
    try:
        joint_map = parse_joint_map(cli_map, "--joint-map") if cli_map is not None else desc.joint_map
        return contract_policy(policy, manifest, layout, joint_map)
    except ContractError as exc:
        policy.close()
        raise UserError(f"{desc.source}: {exc}; nothing was opened on the robot") from None


def run_episode(args, desc: RobotDescription) -> int:
    from vla_runtime.runtime.loop import ControlLoop, EpisodeResult, LoopConfig
    from vla_runtime.runtime.profiler import Profiler
    from vla_runtime.runtime.robot import STOP_KEYS, StopConfig
    from vla_runtime.runtime.safety import ActionSafety, SafetyConfigError, SafetyLimits
    from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig
    from vla_runtime.runtime.sim.tasks import LIFT_SUCCESS_M
    from vla_runtime.runtime.trace import write_trace

    if args.record:  # the recorder's packages, before any driver opens a port
        require_record_deps()
    policy = None
    kinematics = _arm_kinematics(desc)  # the model file is read before any driver opens a port
    if args.policy == "bundle":  # verify the bundle before anything can move
        policy, manifest, label = open_policy(args)
        action, control, defaults = manifest.action, manifest.control, manifest.safety
        kind, dim, horizon = action.kind, action.dim, action.horizon
        rate, replan = control.rate_hz, control.replan_every
        _check_mapping(kind, desc)  # before any driver opens a port
        views = manifest.preprocess.camera_views
    else:
        from vla_runtime.runtime.cmd_eval import scripted_views

        views = scripted_views(args, desc)  # the scripted policy reads no pixels; the recorder does
    try:
        specs = desc.cameras_for(views)  # a missing view is refused before any driver opens
    except RobotDescriptionError as exc:
        if policy is not None:
            policy.close()
        raise UserError(str(exc)) from None
    if policy is not None:  # joints, order and units, and the state it reads; still before any driver opens
        policy = _check_contract(policy, manifest, desc, kinematics, getattr(args, "joint_map", None))
    robot, cameras, world = build_robot(desc, args.seed, views, kinematics)
    camera = {spec.name: cameras[spec.name] for spec in specs}  # the bundle's views, in its order
    try:
        if args.policy == "scripted":
            from vla_runtime.runtime.scripted import GraspScript, ScriptedGraspPolicy

            if world is None:
                raise UserError("--policy scripted needs the simulated robot (--robot sim)")
            block = target_block(args.task)
            policy = ScriptedGraspPolicy(lambda: world.body_position(block), GraspScript())
            kind, dim, horizon, rate, replan = "ee_delta", 7, policy.script.horizon, 10.0, 2
            defaults = SafetyDefaults()
            label = "scripted reach-and-grasp reference (reads the block position from the simulator)"
        rate = args.hz or rate
        worst_io = getattr(robot, "worst_io_s", 0.0)
        if worst_io > 1.0 / rate:
            print(
                f"warning: {desc.source}: one driver's timeouts and retries can take {worst_io * 1e3:.0f} ms, "
                f"more than one {1e3 / rate:.0f} ms tick; lower timeout_ms / retries or --hz",
                file=sys.stderr,
            )
        replan = args.replan_every or replan
        if not (1 <= replan <= horizon):
            raise UserError(f"--replan-every {replan}: must be between 1 and the chunk length {horizon}")
        _check_mapping(kind, desc)
        try:
            stop = StopConfig.from_safety(desc.safety)
            stop.check_pose(desc.joint_min, desc.joint_max)
            overrides = {k: v for k, v in desc.safety.items() if k not in STOP_KEYS}
            limits = SafetyLimits.from_sources(
                defaults, overrides, desc.joint_min, desc.joint_max, desc.joint_max_velocity
            )
            safety = ActionSafety(limits, kind, dim, robot.kinematics, len(robot.joint_names))
            timing = SchedulerConfig(rate, max_consecutive_misses=args.max_misses, realtime_priority=args.rt_priority)
            sched = Scheduler(timing, Profiler(1.0 / rate))
        except (SafetyConfigError, ValueError, TypeError) as exc:
            raise UserError(f"{desc.source}: {exc}") from None
        max_age = min(spec.max_age for spec in specs)  # the oldest frame is judged by the strictest view
        config = LoopConfig(args.steps, replan, args.asynchronous, limits.max_consecutive_rejects, max_age, stop=stop,
                            max_missed_inferences=args.max_misses)
        action = manifest.action if args.policy == "bundle" else None
        recorder = open_recorder(args, desc, robot, policy, rate, kind, action, views) if args.record else None
        loop = ControlLoop(config, policy, robot, camera, safety, sched, recorder)
        start = world.body_position(target_block(args.task)) if world is not None else None
        result = EpisodeResult(stop_reason="error: the loop did not return")
        try:
            result = loop.run(args.task)
        finally:
            recorded = recorder.close(result.stop_reason) if recorder is not None else None
    finally:
        for part in (robot, *cameras.values(), policy):
            close = getattr(part, "close", None)
            if close is not None:
                close()
    mode = "async" if args.asynchronous else "sync"
    print(f"policy: {label}")
    print(f"robot: {desc.name} ({desc.mapping}) | {rate:g} Hz, replan every {replan} of {horizon}, {mode}")
    if robot.kinematics is not None:
        print(f"limits: {limits.cartesian_summary()}")
    print(sched.profiler.table())
    print(result.safety.summary())
    print(
        f"episode: {result.stop_reason} after {result.ticks} ticks | {result.inferences} inferences"
        f" (warm-up {result.warmup_s * 1e3:.0f} ms) | starved ticks {result.starved_ticks}"
        f" | stale chunk steps dropped {result.stale_steps_dropped}"
        + (f" | stale camera frames {result.stale_frames}" if result.stale_frames else "")
        + (f" | failed bus ticks {result.failed_ticks}" if result.failed_ticks else "")
        + (f" | missed inferences {result.missed_inferences}" if result.missed_inferences else "")
    )
    outcome = None  # the simulator's verdict on the task: the run's last line, after the stop report
    if start is not None:
        end = world.body_position(target_block(args.task))
        moved = float(((end - start)[:2] ** 2).sum() ** 0.5)
        lifted = round(float(end[2] - start[2]), 3) + 0.0  # + 0.0 turns -0.0 into 0.0
        verdict = "picked up" if lifted >= LIFT_SUCCESS_M else "not picked up"
        outcome = f"sim: {target_block(args.task)} moved {moved:.3f} m sideways, lifted {lifted:.3f} m: {verdict}"
    extra = {"episode": {"stop_reason": result.stop_reason, "ticks": result.ticks,
                         "inferences": result.inferences, "starved_ticks": result.starved_ticks,
                         "failed_ticks": result.failed_ticks, "signal": result.signal,
                         "missed_inferences": result.missed_inferences,
                         "on_stop": stop.on_stop, "stopped": result.stopped},
             "safety": result.safety.to_json(), "policy": label, "robot": desc.name}
    if args.profile:
        print(f"profile: {sched.profiler.save_json(args.profile, extra)}")
    if args.trace:
        print(f"trace: {write_trace(sched.profiler, args.trace, extra)}")
    if recorder is not None:
        print(recorded.line())
    rc = report_stop(result, stop.on_stop)
    if outcome is not None:
        print(outcome, flush=True)
    return rc


def report_stop(result, on_stop: str) -> int:
    """One line says what the devices reported after the stop (the last, but for a simulator run's
    verdict on the task); the exit code says why it ended."""
    import signal

    stopped = f"on_stop = {on_stop}; {result.stopped or 'could not confirm: no read-back'}"
    if result.stop_reason == "completed":
        print(f"stopped: {stopped}")
        return 0
    if result.stop_reason == "interrupted":
        name = result.signal or "SIGINT"
        print(f"interrupted ({name}): {stopped}", file=sys.stderr)
        return 128 + int(signal.Signals[name])  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, as a shell reports
    print(f"error: episode stopped ({result.stop_reason}); {stopped}", file=sys.stderr)
    return 1
