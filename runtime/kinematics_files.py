"""The arm's kinematic model file -> `SerialChain`: URDF with the standard library, MJCF through MuJoCo.

A robot file names its arm's model (`[arm] kinematics = "so101.urdf"`, `ee_link = "gripper_tip"`).
The onboard runtime reads URDF itself (joint origins, axes and limits of the chain from the
root link to the end-effector link; meshes, inertias and everything else are ignored), so a
robot needs no physics engine; an MJCF file is read through MuJoCo when it is installed.
Relative names resolve next to the robot file first, then among the packaged robot models.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import numpy as np
from vla_runtime.runtime.kinematics import (
    ChainBuilder,
    ChainKinematics,
    KinematicModelError,
    SerialChain,
    check_joint_names,
)
from vla_runtime.runtime.robot import rpy_to_matrix

logger = logging.getLogger(__name__)

MODEL_FOLDERS = (("vla_runtime.drivers", "robots"), ("vla_runtime.runtime", "robots"))
_MOVABLE = {"revolute": "revolute", "continuous": "revolute", "prismatic": "prismatic"}


def resolve_model(name: str, robot_dir: Path | None) -> Path:
    """An absolute path, a path next to the robot file, or a packaged model, in that order."""
    path = Path(name).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [robot_dir / path] if robot_dir is not None else []
        for package, folder in MODEL_FOLDERS:
            try:
                candidates.append(Path(str(resources.files(package).joinpath(folder, name))))
            except ModuleNotFoundError:
                continue
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = f" next to the robot file ({robot_dir})" if robot_dir is not None else ""
    raise KinematicModelError(f"kinematic model {name!r} not found{where} or among the packaged models; check the name")


def resolve_arm_model(name: str | None, ee_link: str | None, base_dir: Path | None) -> str | None:
    """[arm] kinematics resolved to a file path (None when absent); it and ee_link go together."""
    if name is None:
        if ee_link is not None:
            raise KinematicModelError("[arm] ee_link needs [arm] kinematics (the model file it is a link of)")
        return None
    if ee_link is None:
        raise KinematicModelError(f"[arm] kinematics = {name!r} needs ee_link (its end-effector link)")
    try:
        return str(resolve_model(name, base_dir))
    except KinematicModelError as exc:
        raise KinematicModelError(f"[arm] {exc}") from None


def load_chain(path: Path, joint_names: tuple[str, ...], ee: str) -> SerialChain:
    """The chain to `ee` whose movable joints must be `joint_names`, in that order."""
    if path.suffix.lower() == ".urdf":
        return chain_from_urdf(path.read_text(), joint_names, ee, str(path))
    try:
        from vla_runtime.runtime.kinematics_mjcf import chain_from_mjcf_file
    except ImportError:
        raise KinematicModelError(
            f"{path}: reading MJCF needs MuJoCo (pip install mujoco), or name a URDF model instead"
        ) from None
    try:
        return chain_from_mjcf_file(str(path), joint_names, ee)
    except ValueError as exc:
        raise KinematicModelError(f"{path}: {exc}") from None


def _floats(text: str | None, n: int, default: tuple[float, ...], where: str) -> np.ndarray:
    if text is None:
        return np.array(default, dtype=np.float64)
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        raise KinematicModelError(f"{where}: {text!r} is not {n} numbers") from None
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise KinematicModelError(f"{where}: {text!r} is not {n} finite numbers")
    return np.array(values, dtype=np.float64)


def chain_from_urdf(text: str, joint_names: tuple[str, ...], ee_link: str, source: str = "<urdf>") -> SerialChain:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise KinematicModelError(f"{source}: not valid XML ({exc})") from None
    if root.tag != "robot":
        raise KinematicModelError(f"{source}: the root element is <{root.tag}>, a URDF file has <robot>")
    by_child = {}
    for joint in root.findall("joint"):
        child = joint.find("child")
        if child is None or joint.find("parent") is None:
            raise KinematicModelError(f"{source}: joint {joint.get('name')!r} needs <parent> and <child>")
        by_child[child.get("link")] = joint
    links = {link.get("name") for link in root.findall("link")}
    if ee_link not in links:
        raise KinematicModelError(f"{source}: no link named {ee_link!r} for the end effector; links: {sorted(links)}")
    path = []
    link = ee_link
    while link in by_child:
        joint = by_child[link]
        path.append(joint)
        link = joint.find("parent").get("link")
        if len(path) > len(by_child):
            raise KinematicModelError(f"{source}: the joints form a loop around link {link!r}")
    path.reverse()

    builder = ChainBuilder()
    for joint in path:
        name, jtype = joint.get("name"), joint.get("type")
        where = f"{source}: joint {name!r}"
        origin = joint.find("origin")
        xyz = _floats(None if origin is None else origin.get("xyz"), 3, (0.0, 0.0, 0.0), f"{where} origin xyz")
        rpy = _floats(None if origin is None else origin.get("rpy"), 3, (0.0, 0.0, 0.0), f"{where} origin rpy")
        builder.fixed(rpy_to_matrix(rpy), xyz)
        if jtype == "fixed":
            continue
        if jtype not in _MOVABLE:
            raise KinematicModelError(f"{where}: type {jtype!r} is not supported in an arm chain")
        if joint.find("mimic") is not None:
            raise KinematicModelError(f"{where}: a mimic joint cannot be part of the arm chain")
        axis_el = joint.find("axis")
        axis = _floats(None if axis_el is None else axis_el.get("xyz"), 3, (1.0, 0.0, 0.0), f"{where} axis")
        if np.linalg.norm(axis) < 1e-9:
            raise KinematicModelError(f"{where}: the axis is zero")
        lo, hi = -np.inf, np.inf
        if jtype != "continuous":
            limit = joint.find("limit")
            if limit is None or limit.get("lower") is None or limit.get("upper") is None:
                raise KinematicModelError(f"{where}: a {jtype} joint needs <limit lower=... upper=...>")
            lo, hi = _floats(f"{limit.get('lower')} {limit.get('upper')}", 2, (), f"{where} limit")
            if lo >= hi:
                raise KinematicModelError(f"{where}: limit lower {lo} must be below upper {hi}")
        builder.joint(name, _MOVABLE[jtype], axis, lo, hi)
    check_joint_names(builder.names, tuple(joint_names), source, ee_link)
    return builder.chain(ee_link)


def arm_kinematics(desc) -> ChainKinematics | None:
    """A robot description's kinematics ([arm] kinematics + ee_link), limits narrowed to its joints'.

    None when the file names no model (the simulated arm brings its own). Read before any
    driver opens, so a wrong model is refused with the robot untouched.
    """
    if desc.arm.kinematics is None:
        return None
    names = tuple(j.name for j in desc.arm.joints)
    chain = load_chain(Path(desc.arm.kinematics), names, desc.arm.ee_link)
    try:
        return ChainKinematics(chain.with_limits(desc.joint_min, desc.joint_max))
    except ValueError as exc:
        raise KinematicModelError(f"{desc.source}: {exc}") from None
