"""Kinematics of a serial arm in plain numpy: forward pose, geometric Jacobian, damped least-squares IK.

The onboard runtime must not need a physics engine to move an arm through end-effector
actions, so the arm is reduced to the one thing kinematics needs: a chain of fixed transforms
and joint axes from the base to the end effector. That chain comes from the arm's model file
(`kinematics_files`: URDF parsed with the standard library, or MJCF through MuJoCo) and from
the simulated tabletop's MuJoCo model (`kinematics_mjcf`), so the sim and a real arm run the
same solver.

Inverse kinematics is damped least squares on the geometric Jacobian, warm-started from the
measured joints, with the joint limits clipped at every step (a joint pinned at a limit drops
out of the next step, so the others take over): robust near singularities and a few
iterations per tick because the policy asks for centimetre steps. Position outweighs
orientation (an arm with five joints cannot honour every rotation). A target the arm cannot
reach (out of reach, or behind a joint limit) raises `Unreachable`, which the safety layer
turns into a hold rather than a guess.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from vla_runtime.runtime.robot import Kinematics, matrix_to_rpy, rpy_to_matrix

logger = logging.getLogger(__name__)

JOINT_KINDS = ("revolute", "prismatic")
_LEVI_CIVITA = np.zeros((3, 3, 3))  # eps[a, b, c]: (u x v)_a = eps[a, b, c] u_b v_c
_LEVI_CIVITA[0, 1, 2] = _LEVI_CIVITA[1, 2, 0] = _LEVI_CIVITA[2, 0, 1] = 1.0
_LEVI_CIVITA[0, 2, 1] = _LEVI_CIVITA[2, 1, 0] = _LEVI_CIVITA[1, 0, 2] = -1.0


class KinematicModelError(ValueError):
    """The model file is missing, malformed, or does not describe the robot file's arm."""


class Unreachable(ValueError):
    """No joint configuration within the limits brings the end effector to the target position."""


@dataclass(frozen=True)
class SerialChain:
    """base -> origin[0] -> joint 0 -> origin[1] -> joint 1 ... -> joint J-1 -> tool (end effector).

    Each origin is the fixed transform from the previous joint's frame (the base for joint 0) to
    this joint's frame at zero; the joint then turns (revolute) or slides (prismatic) along its
    axis, expressed in its own frame. This is URDF's joint model; MuJoCo bodies reduce to it.
    """

    joint_names: tuple[str, ...]  # movable joints, base to tip: the order of every joint array
    kinds: tuple[str, ...]  # "revolute" (rad) or "prismatic" (m), per joint
    origin_rotations: np.ndarray  # float64 [J, 3, 3], previous joint frame -> this joint frame at zero
    origin_positions: np.ndarray  # float64 [J, 3] metres, same transform's translation
    axes: np.ndarray  # float64 [J, 3] unit axis of each joint in its own frame
    lower: np.ndarray  # float64 [J] rad or m, the model's position limits (-inf when unlimited)
    upper: np.ndarray  # float64 [J] rad or m
    tool_rotation: np.ndarray  # float64 [3, 3], last joint frame -> end-effector frame
    tool_position: np.ndarray  # float64 [3] metres
    ee_name: str = "tool"  # link / site name of the end effector, for messages

    def __post_init__(self):
        j = len(self.joint_names)
        if j == 0:
            raise ValueError("a kinematic chain needs at least one movable joint")
        shapes = {
            "origin_rotations": (j, 3, 3), "origin_positions": (j, 3), "axes": (j, 3),
            "lower": (j,), "upper": (j,), "tool_rotation": (3, 3), "tool_position": (3,),
        }
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"kinematic chain: {name} has shape {np.shape(getattr(self, name))}, want {shape}")
        if len(self.kinds) != j or any(k not in JOINT_KINDS for k in self.kinds):
            raise ValueError(f"kinematic chain: kinds must be one of {JOINT_KINDS} per joint")
        if np.any(np.abs(np.linalg.norm(self.axes, axis=1) - 1.0) > 1e-9):
            raise ValueError("kinematic chain: every joint axis must be a unit vector")
        if np.any(self.lower >= self.upper):
            raise ValueError("kinematic chain: every joint's lower limit must be below its upper limit")

    def with_limits(self, lower, upper) -> SerialChain:
        """The same chain with its limits narrowed to [lower, upper] (the robot file's working limits)."""
        lo = np.maximum(self.lower, np.asarray(lower, dtype=np.float64))
        hi = np.minimum(self.upper, np.asarray(upper, dtype=np.float64))
        if np.any(lo >= hi):
            bad = self.joint_names[int(np.argmax(lo >= hi))]
            raise ValueError(f"joint {bad}: the robot file's limits do not overlap the model's")
        return SerialChain(self.joint_names, self.kinds, self.origin_rotations, self.origin_positions,
                           self.axes, lo, hi, self.tool_rotation, self.tool_position, self.ee_name)


