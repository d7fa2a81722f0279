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

_HALF = np.array([1.0, 1.0, 1.0, 0.5, 0.5, 0.5])  # scales the skew part of the rotation error to sin(angle)


class MujocoKinematics(Kinematics):
    def __init__(
        self,
        model: mujoco.MjModel,
        joint_names: tuple[str, ...],
        site: str = "tool",
        iterations: int = 60,  # damped least-squares steps per solve at most
        damping: float = 0.05,  # lambda of the damped pseudo-inverse (m / rad)
        tolerance: float = 1e-4,  # metres / radians of residual at which a solve stops early
        patience: int = 3,  # steps without a 5 % improvement after which a solve gives up
        rotation_weight: float = 0.3,  # metres per radian: position wins when both cannot be met
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
        self.patience = patience
        self._weights = np.array([1.0, 1.0, 1.0, rotation_weight, rotation_weight, rotation_weight])
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
        best_q, best_err, stalled = q, np.inf, 0
        for _ in range(self.iterations):
            pos, rot = self._pose(q)
            r = target_r @ rot.T  # remaining rotation; its skew part is sin(angle) * axis, enough to steer
            error = np.array([*(target_p - pos), r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) * _HALF
            err = float(np.max(np.abs(error * self._weights)))  # position-first, like the update
            if err < best_err * 0.95:
                best_q, best_err, stalled = q, err, 0
            else:  # an unreachable target (joint limits): stop early with the closest pose found
                stalled += 1
                if stalled >= self.patience:
                    break
            if err < self.tolerance:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]]) * self._weights[:, None]
            dq = jac.T @ np.linalg.solve(jac @ jac.T + eye, error * self._weights)  # jac [6, J]
            q = np.clip(q + dq, self.lower, self.upper)
        return best_q
