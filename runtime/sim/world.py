"""The simulated tabletop: one MuJoCo model and state shared by the sim robot and camera.

Simulated time advances only when the robot is commanded (one control period per command),
so an episode is repeatable no matter how slow the host is, while the loop above still paces
itself against the wall clock like on real hardware.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import mujoco
import numpy as np
from vla_runtime.runtime.kinematics import ChainKinematics
from vla_runtime.runtime.kinematics_mjcf import chain_from_mujoco
from vla_runtime.runtime.robot import rpy_to_matrix

logger = logging.getLogger(__name__)

ARM_JOINTS = ("base_yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "wrist_yaw")
FINGER_JOINTS = ("finger_left", "finger_right")
FINGER_TRAVEL = 0.045  # metres of each finger's slide at gripper opening 1.0
BLOCKS = ("red_block", "green_block", "blue_block")
HOME_POSITION = (0.35, 0.0, 0.25)  # metres: the tool above the blocks at the start of an episode
HOME_RPY = (np.pi, 0.0, np.pi)  # tool pointing straight down, fingers closing along y


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0  # block placement jitter; same seed, same episode
    block_jitter: float = 0.03  # metres of random offset applied to each block's x and y
    model_file: str = "tabletop.xml"  # MJCF inside vla_runtime.runtime.sim

    def __post_init__(self):
        if not (0.0 <= self.block_jitter <= 0.1):
            raise ValueError("sim block_jitter must be within [0, 0.1] m")


class SimWorld:
    """Model, state and stepping of the tabletop scene."""

    def __init__(self, config: SimConfig = SimConfig()):
        self.config = config
        xml = resources.files("vla_runtime.runtime.sim").joinpath(config.model_file).read_text()
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        # the same solver as a real arm's, on the chain MuJoCo compiled from the scene
        self.kinematics = ChainKinematics(chain_from_mujoco(self.model, ARM_JOINTS, site="tool"))
        self.arm_qpos = np.array([int(self.model.joint(n).qposadr[0]) for n in ARM_JOINTS])
        self.finger_qpos = np.array([int(self.model.joint(n).qposadr[0]) for n in FINGER_JOINTS])
        self.arm_act = np.array([self.model.actuator(n).id for n in ARM_JOINTS])
        self.finger_act = np.array([self.model.actuator(n).id for n in FINGER_JOINTS])
        self.reset()

    def reset(self) -> None:
        """Arm at home with the gripper open, blocks jittered by the seed."""
        mujoco.mj_resetData(self.model, self.data)
        rng = np.random.default_rng(self.config.seed)
        for name in BLOCKS:
            adr = int(self.model.joint(self.model.body(name).jntadr[0]).qposadr[0])
            self.data.qpos[adr : adr + 2] += rng.uniform(-self.config.block_jitter, self.config.block_jitter, 2)
        seed = np.array([0.0, 0.5, 1.6, 1.04, 0.0, 0.0])  # rad, a tool-down pose found by hand
        home = self.kinematics.inverse(seed, np.array(HOME_POSITION), np.array(HOME_RPY))
        self.data.qpos[self.arm_qpos] = home
        self.data.qpos[self.finger_qpos] = FINGER_TRAVEL
        self.data.ctrl[self.arm_act] = home
        self.data.ctrl[self.finger_act] = FINGER_TRAVEL
        mujoco.mj_forward(self.model, self.data)

    def step(self, seconds: float) -> None:
        """Advance physics by `seconds` of simulated time."""
        for _ in range(max(1, round(seconds / self.model.opt.timestep))):
            mujoco.mj_step(self.model, self.data)

    def body_position(self, name: str) -> np.ndarray:
        return self.data.body(name).xpos.copy()

    def tool_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.site("tool").xpos.copy(), self.data.site("tool").xmat.reshape(3, 3).copy()

    def home_rotation(self) -> np.ndarray:
        return rpy_to_matrix(np.array(HOME_RPY))
