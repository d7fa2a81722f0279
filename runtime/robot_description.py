"""The robot description: one TOML file naming the drivers, joints, cameras, action mapping and limits.

A description is data, so the same runtime drives the simulated tabletop and a real arm; the
CLI's main turns it into objects. Built-in descriptions are found by name (`sim`) in the
packaged `runtime/robots/` and `drivers/robots/` folders; anything else is a path.

Format::

    [robot]          name, kind
    [arm]            driver = "sim" | "dynamixel" | "feetech" | "ur-rtde" | ..., plus that driver's keys;
                     kinematics = "so101.urdf" (the arm's model, next to this file or packaged), ee_link
    [[arm.joints]]   name, id, offset (rad), direction (+1/-1), min, max (rad), max_velocity (rad/s)
    [gripper]        driver = "sim" | "robotiq" | "dynamixel" | ..., plus that driver's keys   (optional)
    [cameras.NAME]   kind = "sim" | "v4l2" | "video", max_age (s), plus that kind's keys; one table per view
    [action]         mapping = "ee_delta" (through IK) | "joint_position";
                     joint_map = "by-name" | "bundle_joint=robot_joint,..." (explicit reorder/rename)
    [safety]         overrides of the bundle's safety defaults (runtime.safety.SafetyLimits; the
                     Cartesian ones, box and steps, need a kinematic model), and
                     on_stop / hold_s / park / park_timeout_s / max_failed_ticks (runtime.robot.StopConfig)
    [sim]            seed, block_jitter (m)   (driver = "sim" only; runtime.sim.world.SimConfig)

The file is strict: every key is declared by a frozen dataclass field (with its type and
default), and any other key is refused with the nearest valid one suggested. Where a key is
declared, so where to add one (one field):

    [robot] RobotSection, [action] ActionSection, [[arm.joints]] JointSpec (this module)
    [arm] / [gripper] / [cameras.NAME]  the generic keys: ArmSpec / DeviceSpec / CameraSpec fields
        (this module); the driver's own keys: the ARM_OPTIONS / GRIPPER_OPTIONS / CAMERA_OPTIONS
        dataclass of the driver module (see runtime.driver_registry)
    [safety] runtime.safety.SafetyLimits, runtime.robot.StopConfig    [sim] runtime.sim.world.SimConfig
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vla_runtime.common.cli import missing_dependency
from vla_runtime.common.typed_table import Key, TableError, check_table, declared_keys, suggest
from vla_runtime.runtime.driver_registry import SIM, DriverLookupError, options_class
from vla_runtime.runtime.robot_overrides import OverrideError, apply_overrides

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

logger = logging.getLogger(__name__)

BUILTIN_FOLDERS = (("vla_runtime.runtime", "robots"), ("vla_runtime.drivers", "robots"))
MAPPINGS = ("ee_delta", "joint_position")
# [safety] keys that limit the end-effector pose: meaningless without forward kinematics
CARTESIAN_SAFETY_KEYS = ("max_translation_step", "max_rotation_step", "workspace_min", "workspace_max")
NOT_A_KEY = {"table": False}  # dataclass field metadata: filled by the parser, not written in the file


class RobotDescriptionError(ValueError):
    """A robot description is missing, malformed or inconsistent; the message says where and how to fix."""


@dataclass(frozen=True)
class RobotSection:
    name: str  # shown in reports and recorded episodes
    kind: str = "arm"  # free-form, e.g. "tabletop-arm"


@dataclass(frozen=True)
class ActionSection:
    mapping: str = "ee_delta"  # "ee_delta" (end-effector deltas through IK) or "joint_position"
    # which robot joint each bundle joint drives: "by-name" or "bundle_joint=robot_joint,..." (as --joint-map);
    # unset: the bundle's joint names, order and units must be the robot's
    joint_map: str | None = None


@dataclass(frozen=True)
class JointSpec:
    name: str  # joint name, also the order of every joint array
    min: float  # radians; lower position limit enforced by the safety layer
    max: float  # radians; upper position limit
    max_velocity: float  # rad/s; per-tick step limit = max_velocity * period
    id: int = 0  # servo id on the bus (ignored by the sim); when omitted, the joint's position in the list (from 1)
    offset: float = 0.0  # radians added by the driver between servo zero and joint zero
    direction: int = 1  # +1 or -1: servo rotation sense relative to the joint

    def __post_init__(self):
        if self.min >= self.max:
            raise RobotDescriptionError(f"[[arm.joints]] {self.name}: min {self.min} must be below max {self.max}")
        if self.max_velocity <= 0:
            raise RobotDescriptionError(f"[[arm.joints]] {self.name}: max_velocity must be > 0 rad/s")
        if self.direction not in (1, -1):
            raise RobotDescriptionError(f"[[arm.joints]] {self.name}: direction must be 1 or -1")


@dataclass(frozen=True)
class DeviceSpec:
    driver: str  # registry name: the sim, or a module under vla_runtime.drivers
    # the driver's own keys (port, baud, host, ...), type-checked against its options dataclass
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}), metadata=NOT_A_KEY)


@dataclass(frozen=True)
class ArmSpec(DeviceSpec):
    joints: tuple[JointSpec, ...] = field(default=(), metadata=NOT_A_KEY)  # in command order
    # the arm's kinematic model (URDF, or MJCF through MuJoCo): a path next to this file or a packaged
    # model; once loaded, the resolved path. Needed for ee_delta actions and Cartesian [safety] limits
    kinematics: str | None = None
    ee_link: str | None = None  # end-effector link (URDF) or site/body (MJCF) in that model


@dataclass(frozen=True)
class CameraSpec:
    name: str = field(metadata=NOT_A_KEY)  # the view name: NAME of [cameras.NAME], matched to the bundle's views
    kind: str  # "sim" or a module under vla_runtime.drivers.cameras ("v4l2", "video")
    # seconds; a frame older than this is not inferred on: the arm finishes its chunk, then holds
    max_age: float = 0.5
    # the kind's own keys (device, width, path, ...), type-checked against its options dataclass
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}), metadata=NOT_A_KEY)

    def __post_init__(self):
        if self.max_age <= 0:
            raise RobotDescriptionError(f"[cameras.{self.name}] max_age must be > 0 seconds")


@dataclass(frozen=True)
class RobotDescription:
    name: str  # shown in reports and recorded episodes
    kind: str  # free-form, e.g. "tabletop-arm"
    arm: ArmSpec
    gripper: DeviceSpec | None
    cameras: MappingProxyType  # view name -> CameraSpec, in file order
    mapping: str  # "ee_delta" or "joint_position"
    safety: MappingProxyType  # overrides of the bundle's SafetyDefaults, type-checked
    sim: MappingProxyType  # simulator settings (seed, block_jitter), type-checked
    source: str  # where it was loaded from, for messages
    joint_map: tuple[tuple[str, str], ...] | None = None  # bundle joint -> robot joint; () = by name; None = as is

    def __post_init__(self):
        if self.mapping not in MAPPINGS:
            raise RobotDescriptionError(f"{self.source}: [action] mapping {self.mapping!r} is not one of {MAPPINGS}")
        if not self.arm.joints:
            raise RobotDescriptionError(f"{self.source}: [arm] needs at least one [[arm.joints]] entry")
        names = [j.name for j in self.arm.joints]
        if len(set(names)) != len(names):
            raise RobotDescriptionError(f"{self.source}: [[arm.joints]] names must be unique, got {names}")
        if not self.cameras:
            raise RobotDescriptionError(f"{self.source}: needs at least one [cameras.NAME] table, e.g. [cameras.front]")
        cartesian = [k for k in CARTESIAN_SAFETY_KEYS if k in self.safety]
        if cartesian and not self.has_kinematics:
            raise RobotDescriptionError(
                f"{self.source}: [safety] {cartesian[0]} limits the end-effector pose, which needs the arm's "
                "kinematic model; add [arm] kinematics = \"<model>.urdf\" and ee_link, or remove the key"
            )

    @property
    def has_kinematics(self) -> bool:
        """End-effector poses can be computed: a model file, or the simulated arm (which carries its own)."""
        return self.arm.kinematics is not None or self.arm.driver == SIM

    @property
    def joint_min(self) -> tuple[float, ...]:
        return tuple(j.min for j in self.arm.joints)

    @property
    def joint_max(self) -> tuple[float, ...]:
        return tuple(j.max for j in self.arm.joints)

    @property
    def joint_max_velocity(self) -> tuple[float, ...]:
        return tuple(j.max_velocity for j in self.arm.joints)

    def cameras_for(self, views: Sequence[str]) -> tuple[CameraSpec, ...]:
        """The cameras feeding `views` (the bundle's), in that order; a missing view is refused in one line."""
        missing = [v for v in views if v not in self.cameras]
        if missing:
            have = ", ".join(f"[cameras.{n}]" for n in self.cameras)
            raise RobotDescriptionError(
                f"{self.source}: the bundle needs camera view {missing[0]!r}{suggest(missing[0], self.cameras)}"
                f" but the robot file has {have}; name a camera table [cameras.{missing[0]}]"
            )
        return tuple(self.cameras[v] for v in views)


def builtin_names() -> list[str]:
    names = []
    for package, folder in BUILTIN_FOLDERS:
        try:
            root = resources.files(package).joinpath(folder)
            names += [p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml")]
        except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
            continue
    return sorted(set(names))


def load_robot_description(name_or_path: str, overrides: Sequence[str] = ()) -> RobotDescription:
    """A built-in name (`sim`) or a path to a TOML file, with `--set key.path=value` overrides applied."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise RobotDescriptionError(f"{path}: robot description not found; check the path")
        return parse_robot_description(path.read_text(), str(path), overrides, path.resolve().parent)
    for package, folder in BUILTIN_FOLDERS:
        try:
            res = resources.files(package).joinpath(folder, f"{name_or_path}.toml")
            if res.is_file():
                return parse_robot_description(
                    res.read_text(), f"built-in robot {name_or_path!r}", overrides, Path(str(res)).parent
                )
        except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
            continue
    raise RobotDescriptionError(
        f"unknown robot {name_or_path!r}: use a built-in name ({', '.join(builtin_names())}) or a path to a .toml file"
    )


def parse_robot_description(
    text: str, source: str = "<robot description>", overrides: Sequence[str] = (), base_dir: Path | None = None
) -> RobotDescription:
    """Parse, apply `--set` overrides, then check every table strictly; errors are one line naming `source`.

    `base_dir` is where a relative kinematic model name is looked up first.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RobotDescriptionError(f"{source}: not valid TOML ({exc}); fix the syntax") from None
    try:
        original = doc
        if overrides:
            doc = apply_overrides(doc, overrides)
            source = f"{source} (with --set)"
        return _build(doc, source, original, base_dir)
    except (RobotDescriptionError, TableError, OverrideError, DriverLookupError) as exc:
        msg = str(exc)
        raise RobotDescriptionError(msg if msg.startswith(source) else f"{source}: {msg}") from None




# -- building: every table checked against the dataclasses that declare its keys ----------------------
SECTIONS = ("robot", "arm", "gripper", "cameras", "action", "safety", "sim")


def _build(doc: dict, source: str, original: dict, base_dir: Path | None = None) -> RobotDescription:
    unknown = [k for k in doc if k not in SECTIONS]
    if unknown:
        hint = suggest(unknown[0], SECTIONS)
        if unknown[0] == "camera":
            hint = "; write one [cameras.NAME] table per camera, e.g. [cameras.front]"
        raise RobotDescriptionError(f"unknown section [{unknown[0]}]{hint} (sections: {', '.join(SECTIONS)})")
    robot = check_table(_table(doc, "robot"), declared_keys(RobotSection), "[robot]")
    robot = RobotSection(**robot)
    arm = _arm(_table(doc, "arm"), original.get("arm"), base_dir)
    gripper = None
    if "gripper" in doc:
        gripper = _device(DeviceSpec, "gripper", _table(doc, "gripper"), original.get("gripper"), "[gripper]")
    cameras_doc = _table(doc, "cameras", required=False) or {}
    cameras = {}
    for name, table in cameras_doc.items():
        where = f"[cameras.{name}]"
        if not isinstance(table, dict):
            raise RobotDescriptionError(f"{where} must be a table of camera keys, e.g. kind = \"v4l2\"")
        old = (original.get("cameras") or {}).get(name)
        cameras[name] = _device(CameraSpec, "camera", table, old, where, name=name)
    action_doc = _table(doc, "action", required=False) or {}
    action = ActionSection(**check_table(action_doc, declared_keys(ActionSection), "[action]"))
    safety = _plain_section(doc, "safety")
    sim = {}
    if "sim" in doc:
        if arm.driver != SIM:
            raise RobotDescriptionError(f"[sim] only applies to [arm] driver = 'sim', not {arm.driver!r}; remove it")
        sim = _plain_section(doc, "sim")
    return RobotDescription(
        name=robot.name,
        kind=robot.kind,
        arm=arm,
        gripper=gripper,
        cameras=MappingProxyType(cameras),
        mapping=action.mapping,
        safety=MappingProxyType(safety),
        sim=MappingProxyType(sim),
        source=source,
        joint_map=_joint_map(action.joint_map),
    )


def _table(doc: dict, key: str, required: bool = True) -> dict | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise RobotDescriptionError(f"missing [{key}] section")
        return None
    if not isinstance(value, dict):
        raise RobotDescriptionError(f"[{key}] must be a table")
    return value


def _arm(table: dict, original: dict | None, base_dir: Path | None = None) -> ArmSpec:
    table = dict(table)
    joints_doc = table.pop("joints", [])
    if not isinstance(joints_doc, list) or not all(isinstance(j, dict) for j in joints_doc):
        raise RobotDescriptionError("[arm] joints must be written as [[arm.joints]] tables")
    joint_keys = declared_keys(JointSpec)
    joints = []
    for i, j in enumerate(joints_doc):
        label = f" ({j['name']})" if isinstance(j.get("name"), str) else ""
        values = check_table(j, joint_keys, f"[[arm.joints]] #{i + 1}{label}")
        joints.append(JointSpec(**{"id": i + 1, **values}))
    spec = _device(ArmSpec, "arm", table, original, "[arm]")
    return ArmSpec(**{**_fields_of(spec), "joints": tuple(joints), "kinematics": _kinematic_model(spec, base_dir)})


def _joint_map(text: str | None) -> tuple[tuple[str, str], ...] | None:
    from vla_runtime.runtime.joint_contract import ContractError, parse_joint_map

    try:
        return parse_joint_map(text, "[action] joint_map")
    except ContractError as exc:
        raise RobotDescriptionError(str(exc)) from None


def _kinematic_model(spec: ArmSpec, base_dir: Path | None) -> str | None:
    from vla_runtime.runtime.kinematics_files import KinematicModelError, resolve_arm_model

    try:
        return resolve_arm_model(spec.kinematics, spec.ee_link, base_dir)
    except KinematicModelError as exc:
        raise RobotDescriptionError(str(exc)) from None


def _device(cls: type, role: str, table: dict, original: dict | None, where: str, **filled: Any):
    """A DeviceSpec/ArmSpec/CameraSpec: its own keys from `cls`, the rest declared by the driver it names."""
    selector = "kind" if role == "camera" else "driver"
    generic = declared_keys(cls)
    driver = table.get(selector)
    if not isinstance(driver, str):
        check_table({selector: driver} if selector in table else {}, {selector: generic[selector]}, where)
    own = _driver_keys(role, driver)
    table = _drop_switched(role, selector, table, original, own, where)
    keys = {**own, **generic}
    values = check_table(table, keys, where)
    options = {k: v for k, v in values.items() if k not in generic}
    return cls(**{k: v for k, v in values.items() if k in generic}, options=MappingProxyType(options), **filled)


def _driver_keys(role: str, driver: str) -> dict[str, Key]:
    cls = options_class(role, driver)
    return declared_keys(cls) if cls is not None else {}


def _drop_switched(role: str, selector: str, table: dict, original: dict | None, own: dict, where: str) -> dict:
    """After `--set X.driver=other`, drop the file's keys that belong only to the driver it replaced.

    Only keys the old driver declares, the new one does not, and --set did not touch are dropped,
    so a typo is still refused; this is what lets one file's v4l2 camera become a video camera.
    """
    if not isinstance(original, dict) or original.get(selector) in (None, table.get(selector)):
        return table
    try:
        old = _driver_keys(role, original[selector])
    except (DriverLookupError, TypeError, AttributeError):
        return table
    dropped = [k for k in table if k in old and k not in own and original.get(k) == table[k]]
    if dropped:
        logger.info("%s: %s replaced by --set; dropped its keys %s", where, selector, dropped)
    return {k: v for k, v in table.items() if k not in dropped}


def _plain_section(doc: dict, key: str) -> dict:
    """[safety] / [sim]: checked against the dataclass that consumes the section; every key optional."""
    table = _table(doc, key, required=False) or {}
    return check_table(table, declared_keys(*_section_classes(key)), f"[{key}]", partial=True)


def _section_classes(key: str) -> tuple[type, ...]:
    if key == "safety":  # the limits, and how an episode ends (on_stop, park, failed-tick budget)
        from vla_runtime.runtime.robot import StopConfig
        from vla_runtime.runtime.safety import SafetyLimits

        return SafetyLimits, StopConfig
    try:
        from vla_runtime.runtime.sim.world import SimConfig
    except ImportError as exc:
        if missing_dependency(exc) is None:
            raise
        raise RobotDescriptionError(f"[sim] needs MuJoCo ({exc}); pip install 'vla-runtime[sim]'") from None
    return (SimConfig,)


def _fields_of(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
