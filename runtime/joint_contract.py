"""The bundle <-> robot contract: the policy's action and state layout must be the robot's.

A bundle names every action dimension and its unit (`action.names`, `action.units`) and the
state it reads (`state.names`, `state.units`). A joint-position bundle trained on another arm,
or on the same arm with its joints listed in another order or in degrees, would otherwise drive
the wrong joints, so the runtime compares the layouts before any driver opens and refuses the
first difference in one line. Reordering or renaming is allowed, but only when asked for: a
joint map (`--joint-map` or the robot file's `[action] joint_map`) says which robot joint each
bundle joint drives, and `ReorderedPolicy` then permutes every chunk into the robot's order.
End-effector bundles must use the Cartesian layout below and need the arm's kinematics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from vla_runtime.runtime.types import ActionChunk, Frame, Policy, RobotState

logger = logging.getLogger(__name__)

# The end-effector action layout: base-frame deltas per tick, then the gripper opening.
EE_DELTA_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
EE_DELTA_UNITS = ("m", "m", "m", "rad", "rad", "rad", "open")
GRIPPER = ("gripper", "open")  # the optional last dimension of a joint-position action


class ContractError(ValueError):
    """The bundle's layout does not match the robot; the message names the first difference and the fix."""


@dataclass(frozen=True)
class RobotLayout:
    """What the robot file says the arm takes: joint names in command order, with units."""

    joints: tuple[str, ...]  # [[arm.joints]] names, in order
    units: tuple[str, ...]  # "rad" (revolute) or "m" (prismatic) per joint
    kinematics: bool = True  # end-effector poses can be computed (a model file, or the sim)

    @classmethod
    def of(cls, joints: tuple[str, ...], kinds: tuple[str, ...] | None = None, kinematics: bool = True) -> RobotLayout:
        """Units from the kinematic model's joint kinds; revolute (rad) when there is no model."""
        kinds = kinds or ("revolute",) * len(joints)
        return cls(tuple(joints), tuple("m" if k == "prismatic" else "rad" for k in kinds), kinematics)


@dataclass(frozen=True)
class JointMap:
    """Bundle joint order -> robot joint order, for joint-position actions (and the state)."""

    columns: tuple[int, ...]  # robot joint j is bundle action column columns[j]
    names: tuple[str, ...]  # the action names in robot order (the gripper stays last)

    def to_robot(self, actions: np.ndarray) -> np.ndarray:
        """[H, D] in bundle order -> [H, D] in robot order."""
        return actions[:, list(self.columns) + list(range(len(self.columns), actions.shape[1]))]


def parse_joint_map(text: str | None, where: str) -> tuple[tuple[str, str], ...] | None:
    """'by-name' or 'bundle_joint=robot_joint,...' (the robot file and --joint-map alike) -> pairs."""
    if text is None:
        return None
    if text.strip() == "by-name":
        return ()
    pairs = []
    for item in text.split(","):
        bundle, sep, robot = item.partition("=")
        if not sep or not bundle.strip() or not robot.strip():
            raise ContractError(
                f"{where}: {item.strip()!r} is not BUNDLE_JOINT=ROBOT_JOINT; write e.g. 'elbow=elbow_flex', or by-name"
            )
        pairs.append((bundle.strip(), robot.strip()))
    if len({b for b, _ in pairs}) != len(pairs):
        raise ContractError(f"{where}: a bundle joint is mapped twice")
    return tuple(pairs)


def _first_difference(what: str, bundle: list[tuple[str, str]], robot: list[tuple[str, str]], fix: str) -> str:
    for i, (b, r) in enumerate(zip(bundle, robot, strict=False)):
        if b != r:
            return f"bundle {what} {i + 1} is {b[0]!r} in {b[1]} but the robot's is {r[0]!r} in {r[1]}; {fix}"
    return (f"the bundle has {len(bundle)} {what}s ({[n for n, _ in bundle]}) but the robot has "
            f"{len(robot)} ({[n for n, _ in robot]}); {fix}")


