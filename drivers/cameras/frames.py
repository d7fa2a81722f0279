"""OpenCV glue shared by the camera kinds: import it with a one-line reason, and BGR -> RGB uint8."""

from __future__ import annotations

import numpy as np
from vla_runtime.common.cli import require_modules
from vla_runtime.drivers.cameras.base import CameraError


def import_cv2():
    """OpenCV, or a CameraError naming the package to install."""
    return require_modules("cv2", error=lambda name: CameraError(
        f"cameras need OpenCV ({name} is not installed); pip install opencv-python-headless"))[0]


def to_rgb(cv2, image: np.ndarray, width: int = 0, height: int = 0) -> np.ndarray:
    """BGR (or grey) uint8 from OpenCV -> contiguous RGB uint8 [H, W, 3], resized when a size is given."""
    if image.dtype != np.uint8:
        raise CameraError(f"camera frame has dtype {image.dtype}; expected 8-bit pixels")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if width and height and image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)
