"""Camera frame -> pixel_values: resize, rescale and normalise in well under a millisecond.

The policy was trained on images resized by PIL's antialiased filters (transformers' SigLIP
processor), so the resize must average over the source pixels, not sample them: a plain
bilinear or bicubic resize from 1080p aliases thin edges into pixels the model never saw.
The fast path gets the antialiasing from OpenCV's exact-2x area reduction (a SIMD 2x2 box
average; the same box pre-reduction Pillow itself uses with `reducing_gap`), halving each axis
while it stays at least twice the target, then one bilinear (bicubic when enlarging) resize to
S x S. Rescale and normalise fold into one multiply-add per channel, written into a buffer
reused every tick.

Against transformers' PIL path this differs by a fraction of one uint8 level on average and
a few levels at sharp edges (tests/test_preprocess.py measures and bounds it; see the README).
`exact=True` selects preprocess_exact.py, which reproduces PIL bit for bit at ~100x the cost.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from vla_runtime.runtime.manifest import Preprocess
from vla_runtime.runtime.preprocess_exact import ExactResizer, resample_taps

logger = logging.getLogger(__name__)

__all__ = ["HalvingPlan", "Preprocessor", "fast_resize", "resample_taps"]

# resample -> OpenCV interpolation of the last step when it enlarges either axis
_FINAL = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST_EXACT}


def fast_resize(image: np.ndarray, size: int, resample: str, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [S, S, 3] with OpenCV; written into `out` when given.

    Each halving averages 2x2 (or 2x1) source pixels, so by the last step every output pixel
    already integrates the source area it covers and a 2-tap filter suffices (bicubic when the
    last step enlarges an axis, where PIL's cubic lobes show). One-off calls plan afresh;
    `Preprocessor` keeps the plan and its buffers per camera resolution.
    """
    return HalvingPlan(image.shape[0], image.shape[1], size, resample)(image, out)


class HalvingPlan:
    """The OpenCV steps from one input resolution to S x S, with every intermediate preallocated.

    Both axes halve together through OpenCV's SIMD 2x2 area kernel; a single axis halves
    through an exact-2x bilinear resize, which is the same 2-tap box average. An odd side
    drops its last row or column first (a view, no copy; under one source pixel of shift): a
    non-integer factor would send OpenCV down its general area resampler, ~10x slower.
    Reusing the intermediates saves a fresh 1.5 MB allocation (and its page faults) per 1080p
    frame.
    """

    def __init__(self, height: int, width: int, size: int, resample: str):
        self.size = size
        self.shape = (height, width)  # the input resolution this plan serves
        # (rows, cols) kept from the source, (w, h) written, interpolation, reused destination
        self.steps: list[tuple[int, int, tuple[int, int], int, np.ndarray]] = []
        h, w = height, width
        if resample != "nearest":
            while h >= 2 * size or w >= 2 * size:
                fy, fx = (2 if h >= 2 * size else 1), (2 if w >= 2 * size else 1)
                interp = cv2.INTER_AREA if fy == fx == 2 else cv2.INTER_LINEAR
                self.steps.append((h // fy * fy, w // fx * fx, (w // fx, h // fy), interp,
                                   np.empty((h // fy, w // fx, 3), dtype=np.uint8)))  # [h', w', 3]
                h, w = h // fy, w // fx
        enlarging = h < size or w < size
        # PIL's cubic lobes matter only when enlarging; nearest samples the source directly
        self.final = _FINAL[resample] if enlarging or resample == "nearest" else cv2.INTER_LINEAR

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        for rows, cols, dsize, interp, dst in self.steps:
            image = cv2.resize(image[:rows, :cols], dsize, dst=dst, interpolation=interp)
        return cv2.resize(image, (self.size, self.size), dst=out, interpolation=self.final)


class Preprocessor:
    """uint8 RGB [H, W, 3] -> float32 pixel_values [1, 3, S, S], as the exported processor did it.

    `exact=False` (the control loop): OpenCV, tolerance stated above. `exact=True`: PIL's
    resampling reproduced bit for bit, for parity references.
    """

    def __init__(self, config: Preprocess, exact: bool = False):
        self.config = config
        self.exact = exact
        size = config.image_size
        mean = np.asarray(config.image_mean, dtype=np.float64)  # [3]
        std = np.asarray(config.image_std, dtype=np.float64)  # [3]
        # (x * rescale - mean) / std == x * scale + shift, per channel
        self._scale = (config.rescale_factor / std).astype(np.float32).reshape(3, 1, 1)  # [3,1,1]
        self._shift = (-mean / std).astype(np.float32).reshape(3, 1, 1)  # [3,1,1]
        self._exact = ExactResizer(size, config.resample) if exact else None
        self._resized = np.empty((size, size, 3), dtype=np.uint8)  # [S,S,3] reused fast-path output
        self._plan: HalvingPlan | None = None  # for the last camera resolution seen (a camera keeps one)
        self._planes = tuple(np.empty((size, size), dtype=np.uint8) for _ in range(3))  # R, G, B [S,S]
        self._pixels = np.empty((1, 3, size, size), dtype=np.float32)  # [1,3,S,S] reused output

    def resize(self, image: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] -> uint8 [S, S, 3]; the returned array is reused by the next call."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"camera image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}; "
                "convert the frame (e.g. BGR->RGB, drop alpha) in the camera driver"
            )
        if self._exact is not None:
            return self._exact(image)
        if image.shape[:2] == self._resized.shape[:2]:
            return image  # already S x S: PIL leaves it untouched too
        if not image.flags.c_contiguous:  # OpenCV needs a dense row layout (e.g. a BGR->RGB view)
            image = np.ascontiguousarray(image)
        plan = self._plan
        if plan is None or plan.shape != image.shape[:2]:
            height, width = image.shape[:2]
            plan = self._plan = HalvingPlan(height, width, self.config.image_size, self.config.resample)
        return plan(image, self._resized)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Resize, rescale, normalise, HWC -> CHW; the returned buffer is reused every call."""
        resized = self.resize(image)  # uint8 [S, S, 3]
        chw = self._pixels[0]  # [3, S, S]
        cv2.split(resized, self._planes)  # HWC -> 3 dense planes (a strided numpy transpose is 3x slower)
        for channel, plane in zip(chw, self._planes, strict=True):
            channel[...] = plane  # uint8 -> float32
        chw *= self._scale
        chw += self._shift
        return self._pixels
