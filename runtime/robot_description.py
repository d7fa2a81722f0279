"""The robot description: one TOML file naming the drivers, joints, camera, action mapping and limits.

A description is data, so the same runtime drives the simulated tabletop and a real arm; the
CLI's main turns it into objects. Built-in descriptions are found by name (`sim`) in the
packaged `runtime/robots/` and `drivers/robots/` folders; anything else is a path.

Format::

    [robot]   name, kind
    [arm]     driver = "sim" | "dynamixel" | "feetech" | "ur-rtde" | ..., plus driver keys (port, baud, host)
    [[arm.joints]]  name, id, offset (rad), direction (+1/-1), min, max (rad), max_velocity (rad/s)
    [gripper] driver = "sim" | "robotiq" | "dynamixel" | ..., plus driver keys   (optional)
    [camera]  kind = "sim" | "v4l2" | ..., width, height (px), plus camera keys
    [action]  mapping = "ee_delta" (through IK) | "joint_position"
    [safety]  overrides of the bundle's safety defaults (see runtime.safety.SafetyLimits)
    [sim]     seed, block_jitter (m)   (simulated robots only)
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

logger = logging.getLogger(__name__)

BUILTIN_FOLDERS = (("vla_runtime.runtime", "robots"), ("vla_runtime.drivers", "robots"))
MAPPINGS = ("ee_delta", "joint_position")


class RobotDescriptionError(ValueError):
    """A robot description is missing, malformed or inconsistent; the message says where and how to fix."""


@dataclass(frozen=True)
class JointSpec:
    name: str  # joint name, also the order of every joint array
    id: int  # servo id on the bus (ignored by the sim)
    min: float  # radians; lower position limit enforced by the safety layer
    max: float  # radians; upper position limit
    max_velocity: float  # rad/s; per-tick step limit = max_velocity * period
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
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # driver keys: port, baud, host


@dataclass(frozen=True)
class ArmSpec(DeviceSpec):
    joints: tuple[JointSpec, ...] = ()  # in command order


@dataclass(frozen=True)
class CameraSpec:
    kind: str  # "sim" or a camera driver name
    width: int = 224  # pixels
    height: int = 224  # pixels
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # name, device, ...

    def __post_init__(self):
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise RobotDescriptionError(f"[camera] size {self.width}x{self.height} is out of 16..4096 pixels")


@dataclass(frozen=True)
class RobotDescription:
    name: str  # shown in reports and recorded episodes
    kind: str  # free-form, e.g. "tabletop-arm"
    arm: ArmSpec
    gripper: DeviceSpec | None
    camera: CameraSpec
    mapping: str  # "ee_delta" or "joint_position"
    safety: MappingProxyType  # overrides of the bundle's SafetyDefaults
    sim: MappingProxyType  # simulator settings (seed, block_jitter)
    source: str  # where it was loaded from, for messages

    def __post_init__(self):
        if self.mapping not in MAPPINGS:
            raise RobotDescriptionError(f"{self.source}: [action] mapping {self.mapping!r} is not one of {MAPPINGS}")
        if not self.arm.joints:
            raise RobotDescriptionError(f"{self.source}: [arm] needs at least one [[arm.joints]] entry")
        names = [j.name for j in self.arm.joints]
        if len(set(names)) != len(names):
            raise RobotDescriptionError(f"{self.source}: [[arm.joints]] names must be unique, got {names}")

    @property
    def joint_min(self) -> tuple[float, ...]:
        return tuple(j.min for j in self.arm.joints)

    @property
    def joint_max(self) -> tuple[float, ...]:
        return tuple(j.max for j in self.arm.joints)

    @property
    def joint_max_velocity(self) -> tuple[float, ...]:
        return tuple(j.max_velocity for j in self.arm.joints)


def builtin_names() -> list[str]:
    names = []
    for package, folder in BUILTIN_FOLDERS:
        try:
            root = resources.files(package).joinpath(folder)
            names += [p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml")]
        except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
            continue
    return sorted(set(names))


def load_robot_description(name_or_path: str) -> RobotDescription:
    """A built-in name (`sim`) or a path to a TOML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise RobotDescriptionError(f"{path}: robot description not found; check the path")
        return parse_robot_description(path.read_text(), str(path))
    for package, folder in BUILTIN_FOLDERS:
        try:
            res = resources.files(package).joinpath(folder, f"{name_or_path}.toml")
            if res.is_file():
                return parse_robot_description(res.read_text(), f"built-in robot {name_or_path!r}")
        except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
            continue
    raise RobotDescriptionError(
        f"unknown robot {name_or_path!r}: use a built-in name ({', '.join(builtin_names())}) or a path to a .toml file"
    )


