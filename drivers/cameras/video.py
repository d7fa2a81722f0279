"""`kind = "video"`: a video file or a folder of images as a camera, for tests, demos and replays.

It runs the same capture thread as a USB camera, minus the device, and paces itself at the
file's frame rate. `stop_after_frames` / `stop_after` make it behave like an unplugged camera
(the open source is lost, and reopening fails) until `resume_after` seconds have passed, so
the loop's stale-frame hold and the reopen path can be exercised without hardware.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vla_runtime.common.typed_table import build
from vla_runtime.drivers.cameras.base import CameraError, CameraLost, FrameSource, ThreadedCamera
from vla_runtime.drivers.cameras.frames import import_cv2, to_rgb

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
FOLDER_FPS = 10.0  # frames per second of an image folder when `fps` is not given


@dataclass(frozen=True, kw_only=True)
class VideoOptions:
    """The robot file's [cameras.NAME] keys for kind = "video"."""

    path: str  # a video file OpenCV can decode (mp4, avi, ...) or a folder of png/jpg images (sorted by name)
    loop: bool = True  # start again at the end; false: the last frame goes stale, as after an unplug
    fps: float = 0.0  # frames per second delivered; 0 = the file's own rate (image folders: 10)
    width: int = 0  # pixels; frames are resized to width x height when both are given, else kept as stored
    height: int = 0  # pixels
    stop_after_frames: int = 0  # act unplugged (once) after delivering this many frames; 0 = never
    stop_after: float = 0.0  # seconds after the first frame to act unplugged (once); 0 = never
    resume_after: float = 0.0  # seconds unplugged before frames come back for good; 0 = never

    def __post_init__(self):
        if not self.path:
            raise ValueError('a video camera needs path = "clip.mp4" or an image folder')
        if self.fps < 0 or self.stop_after < 0 or self.resume_after < 0 or self.stop_after_frames < 0:
            raise ValueError("video fps, stop_after, resume_after and stop_after_frames must be >= 0")
        if (self.width > 0) != (self.height > 0) or self.width < 0 or self.height < 0:
            raise ValueError("video width and height go together: give both (pixels) or neither")


class _Unplug:
    """When the simulated unplug starts and ends (shared across reopens, so a reopen cannot skip it)."""

    def __init__(self, options: VideoOptions, clock=time.monotonic):
        self.options, self._clock = options, clock
        self.delivered = 0
        self.t_first: float | None = None
        self.t_lost: float | None = None
        self.replugged = False  # one unplug per run: after the replug frames keep coming

    def count(self) -> None:
        self.t_first = self._clock() if self.t_first is None else self.t_first
        self.delivered += 1

    def due(self) -> bool:
        """True when the next frame must not be delivered: the source acts unplugged."""
        o, now = self.options, self._clock()
        if self.t_lost is not None:
            if o.resume_after and now - self.t_lost >= o.resume_after:
                self.t_lost, self.replugged = None, True
                return False
            return True
        if self.replugged:
            return False
        hit_frames = o.stop_after_frames and self.delivered >= o.stop_after_frames
        hit_time = o.stop_after and self.t_first is not None and now - self.t_first >= o.stop_after
        if hit_frames or hit_time:
            self.t_lost = now
            return True
        return False


class VideoSource(FrameSource):
    """Frames of a video file or an image folder, looped or not."""

    def __init__(self, options: VideoOptions):
        self.options = options
        self.name = options.path
        self._cv2 = None
        self._cap = None  # cv2.VideoCapture of a file
        self._images: list[Path] = []  # or the files of a folder
        self._index = 0  # next frame to deliver (kept across reopens: replug continues the clip)
        self._ended = False
        self._unplug = _Unplug(options)

    def open(self) -> None:
        if self._unplug.due():
            raise CameraError(f"{self.name}: unplugged (simulated)")
        cv2 = self._cv2 = import_cv2()
        path = Path(self.options.path).expanduser()
        if path.is_dir():
            self._images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise CameraError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")
            self.period = 1.0 / (self.options.fps or FOLDER_FPS)
            return
        if not path.is_file():
            raise CameraError(f"{path}: no such video file or image folder; check [cameras] path")
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise CameraError(f"{path}: OpenCV cannot decode this file; use mp4/avi or an image folder")
        if self._index:
            cap.set(cv2.CAP_PROP_POS_FRAMES, self._index)
        file_fps = cap.get(cv2.CAP_PROP_FPS)
        fps = self.options.fps or (file_fps if 0 < file_fps <= 1000 else FOLDER_FPS)
        self._cap, self.period = cap, 1.0 / fps

    def grab(self) -> tuple[np.ndarray, float | None] | None:
        if self._unplug.due():
            raise CameraLost(f"{self.name}: stopped delivering (simulated unplug)")
        if self._ended:
            return None
        image = self._next_image()
        if image is None:
            self._ended = True
            logger.warning("camera source %s ended (loop = false); its last frame goes stale", self.name)
            return None
        self._unplug.count()
        return to_rgb(self._cv2, image, self.options.width, self.options.height), None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _next_image(self) -> np.ndarray | None:
        loop = self.options.loop
        if self._images:
            if self._index >= len(self._images):
                if not loop:
                    return None
                self._index = 0
            path = self._images[self._index]
            self._index += 1  # past a bad file too: the reopen continues with the next one
            image = self._cv2.imread(str(path), self._cv2.IMREAD_COLOR)
            if image is None:
                raise CameraError(f"{path}: not a readable image")
            return image
        ok, image = self._cap.read()
        if not ok and loop and self._index > 0:
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
            self._index = 0
            ok, image = self._cap.read()
        if not ok:
            return None
        self._index += 1
        return image


CAMERA_OPTIONS = VideoOptions


def make_camera(spec) -> ThreadedCamera:
    """Robot-description factory: `[cameras.NAME] kind = "video"` (VideoOptions keys); started."""
    options = build(VideoOptions, spec.options, f"[cameras.{spec.name}]")
    return ThreadedCamera(VideoSource(options), spec.name).start()