def check_joint_names(model: tuple[str, ...], robot: tuple[str, ...], source: str, ee_link: str) -> None:
    """The model's movable joints, base to end effector, must be the robot file's joints in its order."""
    if model == robot:
        return
    for i, (m, r) in enumerate(zip(model, robot, strict=False)):
        if m != r:
            raise KinematicModelError(
                f"{source}: joint {i + 1} from the base to {ee_link!r} is {m!r} but the robot file's is {r!r}; "
                "name and order [[arm.joints]] as in the model"
            )
    raise KinematicModelError(
        f"{source}: {len(model)} movable joints lead to {ee_link!r} ({list(model)}) but the robot file has "
        f"{len(robot)} ({list(robot)})"
    )


class ChainBuilder:
    """Walks a model from the base to the end effector and collects its `SerialChain`.

    Fixed transforms (`fixed`) accumulate until the next movable joint (`joint`) takes them as
    its origin; whatever is pending at the end is the tool transform. The URDF and MuJoCo
    readers differ only in where they find the transforms.
    """

    def __init__(self):
        self._rotation, self._position = np.eye(3), np.zeros(3)  # pending fixed transform
        self._joints: list[tuple] = []

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j[0] for j in self._joints)

    def fixed(self, rotation: np.ndarray, position: np.ndarray) -> None:
        """Append a fixed transform (rotation [3, 3], translation [3] m, in the current frame)."""
        self._position = self._position + self._rotation @ np.asarray(position, dtype=np.float64)
        self._rotation = self._rotation @ np.asarray(rotation, dtype=np.float64)

    def joint(self, name: str, kind: str, axis, lower: float, upper: float) -> None:
        """A movable joint at the current frame, turning/sliding along `axis` (its own frame)."""
        axis = np.asarray(axis, dtype=np.float64)
        self._joints.append((name, kind, self._rotation, self._position, axis / np.linalg.norm(axis), lower, upper))
        self._rotation, self._position = np.eye(3), np.zeros(3)

    def chain(self, ee_name: str) -> SerialChain:
        if not self._joints:
            raise ValueError(f"no movable joint between the base and {ee_name!r}")
        names, kinds, rotations, positions, axes, lower, upper = zip(*self._joints, strict=True)
        return SerialChain(
            joint_names=names,
            kinds=kinds,
            origin_rotations=np.array(rotations),
            origin_positions=np.array(positions),
            axes=np.array(axes),
            lower=np.array(lower, dtype=np.float64),
            upper=np.array(upper, dtype=np.float64),
            tool_rotation=self._rotation,
            tool_position=self._position,
            ee_name=ee_name,
        )


@dataclass(frozen=True)
class IKConfig:
    iterations: int = 30  # damped least-squares steps per solve at most
    damping: float = 0.02  # lambda of the damped pseudo-inverse (m / rad)
    tolerance: float = 2e-4  # metres (and weighted radians) of residual at which a solve stops
    patience: int = 3  # steps without a 5 % improvement after which a solve gives up
    # metres per radian: position wins when both cannot be met. None = 0.3 for six or more joints,
    # 0.05 below: an arm with five joints cannot honour every rotation, and a larger weight would
    # drag its position sideways chasing one
    rotation_weight: float | None = None
    reach_tolerance: float = 0.005  # metres the best pose found may miss the target position by

    def __post_init__(self):
        if self.iterations < 1 or self.patience < 1:
            raise ValueError("ik: iterations and patience must be >= 1")
        if self.damping <= 0 or self.tolerance <= 0 or self.reach_tolerance <= 0:
            raise ValueError("ik: damping, tolerance and reach_tolerance must be > 0")
        if self.rotation_weight is not None and self.rotation_weight < 0:
            raise ValueError("ik: rotation_weight must be >= 0 m/rad")


