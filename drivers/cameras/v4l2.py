"""`kind = "v4l2"`: a USB or CSI camera through OpenCV's VideoCapture on the V4L2 backend.

The requested mode (pixel format, size, frame rate, exposure) is set and then READ BACK: a
camera that cannot honour it is refused in one line naming what was asked, what the device
gave and the modes it lists (v4l2_modes), never run at a silently different mode. Frames are delivered by the shared
capture thread; an unplugged camera makes `read` fail (CameraLost), the thread reopens it with
backoff, and the loop meanwhile sees its frames age. Use a /dev/v4l/by-id/... path so the
same camera is found again after a replug.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from vla_runtime.common.typed_table import build
from vla_runtime.drivers.cameras.base import CameraError, CameraLost, FrameSource, ThreadedCamera
from vla_runtime.drivers.cameras.frames import import_cv2, to_rgb
from vla_runtime.drivers.cameras.v4l2_modes import describe_modes, fourcc_name, list_modes

logger = logging.getLogger(__name__)

FOURCCS = ("MJPG", "YUYV")  # compressed (high rates at high resolution over USB 2) and raw 4:2:2
FPS_TOLERANCE = 0.02  # relative; drivers report 29.97 or 30.00003 for 30
EXPOSURE_TOLERANCE = 0.05  # relative; drivers round the exposure to their own steps
V4L2_EXPOSURE_MANUAL, V4L2_EXPOSURE_APERTURE_PRIORITY = 1, 3  # V4L2_CID_EXPOSURE_AUTO menu values
READ_TIMEOUT_MS = 1000  # a read blocks at most this long before the camera counts as lost


@dataclass(frozen=True, kw_only=True)
class V4L2Options:
    """The robot file's [cameras.NAME] keys for kind = "v4l2"."""

    device: str | int = "/dev/video0"  # device path (prefer /dev/v4l/by-id/...) or index N of /dev/videoN
    width: int = 640  # pixels of the capture mode
    height: int = 480  # pixels of the capture mode
    fps: float = 30.0  # frames per second of the capture mode
    fourcc: str = "MJPG"  # pixel format: "MJPG" or "YUYV" (`v4l2-ctl --list-formats-ext` lists the modes)
    exposure: float = 0.0  # 0 = automatic; else manual exposure_time_absolute in the driver's units (100 us)

    def __post_init__(self):
        if self.fourcc not in FOURCCS:
            raise ValueError(f"v4l2 fourcc {self.fourcc!r} is not one of {FOURCCS}")
        if not (16 <= self.width <= 8192 and 16 <= self.height <= 8192):
            raise ValueError(f"v4l2 size {self.width}x{self.height} is out of 16..8192 pixels")
        if not 0 < self.fps <= 1000 or self.exposure < 0:
            raise ValueError("v4l2 fps must be in (0, 1000] and exposure >= 0 (0 = automatic)")


@dataclass(frozen=True)
class Mode:
    """A capture mode as asked for or as read back from the device."""

    width: int  # pixels
    height: int  # pixels
    fps: float  # frames per second
    fourcc: str  # four-character pixel format code
    exposure: float = 0.0  # 0 = automatic, else the driver's manual exposure value

    def __str__(self) -> str:
        exposure = "auto exposure" if not self.exposure else f"exposure {self.exposure:g}"
        return f"{self.width}x{self.height} {self.fourcc} @ {self.fps:g} fps, {exposure}"


def fourcc_text(code: float) -> str:
    """OpenCV's CAP_PROP_FOURCC number -> 'MJPG'."""
    return fourcc_name(int(code) & 0xFFFFFFFF) or "????"


def check_mode(device: str, wanted: Mode, got: Mode, listed: Callable[[], str] | None = None) -> None:
    """CameraError naming both modes (and, from `listed`, the modes the device offers) unless it gave what was asked."""
    same = (
        (got.width, got.height, got.fourcc) == (wanted.width, wanted.height, wanted.fourcc)
        and abs(got.fps - wanted.fps) <= FPS_TOLERANCE * wanted.fps
        and (not wanted.exposure or abs(got.exposure - wanted.exposure) <= EXPOSURE_TOLERANCE * wanted.exposure)
    )
    if not same:
        offers = listed() if listed is not None else ""
        offers = f"it lists {offers}" if offers else f"list its modes with `v4l2-ctl -d {device} --list-formats-ext`"
        raise CameraError(
            f"camera {device} cannot do {wanted}; it gave {got}. Set [cameras] width/height/fps/fourcc "
            f"to a mode it offers: {offers}"
        )


def device_label(device: str | int) -> str:
    return f"/dev/video{device}" if isinstance(device, int) else device


class V4L2Source(FrameSource):
    def __init__(self, options: V4L2Options):
        self.options = options
        self.name = device_label(options.device)
        self.wanted = Mode(options.width, options.height, options.fps, options.fourcc, options.exposure)
        self._cv2 = None
        self._cap = None

    def open(self) -> None:
        cv2 = self._cv2 = import_cv2()
        cap = cv2.VideoCapture(self.options.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open camera {self.name}; is it plugged in and readable (video group)?")
        try:
            self._configure(cv2, cap)
        except CameraError:
            cap.release()
            raise
        self._cap = cap

    def _configure(self, cv2, cap) -> None:
        w = self.wanted
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*w.fourcc))  # format first: it limits sizes
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, w.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, w.height)
        cap.set(cv2.CAP_PROP_FPS, w.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer queued buffers: a read returns a recent frame
        if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
            cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS)
        if w.exposure:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_EXPOSURE_MANUAL)
            cap.set(cv2.CAP_PROP_EXPOSURE, w.exposure)
        else:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, V4L2_EXPOSURE_APERTURE_PRIORITY)
        got = Mode(
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            float(cap.get(cv2.CAP_PROP_FPS)),
            fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)),
            float(cap.get(cv2.CAP_PROP_EXPOSURE)) if w.exposure else 0.0,
        )
        check_mode(self.name, w, got, lambda: describe_modes(list_modes(self.name)))
        logger.info("camera %s: %s", self.name, got)

    def grab(self) -> tuple[np.ndarray, float | None] | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            raise CameraLost(f"{self.name}: read failed (unplugged?)")
        if image.shape[:2] != (self.wanted.height, self.wanted.width):
            raise CameraError(f"{self.name}: frame is {image.shape[1]}x{image.shape[0]}, not the {self.wanted}")
        t_device = self._cap.get(self._cv2.CAP_PROP_POS_MSEC) / 1e3  # the V4L2 buffer timestamp
        return to_rgb(self._cv2, image), (t_device if t_device > 0 else None)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


CAMERA_OPTIONS = V4L2Options


def make_camera(spec) -> ThreadedCamera:
    """Robot-description factory: `[cameras.NAME] kind = "v4l2"` (V4L2Options keys); opened and streaming."""
    options = build(V4L2Options, spec.options, f"[cameras.{spec.name}]")
    return ThreadedCamera(V4L2Source(options), spec.name).start()