def check_contract(
    kind: str,
    action_names: tuple[str, ...],
    action_units: tuple[str, ...],
    state_names: tuple[str, ...],
    state_units: tuple[str, ...],
    robot: RobotLayout,
    joint_map: tuple[tuple[str, str], ...] | None = None,
) -> JointMap | None:
    """Refuse a mismatch (ContractError); return the permutation to apply, or None when there is none."""
    fix = "rename or reorder with --joint-map BUNDLE_JOINT=ROBOT_JOINT,... (or [action] joint_map)"
    if kind == "ee_delta":
        if not robot.kinematics:
            raise ContractError("an ee_delta bundle moves the end effector, which needs the arm's kinematic model; "
                                "add [arm] kinematics = \"<model>.urdf\" and ee_link, or use a joint-position bundle")
        if joint_map is not None:
            raise ContractError("a joint map reorders joint-position bundles; this bundle emits end-effector deltas")
        bundle = list(zip(action_names, action_units, strict=True))
        wanted = list(zip(EE_DELTA_NAMES, EE_DELTA_UNITS, strict=True))
        if bundle != wanted:
            raise ContractError(_first_difference("action", bundle, wanted, "an ee_delta robot takes "
                                                  f"{list(EE_DELTA_NAMES)} in {list(EE_DELTA_UNITS)}"))
        columns = None
    else:
        columns = _joint_columns(list(zip(action_names, action_units, strict=True)), robot, joint_map, "action", fix)
    if state_names:  # the graphs read the robot state: its layout is checked (and mapped) the same way
        state_columns = _joint_columns(list(zip(state_names, state_units, strict=True)), robot, joint_map, "state", fix)
        if kind != "ee_delta" and state_columns != columns:
            raise ContractError("the bundle lists its state joints in another order than its action joints")
        if columns is None:
            columns = state_columns
    if columns is None or columns == tuple(range(len(robot.joints))):
        return None
    names = tuple(robot.joints) + (("gripper",) if len(action_names) > len(robot.joints) else ())
    return JointMap(columns, names if kind != "ee_delta" else tuple(action_names))


def _joint_columns(
    bundle: list[tuple[str, str]],
    robot: RobotLayout,
    joint_map: tuple[tuple[str, str], ...] | None,
    what: str,
    fix: str,
) -> tuple[int, ...]:
    """For each robot joint, the bundle column that drives it; refuses the first difference."""
    if bundle and bundle[-1] == GRIPPER:  # the gripper opening rides along last
        bundle = bundle[:-1]
    robot_pairs = list(zip(robot.joints, robot.units, strict=True))
    if joint_map is None:
        if bundle != robot_pairs:
            raise ContractError(_first_difference(f"{what} joint", bundle, robot_pairs, fix))
        return tuple(range(len(bundle)))
    renames = dict(joint_map)
    unknown = sorted(set(renames) - {n for n, _ in bundle})
    if unknown:
        raise ContractError(f"joint map names bundle joint {unknown[0]!r}, which the bundle does not have: "
                            f"it has {[n for n, _ in bundle]}")
    mapped = [(renames.get(n, n), u) for n, u in bundle]
    position = {n: i for i, (n, _) in enumerate(mapped)}
    if len(position) != len(mapped):
        raise ContractError(f"joint map sends two bundle joints to the same robot joint: {[n for n, _ in mapped]}")
    columns = []
    for name, unit in robot_pairs:
        if name not in position:
            raise ContractError(f"robot joint {name!r} is driven by no bundle {what} joint after the joint map "
                                f"({[n for n, _ in mapped]}); {fix}")
        i = position[name]
        if mapped[i][1] != unit:
            raise ContractError(f"bundle {what} joint {bundle[i][0]!r} is in {mapped[i][1]} but robot joint "
                                f"{name!r} is in {unit}; the bundle must use the robot's units")
        columns.append(i)
    extra = [bundle[i][0] for i in range(len(mapped)) if i not in columns]
    if extra:
        raise ContractError(f"bundle {what} joint {extra[0]!r} drives no robot joint; {fix}")
    return tuple(columns)


class ReorderedPolicy(Policy):
    """A policy whose chunks come out in the robot's joint order (and that reads the state in its own)."""

    def __init__(self, inner: Policy, joint_map: JointMap):
        self.inner = inner
        self.joint_map = joint_map
        self._to_bundle = np.argsort(joint_map.columns)  # robot-order joints -> bundle order

    def infer(self, frame: Frame, task: str, state: RobotState | None = None) -> ActionChunk:
        if state is not None:
            q = np.asarray(state.joint_positions)[self._to_bundle]
            state = RobotState(q, state.ee_position, state.ee_orientation, state.gripper, state.t_read)
        chunk = self.inner.infer(frame, task, state)
        return ActionChunk(self.joint_map.to_robot(chunk.actions), self.joint_map.names, chunk.t_obs)

    def reset(self) -> None:
        reset = getattr(self.inner, "reset", None)
        if reset is not None:
            reset()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def contract_policy(policy: Policy, manifest, layout: RobotLayout, joint_map) -> Policy:
    """`policy` as the robot needs it: refused (ContractError) on a mismatch, reordered when mapped."""
    action, state = manifest.action, manifest.state
    mapping = check_contract(action.kind, action.names, action.units, state.names, state.units, layout, joint_map)
    if mapping is None:
        return policy
    logger.info("joint map: bundle columns %s drive robot joints %s", mapping.columns, layout.joints)
    return ReorderedPolicy(policy, mapping)
