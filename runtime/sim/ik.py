"""Kinematics of the simulated arm, computed by MuJoCo on a private scratch state.

The scratch `MjData` keeps inverse kinematics from ever touching the state being simulated,
so the safety layer can query it mid-tick. IK is damped least squares on the tool site's
Jacobian with joint limits clipped at every step: robust near singularities, a few hundred
microseconds per solve for six joints. A target the joint limits put out of reach returns the
closest pose found as soon as progress stalls, so a bad action cannot burn the tick budget.
"""

from __future__ import annotations

import logging

import mujoco
import numpy as np
from vla_runtime.runtime.robot import Kinematics, matrix_to_rpy, rpy_to_matrix

logger = logging.getLogger(__name__)



def _as_index(addresses: list[int]) -> slice | np.ndarray:
    """A slice when the addresses are consecutive (cheaper than fancy indexing every iteration)."""
    if addresses == list(range(addresses[0], addresses[0] + len(addresses))):
        return slice(addresses[0], addresses[0] + len(addresses))
    return np.array(addresses)


class MujocoKinematics(Kinematics):
    def __init__(
        self,
        model: mujoco.MjModel,
        joint_names: tuple[str, ...],
        site: str = "tool",
        iterations: int = 30,  # damped least-squares steps per solve at most
        damping: float = 0.02,  # lambda of the damped pseudo-inverse (m / rad)
        tolerance: float = 2e-4,  # metres (and weighted radians) of residual at which a solve stops
        patience: int = 3,  # steps without a 5 % improvement after which a solve gives up
        rotation_weight: float = 0.3,  # metres per radian: position wins when both cannot be met
    ):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        joints = [model.joint(n) for n in joint_names]
        self.qpos_adr = _as_index([int(j.qposadr[0]) for j in joints])
        self.dof_adr = _as_index([int(j.dofadr[0]) for j in joints])
        self.lower = np.array([j.range[0] for j in joints])  # rad
        self.upper = np.array([j.range[1] for j in joints])  # rad
        self.iterations = iterations
        self.damping = damping
        self.tolerance = tolerance
        self.patience = patience
        self._weights = np.array([1.0, 1.0, 1.0, rotation_weight, rotation_weight, rotation_weight])
        self._jac = np.zeros((6, model.nv))  # rows: translation (3), rotation (3)
        self._eye = np.eye(6) * damping**2

    def _pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def forward(self, q):
        pos, rot = self._pose(np.asarray(q, dtype=np.float64))
        return pos, matrix_to_rpy(rot)

    def inverse(self, q_seed, position, rpy):
        target_p = np.asarray(position, dtype=np.float64)
        target_r = rpy_to_matrix(rpy)
        q = np.minimum(np.maximum(np.asarray(q_seed, dtype=np.float64), self.lower), self.upper)
        w = self._weights
        error = np.empty(6)  # m, rad (rotation as sin(angle) * axis), weighted
        best_q, best_err, stalled = q, np.inf, 0
        for _ in range(self.iterations):
            pos, rot = self._pose(q)
            r = target_r @ rot.T  # remaining rotation; its skew part is sin(angle) * axis, enough to steer
            error[:3] = target_p - pos
            error[3:] = (r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1])
            error[3:] *= 0.5
            error *= w  # position first: when both cannot be met, orientation gives way
            err = float(np.abs(error).max())
            if err < best_err * 0.95:
                best_q, best_err, stalled = q, err, 0
            else:  # an unreachable target (joint limits): stop early with the closest pose found
                stalled += 1
                if stalled >= self.patience:
                    break
            if err < self.tolerance:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jac[:3], self._jac[3:], self.site_id)
            jac = self._jac[:, self.dof_adr] * w[:, None]  # [6, J]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + self._eye, error)
            q = np.minimum(np.maximum(q + dq, self.lower), self.upper)
        return best_q
