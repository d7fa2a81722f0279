"""A MuJoCo tabletop robot behind the same Robot / Camera interfaces as the real drivers.

MuJoCo picks its OpenGL platform when first imported, so the offscreen default is set here,
before any module of this package imports it; an explicit MUJOCO_GL from the user wins.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # offscreen rendering without a display
