"""What every calibration source hands out: one frame type, one source seam, one error.

Kept apart from the readers so each reader (`readers.py`, `lerobot.py`) imports these and the
reader chooser imports the readers, one way, with no circle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


class CalibDataError(ValueError):
    """Calibration data cannot be read; one line naming the file, the problem and the fix."""


@dataclass(frozen=True)
class CalibFrame:
    """One observation to replay through the FP32 policy."""

    image: np.ndarray  # uint8 [H, W, 3], RGB, as the camera delivered it
    task: str  # the instruction the robot was given for this episode
    episode: int  # index of the episode within its source
    index: int  # frame index within the episode
    state: np.ndarray | None = None  # float32 [S] proprioception, when the source has it
    action: np.ndarray | None = None  # float32 [D] recorded action in physical units, when known
    views: dict | None = None  # view name -> uint8 [H, W, 3] of every camera the source kept, when several


class CalibSource(ABC):
    """A set of episodes that can be read one frame at a time."""

    @abstractmethod
    def episode_lengths(self) -> list[int]:
        """Frames per episode, in episode order."""

    @abstractmethod
    def frame(self, episode: int, index: int) -> CalibFrame:
        """Load one frame (image decoded to uint8 RGB)."""

    def describe(self) -> str:
        """One line for logs and the gate report."""
        lengths = self.episode_lengths()
        return f"{type(self).__name__}: {len(lengths)} episodes, {sum(lengths)} frames"


def as_rgb_uint8(image: np.ndarray, where: str) -> np.ndarray:
    """Check (and where harmless, fix) the layout every source must hand out: uint8 [H, W, 3]."""
    if image.ndim == 2:  # greyscale -> three equal channels
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:  # drop alpha
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise CalibDataError(f"{where}: image has shape {image.shape}; expected [H, W, 3] RGB")
    if image.dtype != np.uint8:
        raise CalibDataError(f"{where}: image dtype is {image.dtype}; expected uint8 (0..255)")
    return np.ascontiguousarray(image)


def decode_image_bytes(data: bytes, where: str) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [H, W, 3] RGB (Pillow)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return as_rgb_uint8(np.asarray(img.convert("RGB")), where)
    except OSError as exc:
        raise CalibDataError(f"{where}: cannot decode image ({exc}); re-export the frame as PNG or JPEG") from None
