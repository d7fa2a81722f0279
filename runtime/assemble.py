"""Where a robot description and a bundle become objects, for every command that runs a robot.

`run`, `eval` and `profile` build their robot, cameras, policy and recorder here and hand them
to the loop (no class constructs its own bus, camera or backend). Every mistake a user can make
in these inputs ends as one UserError line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vla_runtime.common.cli import import_optional
from vla_runtime.common.errors import UserError
from vla_runtime.runtime.robot_description import RobotDescription, RobotDescriptionError, load_robot_description

logger = logging.getLogger(__name__)


def add_robot_args(p: argparse.ArgumentParser) -> None:
    """--robot and --set, for every command that loads a robot description."""
    p.add_argument("--robot", default="sim", help="built-in robot name or path to a robot TOML (default: sim)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a robot-file key, e.g. --set arm.port=/dev/ttyUSB1 "
                        "--set cameras.front.device=/dev/video2 (repeatable; values are TOML literals or text)")


def load_robot(args) -> RobotDescription:
    """The description --robot names, with the --set overrides applied; one-line errors."""
    try:
        return load_robot_description(args.robot, args.overrides)
    except RobotDescriptionError as exc:
        raise UserError(str(exc)) from None


def add_remote_args(p: argparse.ArgumentParser) -> None:
    """Flags of `--backend remote` (a Triton / KServe v2 server; see vla-export triton)."""
    p.add_argument("--server", metavar="URL", help="with --backend remote: grpc://HOST:8001, grpcs://, http://HOST:8000"
                   " or https://")
    p.add_argument("--remote-model", default="policy", metavar="NAME", help="served policy model (default policy)")
    p.add_argument("--remote-timeout-ms", type=float, metavar="MS",
                   help="deadline of each request (default: 80%% of the tick, or of the replan interval with --async)")
    p.add_argument("--remote-frame", choices=("pixels", "uint8"), default="pixels",
                   help="send the preprocessed frame (default) or the raw uint8 RGB frame")
    p.add_argument("--ca-file", metavar="PEM", help="CA certificate(s) that signed the server's TLS certificate")
    p.add_argument("--auth-file", metavar="FILE", help="file with one 'Header-Name: value' line sent with every "
                   "request (default: $VLA_RUNTIME_REMOTE_AUTH); keeps tokens off the command line")


def open_policy(args):
    """(policy, manifest, label) for --bundle / the embedded default; one-line errors."""
    from vla_runtime.runtime.backends import BackendError
    from vla_runtime.runtime.bundle import BundleError
    from vla_runtime.runtime.default_bundle import DEFAULT_HEAD, DefaultBundleError, ensure_default_bundle
    from vla_runtime.runtime.policy import load_policy

    remote = getattr(args, "backend", None) == "remote"
    if not remote and getattr(args, "server", None):
        raise UserError("--server is for --backend remote; add it or drop --server")

    if args.bundle:
        bundle_dir = Path(args.bundle)
        if args.head:
            raise UserError("--head only picks the embedded default bundle; drop it when passing --bundle")
    else:
        try:
            bundle_dir = ensure_default_bundle(args.head or DEFAULT_HEAD, announce=lambda m: print(m, file=sys.stderr))
        except DefaultBundleError as exc:
            raise UserError(str(exc)) from None
    try:
        if remote:
            policy = _open_remote(args, bundle_dir)
        else:
            policy = load_policy(bundle_dir, backend=args.backend, allow_failed_gate=args.allow_failed_gate,
                                 trusted_keys=getattr(args, "trusted_keys", None),
                                 gpu_fp16=getattr(args, "precision", "fp16") != "fp32")
    except (BundleError, BackendError, ValueError) as exc:
        raise UserError(str(exc)) from None
    m = policy.manifest
    label = f"{m.model.get('name', bundle_dir.name)} ({m.head} head, {policy.backend_name})"
    if not args.bundle and str(m.model.get("source", "")).startswith("checkpoint"):
        label += " - the embedded demo policy, trained on scripted sim demonstrations"
    elif not args.bundle:
        label += " - the embedded random-weight demo bundle: the arm moves meaninglessly, but within the limits"
    return policy, m, label


def _open_remote(args, bundle_dir: Path):
    """A RemotePolicy for --backend remote: the bundle verified here, the request deadline inside the tick."""
    from vla_runtime.runtime.backends.remote import RemoteConfig, open_remote_policy
    from vla_runtime.runtime.backends.remote_link import RemoteError
    from vla_runtime.runtime.policy import verified_bundle

    if not args.server:
        raise UserError("--backend remote needs --server grpc://HOST:8001 (or http://HOST:8000)")
    bundle = verified_bundle(bundle_dir, args.allow_failed_gate, True, getattr(args, "trusted_keys", None))
    control = bundle.manifest.control
    period = 1.0 / (args.hz or control.rate_hz)
    ticks = (getattr(args, "replan_every", None) or control.replan_every) if getattr(args, "asynchronous", False) else 1
    timeout_s = args.remote_timeout_ms / 1e3 if args.remote_timeout_ms is not None else 0.8 * period * ticks
    config = RemoteConfig(args.server, timeout_s, args.remote_model, args.remote_frame, args.ca_file, args.auth_file)
    try:
        return open_remote_policy(bundle, config)
    except RemoteError as exc:
        raise UserError(f"{exc}; nothing was opened on the robot") from None


def build_robot(desc: RobotDescription, seed: int | None = None, views: tuple[str, ...] | None = None,
                kinematics=None):
    """(robot, cameras {view: Camera}, world) from a description; world is the simulator or None.

    Only the cameras named in `views` are opened (default: all); the others stay closed.
    `kinematics` is a real arm's model (`kinematics_files.arm_kinematics`); the sim has its own.
    """
    specs = desc.cameras_for(views) if views is not None else tuple(desc.cameras.values())
    world = robot = None
    if desc.arm.driver == "sim":
        if desc.gripper and desc.gripper.driver != "sim":
            raise UserError(f"{desc.source}: a sim arm needs [gripper] driver = 'sim'")
        import_optional("vla_runtime.runtime.sim.world", extra="sim")  # MuJoCo: one line if it is absent
        from vla_runtime.runtime.sim.robot import SimRobot
        from vla_runtime.runtime.sim.world import SimConfig, SimWorld
        options = dict(desc.sim)
        if seed is not None:
            options["seed"] = seed
        try:
            world = SimWorld(SimConfig(**options))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{desc.source}: bad [sim] settings ({exc})") from None
        robot = SimRobot(world, desc.name)
    cameras = {}
    try:
        for spec in specs:
            cameras[spec.name] = _make_camera(spec, world, desc.source)
        if robot is None:
            from vla_runtime.runtime.robot import DriverRobot

            arm = _make_device("arm", desc.arm.driver, desc.arm, desc.source)
            gripper = _make_device("gripper", desc.gripper.driver, desc.gripper, desc.source) if desc.gripper else None
            robot = DriverRobot(desc.name, arm, gripper, kinematics)
    except BaseException:
        for camera in cameras.values():
            camera.close()
        raise
    return robot, cameras, world


def _make_camera(spec, world, source: str):
    if spec.kind != "sim":
        return _make_device("camera", spec.kind, spec, source)
    where = f"{source}: [cameras.{spec.name}]"
    if world is None:
        raise UserError(f"{where} kind = 'sim' renders the simulator; it needs [arm] driver = 'sim'")
    from vla_runtime.runtime.sim.robot import SimCamera, SimCameraOptions

    try:
        o = SimCameraOptions(**spec.options)
        return SimCamera(world, o.width, o.height, o.camera)
    except ValueError as exc:
        raise UserError(f"{where} {exc}") from None


def _make_device(role: str, driver: str, spec, source: str):
    """Driver registry by naming convention (runtime.driver_registry): the module's make_<role>(spec)."""
    from vla_runtime.runtime.driver_registry import DriverLookupError, driver_module

    try:
        factory = getattr(driver_module(role, driver), f"make_{role}")
    except DriverLookupError as exc:
        raise UserError(f"{source}: {exc}") from None
    try:
        return factory(spec)
    except (ValueError, OSError) as exc:
        raise UserError(f"{source}: {role} driver {driver!r}: {exc}") from None