class ChainKinematics(Kinematics):
    """`Kinematics` of a `SerialChain`; every array is preallocated or precomputed once."""

    def __init__(self, chain: SerialChain, config: IKConfig = IKConfig()):
        self.chain = chain
        self.config = config
        self.joint_names = chain.joint_names
        self.lower, self.upper = chain.lower, chain.upper
        axes = chain.axes
        j = len(axes)
        k = np.zeros((j, 3, 3))  # cross-product matrix of each axis: K v = axis x v
        k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axes[:, 2], axes[:, 1], -axes[:, 0]
        k[:, 1, 0], k[:, 2, 0], k[:, 2, 1] = axes[:, 2], -axes[:, 1], axes[:, 0]
        basis = np.zeros((j, 4, 4, 4))  # [J, term, 4, 4]: origin, origin K, origin K^2, origin axis (slide)
        basis[:, 0, :3, :3], basis[:, 0, :3, 3], basis[:, 0, 3, 3] = chain.origin_rotations, chain.origin_positions, 1
        basis[:, 1, :3, :3] = chain.origin_rotations @ k
        basis[:, 2, :3, :3] = chain.origin_rotations @ k @ k
        basis[:, 3, :3, 3] = np.einsum("jab,jb->ja", chain.origin_rotations, axes)
        self._basis = basis.reshape(j, 4, 16)
        self._coeff = np.zeros((j, 1, 4))
        self._coeff[:, 0, 0] = 1.0
        self._axes = axes
        self._revolute = np.array([kind == "revolute" for kind in chain.kinds])  # [J] bool
        self._all_revolute = bool(self._revolute.all())
        self._revolute_f = self._revolute.astype(np.float64)  # [J] 1.0 where turning
        self._prismatic = 1.0 - self._revolute_f  # [J] 1.0 where sliding
        self._tool = np.eye(4)
        self._tool[:3, :3], self._tool[:3, 3] = chain.tool_rotation, chain.tool_position
        self._jac = np.zeros((6, j))  # scratch
        weight = config.rotation_weight
        if weight is None:
            weight = 0.3 if j >= 6 else 0.05
        self._weights = np.array([1.0, 1.0, 1.0, weight, weight, weight])
        self._position_only = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
        self._eye = np.eye(6) * config.damping**2

    # -- forward ---------------------------------------------------------------------------------
    def pose(self, q) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions [J] -> (end-effector position [3] m, rotation matrix [3, 3]) in the base frame."""
        pos, rot, _, _ = self._frames(np.asarray(q, dtype=np.float64))
        return pos, rot

    def forward(self, q):
        pos, rot = self.pose(q)
        return pos, matrix_to_rpy(rot)

    def jacobian(self, q) -> np.ndarray:
        """Geometric Jacobian [6, J]: rows 0-2 linear velocity (m), 3-5 angular velocity (rad), base frame."""
        pos, _, z, p = self._frames(np.asarray(q, dtype=np.float64))
        return self._jacobian(pos, z, p).copy()

    def _frames(self, q: np.ndarray):
        """End-effector pose plus every joint's world axis z [J, 3] and a point on it p [J, 3].

        Few numpy calls on purpose (each costs about a microsecond, the arithmetic nothing):
        every joint's local transform is one linear combination of four precomputed 4x4 terms
        (Rodrigues: origin @ (I + sin q K + (1 - cos q) K^2), plus q along the axis when sliding),
        and the chain product is a prefix scan of log2(J) batched products.
        """
        coeff = self._coeff  # [J, 1, 4] scratch: 1, sin q, 1 - cos q, slide q
        angle = q * self._revolute_f  # rad; 0 for sliding joints, whose turn is then the identity
        coeff[:, 0, 1] = np.sin(angle)
        coeff[:, 0, 2] = 1.0 - np.cos(angle)
        coeff[:, 0, 3] = q * self._prismatic
        frames = (coeff @ self._basis).reshape(-1, 4, 4)  # [J, 4, 4] previous joint frame -> this one at q
        step = 1
        while step < len(frames):  # Hillis-Steele scan: frames[j] becomes base -> joint frame j
            frames[step:] = frames[:-step] @ frames[step:]
            step *= 2
        ee = frames[-1] @ self._tool  # [4, 4]
        z = np.einsum("jab,jb->ja", frames[:, :3, :3], self._axes)  # [J, 3] axes in the base frame
        return ee[:3, 3], ee[:3, :3], z, frames[:, :3, 3]

    def _jacobian(self, pos: np.ndarray, z: np.ndarray, p: np.ndarray) -> np.ndarray:
        jac = self._jac  # [6, J] scratch
        if self._all_revolute:
            jac[:3] = np.einsum("abc,jb,jc->aj", _LEVI_CIVITA, z, pos - p)  # z x lever
            jac[3:] = z.T
            return jac
        lever = (pos - p) * self._revolute_f[:, None]  # [J, 3] m; sliding joints have no lever
        jac[:3] = np.einsum("abc,jb,jc->aj", _LEVI_CIVITA, z, lever) + (z * self._prismatic[:, None]).T
        jac[3:] = (z * self._revolute_f[:, None]).T
        return jac

    # -- inverse ---------------------------------------------------------------------------------
    def inverse(self, q_seed, position, rpy):
        """Joints near `q_seed` (within the limits) that put the end effector at the pose.

        Position comes first: when the pose cannot be met as a whole within `reach_tolerance`,
        the solve is repeated for the position alone (the orientation gives way this tick).
        Raises `Unreachable` when even that misses the position by more than `reach_tolerance`:
        the target is outside the arm's reach or behind a joint limit.
        """
        target_p = np.asarray(position, dtype=np.float64)
        target_r = rpy_to_matrix(rpy)
        seed = np.minimum(np.maximum(np.asarray(q_seed, dtype=np.float64), self.lower), self.upper)
        q, miss = self._solve(seed, target_p, target_r, self._weights)
        if miss > self.config.reach_tolerance and self._weights[3] > 0:
            q, miss = self._solve(seed, target_p, target_r, self._position_only)
        if miss > self.config.reach_tolerance:
            raise Unreachable(f"end effector stays {miss * 1e3:.1f} mm from the target (limits or reach)")
        return q

    def _solve(self, q: np.ndarray, target_p: np.ndarray, target_r: np.ndarray, w: np.ndarray):
        """Damped least squares from `q`: (closest joints found, their position miss in m)."""
        cfg = self.config
        error = np.empty(6)  # m, rad (rotation as sin(angle) * axis), weighted
        best_q, best_err, best_miss, stalled = q, np.inf, np.inf, 0
        for _ in range(cfg.iterations):
            pos, rot, z, p = self._frames(q)
            r = target_r @ rot.T  # remaining rotation; its skew part is sin(angle) * axis, enough to steer
            error[:3] = target_p - pos
            error[3:] = (r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1])
            error[3:] *= 0.5
            error *= w  # position first: when both cannot be met, orientation gives way
            err = float(np.abs(error).max())
            if err < best_err * 0.95:
                best_q, best_err, best_miss, stalled = q, err, float(np.linalg.norm(error[:3])), 0
            else:  # no progress (a limit or the edge of reach): stop early with the closest pose
                stalled += 1
                if stalled >= cfg.patience:
                    break
            if err < cfg.tolerance:
                break
            jac = self._jacobian(pos, z, p) * w[:, None]  # [6, J]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + self._eye, error)
            pinned = ((q <= self.lower) & (dq < 0)) | ((q >= self.upper) & (dq > 0))
            if pinned.any():  # a joint held at its limit: let the others do its share instead
                jac[:, pinned] = 0.0
                dq = jac.T @ np.linalg.solve(jac @ jac.T + self._eye, error)
            q = np.minimum(np.maximum(q + dq, self.lower), self.upper)
        return best_q, best_miss