def parse_robot_description(text: str, source: str = "<robot description>") -> RobotDescription:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RobotDescriptionError(f"{source}: not valid TOML ({exc}); fix the syntax") from None
    try:
        return _build(doc, source)
    except RobotDescriptionError as exc:
        msg = str(exc)
        raise RobotDescriptionError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def _table(doc: dict, key: str, source: str, required: bool = True) -> dict | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise RobotDescriptionError(f"{source}: missing [{key}] section")
        return None
    if not isinstance(value, dict):
        raise RobotDescriptionError(f"{source}: [{key}] must be a table")
    return value


def _get(table: dict, key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise RobotDescriptionError(f"{where}: missing key {key!r}")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RobotDescriptionError(f"{where}: {key} must be a {kind.__name__}, got {value!r}")
    return value


def _build(doc: dict, source: str) -> RobotDescription:
    known = {"robot", "arm", "gripper", "camera", "action", "safety", "sim"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise RobotDescriptionError(f"unknown section(s) {unknown}; expected {sorted(known)}")
    robot = _table(doc, "robot", source)
    arm = dict(_table(doc, "arm", source))
    joints_doc = arm.pop("joints", [])
    if not isinstance(joints_doc, list):
        raise RobotDescriptionError("[arm] joints must be written as [[arm.joints]] tables")
    joints = []
    for i, j in enumerate(joints_doc):
        where = f"[[arm.joints]] #{i + 1}"
        joints.append(
            JointSpec(
                name=_get(j, "name", str, where),
                id=_get(j, "id", int, where, i + 1),
                min=_get(j, "min", float, where),
                max=_get(j, "max", float, where),
                max_velocity=_get(j, "max_velocity", float, where),
                offset=_get(j, "offset", float, where, 0.0),
                direction=_get(j, "direction", int, where, 1),
            )
        )
    arm_driver = _get(arm, "driver", str, "[arm]")
    arm_spec = ArmSpec(arm_driver, MappingProxyType({k: v for k, v in arm.items() if k != "driver"}), tuple(joints))
    gripper_doc = _table(doc, "gripper", source, required=False)
    gripper = None
    if gripper_doc is not None:
        opts = {k: v for k, v in gripper_doc.items() if k != "driver"}
        gripper = DeviceSpec(_get(gripper_doc, "driver", str, "[gripper]"), MappingProxyType(opts))
    cam = _table(doc, "camera", source)
    camera = CameraSpec(
        kind=_get(cam, "kind", str, "[camera]"),
        width=_get(cam, "width", int, "[camera]", 224),
        height=_get(cam, "height", int, "[camera]", 224),
        options=MappingProxyType({k: v for k, v in cam.items() if k not in ("kind", "width", "height")}),
    )
    action = _table(doc, "action", source, required=False) or {}
    return RobotDescription(
        name=_get(robot, "name", str, "[robot]"),
        kind=_get(robot, "kind", str, "[robot]", "arm"),
        arm=arm_spec,
        gripper=gripper,
        camera=camera,
        mapping=_get(action, "mapping", str, "[action]", "ee_delta"),
        safety=MappingProxyType(dict(_table(doc, "safety", source, required=False) or {})),
        sim=MappingProxyType(dict(_table(doc, "sim", source, required=False) or {})),
        source=source,
    )