def open_recorder(args, desc: RobotDescription, robot, policy, rate: float, kind: str, action, views=("front",)):
    """The flight recorder for --record, opened (file, channels, attachments) before tick 0."""
    from vla_runtime.runtime.recorder import FlightRecorder, RecorderConfig
    from vla_runtime.runtime.recording_format import RunInfo

    attachments = {}
    bundle = getattr(policy, "bundle", None)
    bundle_id = bundle_name = "scripted"
    if bundle is not None:
        attachments["manifest.json"] = ("application/json", bundle.path("manifest.json").read_bytes())
        bundle_id, bundle_name = f"seal:{bundle.seal}", str(bundle.root)  # the seal names the exact files
    attached = robot_file(args.robot)
    if attached is not None:
        attachments[f"robot/{attached[0]}"] = ("application/toml", attached[1])
    if getattr(args, "overrides", None):  # the file as run = the file above plus these --set lines
        attachments["robot/overrides.txt"] = ("text/plain", "\n".join(args.overrides).encode() + b"\n")
    dim = len(action.names) if action is not None else 7
    run = RunInfo(
        task=args.task, rate_hz=rate, bundle=bundle_name, bundle_id=bundle_id, robot=desc.name,
        robot_file=str(args.robot), cameras=tuple(views),
        joint_names=tuple(robot.joint_names), action_kind=kind,
        action_names=tuple(action.names) if action is not None else tuple(f"a{i}" for i in range(dim)),
        action_units=tuple(action.units) if action is not None else (),
    )
    try:
        recorder = FlightRecorder(args.record, run, RecorderConfig(raw_images=args.record_raw), attachments)
        recorder.open()
    except (ValueError, OSError) as exc:
        raise UserError(f"--record {args.record}: {exc}") from None
    return recorder


def require_record_deps() -> None:
    from vla_runtime.runtime.recording_format import RecordDepsMissing, require_record_deps

    try:
        require_record_deps()
    except RecordDepsMissing as exc:
        raise UserError(str(exc)) from None


def robot_file(name_or_path: str) -> tuple[str, bytes] | None:
    """(file name, bytes) of the robot description, for the recording's attachments."""
    from importlib import resources

    from vla_runtime.runtime.robot_description import BUILTIN_FOLDERS

    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.name, path.read_bytes()
    for package, folder in BUILTIN_FOLDERS:
        res = resources.files(package).joinpath(folder, f"{name_or_path}.toml")
        if res.is_file():
            return f"{name_or_path}.toml", res.read_bytes()
    return None
