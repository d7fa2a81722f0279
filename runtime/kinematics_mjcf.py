"""A `SerialChain` read out of a compiled MuJoCo model (an MJCF file, or the simulated tabletop).

MuJoCo resolves everything an MJCF file can say (defaults, classes, degrees, euler sequences,
included files) into one compiled model, so the chain is read from `MjModel`, not from XML.
Its kinematics per body are: the body's fixed pose in its parent, then each of its joints in
turn, each turning about an axis through its anchor (`jnt_pos`). An anchor off the body origin
becomes a translation before the joint and its inverse after it, which is URDF's joint model.
Only MuJoCo itself is imported here; the chain then runs on plain numpy.
"""

from __future__ import annotations

import logging

import vla_runtime.runtime.sim  # noqa: F401 - sets MuJoCo's offscreen GL platform before MuJoCo loads

# isort: split
import mujoco
import numpy as np
from vla_runtime.runtime.kinematics import ChainBuilder, SerialChain, check_joint_names

logger = logging.getLogger(__name__)

_KINDS = {int(mujoco.mjtJoint.mjJNT_HINGE): "revolute", int(mujoco.mjtJoint.mjJNT_SLIDE): "prismatic"}


def _quat_matrix(quat) -> np.ndarray:
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(quat, dtype=np.float64))
    return m.reshape(3, 3)


def chain_from_mujoco(
    model: mujoco.MjModel, joint_names: tuple[str, ...] | None = None, site: str | None = None, body: str | None = None
) -> SerialChain:
    """The chain from the world to a site (or a body's origin) through every joint on the way.

    `joint_names`, when given, must be exactly the movable joints on that path, base first.
    """
    if (site is None) == (body is None):
        raise ValueError("name the end effector as a site or as a body, not both")
    try:
        if site is not None:
            sid = model.site(site).id
            ee_body, tool_pos = int(model.site_bodyid[sid]), model.site_pos[sid]
            tool_rot = _quat_matrix(model.site_quat[sid])
        else:
            ee_body, tool_pos, tool_rot = model.body(body).id, np.zeros(3), np.eye(3)
    except KeyError:
        raise ValueError(f"the model has no {'site' if site is not None else 'body'} {site or body!r}") from None
    path = []
    b = ee_body
    while b != 0:
        path.append(b)
        b = int(model.body_parentid[b])
    path.reverse()

    builder = ChainBuilder()
    for b in path:
        builder.fixed(_quat_matrix(model.body_quat[b]), model.body_pos[b])
        for j in range(int(model.body_jntadr[b]), int(model.body_jntadr[b]) + int(model.body_jntnum[b])):
            name = model.joint(j).name
            kind = _KINDS.get(int(model.jnt_type[j]))
            if kind is None:
                raise ValueError(f"joint {name!r} on the way to the end effector is not a hinge or slide")
            if model.qpos0[model.jnt_qposadr[j]] != 0.0:
                raise ValueError(f"joint {name!r} has a nonzero ref; set ref=0 so joint zero is the model's zero")
            anchor = model.jnt_pos[j].astype(np.float64)
            limited = bool(model.jnt_limited[j])
            builder.fixed(np.eye(3), anchor)  # the joint turns about its anchor ...
            builder.joint(name, kind, model.jnt_axis[j], model.jnt_range[j, 0] if limited else -np.inf,
                          model.jnt_range[j, 1] if limited else np.inf)
            builder.fixed(np.eye(3), -anchor)  # ... and the body frame follows
    builder.fixed(tool_rot, tool_pos)
    if joint_names is not None:
        check_joint_names(builder.names, tuple(joint_names), "the MuJoCo model", site or body)
    return builder.chain(site or body)


def chain_from_mjcf_file(path: str, joint_names: tuple[str, ...] | None, ee: str) -> SerialChain:
    """An MJCF (or URDF) file through MuJoCo; `ee` is a site name, else a body name."""
    try:
        model = mujoco.MjModel.from_xml_path(str(path))
    except ValueError as exc:
        raise ValueError(f"{path}: MuJoCo cannot load it ({str(exc).splitlines()[0]})") from None
    is_site = ee in {model.site(i).name for i in range(model.nsite)}
    return chain_from_mujoco(model, joint_names, site=ee if is_site else None, body=None if is_site else ee)
