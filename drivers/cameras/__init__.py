"""Cameras as drivers: `[cameras.NAME] kind = "v4l2" | "video"` in a robot description.

Each kind is a module here providing `make_camera(spec)` and `CAMERA_OPTIONS` (the dataclass
whose fields are that kind's robot-file keys). All of them are a `FrameSource` read by one
capture thread (`base.ThreadedCamera`) that keeps only the newest frame, so the control loop
never waits on USB or a decoder. The simulated camera renders in the loop's thread instead
(see runtime/sim/robot.py).
"""
