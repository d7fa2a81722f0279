"""Kinematics of the simulated arm, computed by MuJoCo on a private scratch state.

The scratch `MjData` keeps inverse kinematics from ever touching the state being simulated,
so the safety layer can query it mid-tick. IK is damped least squares on the tool site's
Jacobian with joint limits clipped at every step: robust near singularities, a few hundred
microseconds per solve for six joints.
"""

from __future__ import annotations

import logging

import mujoco
import numpy as np
from vla_runtime.runtime.robot import Kinematics, matrix_to_rpy, rotation_vector, rpy_to_matrix

logger = logging.getLogger(__name__)


class MujocoKinematics(Kinematics):
    def __init__(
        self,
        model: mujoco.MjModel,
        joint_names: tuple[str, ...],
        site: str = "tool",
        iterations: int = 60,  # damped least-squares steps per solve at most
        damping: float = 0.05,  # lambda of the damped pseudo-inverse (m / rad)
        tolerance: float = 1e-4,  # metres / radians of residual at which a solve stops early
    ):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        joints = [model.joint(n) for n in joint_names]
        self.qpos_adr = np.array([int(j.qposadr[0]) for j in joints])
        self.dof_adr = np.array([int(j.dofadr[0]) for j in joints])
        self.lower = np.array([j.range[0] for j in joints])  # rad
        self.upper = np.array([j.range[1] for j in joints])  # rad
        self.iterations = iterations
        self.damping = damping
        self.tolerance = tolerance
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

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
        q = np.clip(np.asarray(q_seed, dtype=np.float64), self.lower, self.upper)
        eye = np.eye(6) * self.damping**2
        for _ in range(self.iterations):
            pos, rot = self._pose(q)
            error = np.concatenate([target_p - pos, rotation_vector(target_r @ rot.T)])  # [6] m, rad
            if np.max(np.abs(error)) < self.tolerance:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])  # [6, J]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + eye, error)
            q = np.clip(q + dq, self.lower, self.upper)
        return q
