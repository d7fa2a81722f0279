"""The camera seam: newest RGB frame with its capture time, delivered by a capture thread.

`Camera.read(now)` never blocks on a device: a `ThreadedCamera` runs the `FrameSource` (the
device- or file-specific part) in its own thread and hands over only the newest frame, by
swapping one reference. When the source stops delivering (unplugged, end of a file) nothing
new arrives, so the frame the loop reads ages; the loop judges staleness from `t_capture`
(its clock is the same `time.monotonic`). A lost source is reopened with exponential backoff
until it returns or the camera is closed.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # uint8 [H, W, 3], RGB
    t_capture: float  # seconds, time.monotonic() when the pixels were read from the device or file
    t_device: float | None = None  # seconds, the device's own timestamp (V4L2 buffer time) where it gives one


class CameraError(OSError):
    """A camera cannot be opened or configured as asked; the message says which and how to fix it."""


class CameraLost(CameraError):
    """An open camera stopped working (unplugged, stream ended); the capture thread reopens it."""


class Camera(ABC):
    """Delivers RGB frames stamped with their capture time."""

    @abstractmethod
    def read(self, now: float) -> Frame:
        """Return the newest frame (uint8 [H, W, 3], RGB); never waits for a new one."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device."""


class FrameSource(ABC):
    """The device- or file-specific half of a camera; called only from the capture thread."""

    name: str = "camera"  # shown in messages: the device path or file
    period: float | None = None  # seconds between frames when the source does not pace itself (files)

    @abstractmethod
    def open(self) -> None:
        """Open and configure; raise CameraError with a one-line reason."""

    @abstractmethod
    def grab(self) -> tuple[np.ndarray, float | None] | None:
        """Next frame (RGB uint8 [H, W, 3], device timestamp s or None); None: none now; CameraLost: gone."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device or file; open() may be called again afterwards."""


@dataclass(frozen=True)
class CaptureConfig:
    first_frame_timeout: float = 5.0  # seconds start() waits for the first frame; USB cameras take 1-2 s
    reopen_min: float = 0.1  # seconds before the first reopen attempt after a loss
    reopen_max: float = 2.0  # seconds; the backoff doubles up to this, so a replug is found within it
    idle_wait: float = 0.01  # seconds between polls when the source has nothing (paused, ended)

    def __post_init__(self):
        if self.first_frame_timeout <= 0 or self.idle_wait <= 0:
            raise ValueError("first_frame_timeout and idle_wait must be > 0 seconds")
        if not 0 < self.reopen_min <= self.reopen_max:
            raise ValueError("need 0 < reopen_min <= reopen_max (seconds)")


class ThreadedCamera(Camera):
    """A capture thread around a FrameSource; `read` returns the newest frame without waiting."""

    def __init__(
        self,
        source: FrameSource,
        name: str = "camera",
        config: CaptureConfig = CaptureConfig(),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.source, self.name, self.config, self._clock = source, name, config, clock
        self._latest: Frame | None = None  # replaced whole by the capture thread: the handoff
        self._first = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames = 0  # frames captured since start
        self.reopens = 0  # successful reopens after a loss

    def start(self) -> ThreadedCamera:
        """Open the source here (so a wrong setting is raised to the caller), then wait for the first frame."""
        self.source.open()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        if not self._first.wait(self.config.first_frame_timeout):
            self.close()
            raise CameraError(
                f"camera {self.name!r} ({self.source.name}) gave no frame within "
                f"{self.config.first_frame_timeout:g} s; is it streaming (another program may hold it)?"
            )
        return self

    def read(self, now: float) -> Frame:
        frame = self._latest
        if frame is None:
            raise CameraError(f"camera {self.name!r} has not delivered a frame; call start() first")
        return frame

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                logger.warning("camera %s: capture thread still busy after 5 s; leaving it behind", self.name)
            self._thread = None
        self.source.close()

    # -- the capture thread ------------------------------------------------------------------------
    def _run(self) -> None:
        opened, backoff, next_due = True, self.config.reopen_min, self._clock()
        while not self._stop.is_set():
            if not opened:
                opened = self._reopen(backoff)
                backoff = self.config.reopen_min if opened else min(2 * backoff, self.config.reopen_max)
                continue
            period = self.source.period
            if period is not None:  # a file: deliver at its frame rate, not as fast as it decodes
                if self._stop.wait(max(next_due - self._clock(), 0.0)):
                    break
                next_due = max(next_due + period, self._clock())  # late: no burst to catch up
            try:
                got = self.source.grab()
            except Exception as exc:  # noqa: BLE001 - a decoder error too: the thread must survive and reopen
                logger.warning("camera %s lost (%s); frames go stale while it is reopened", self.name, exc)
                self.source.close()
                opened = False
                continue
            if got is None:
                self._stop.wait(self.config.idle_wait)
                continue
            image, t_device = got
            self._latest = Frame(image, self._clock(), t_device)
            self.frames += 1
            self._first.set()

    def _reopen(self, backoff: float) -> bool:
        if self._stop.wait(backoff):
            return False
        try:
            self.source.open()
        except Exception as exc:  # noqa: BLE001 - keep trying until the camera is closed
            logger.debug("camera %s: reopen failed (%s); next try in %.1f s", self.name, exc, backoff)
            return False
        self.reopens += 1
        logger.warning("camera %s is back after a loss", self.name)
        return True
