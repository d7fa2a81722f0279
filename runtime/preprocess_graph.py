"""Host side of the `resize` graph: hand the camera frame over as it is, with PIL's filter.

Bundles built with `vla-export resize-graph` (or `build --resize-in-graph`) carry a `resize`
graph (export/resize_graph.py) that resizes, rescales and normalises on the accelerator. The
host's part is to check the frame and to supply PIL's filter for the camera's resolution as
two dense matrices, rows R [S, H] and columns C [W, S], built once per resolution from the same
taps the bit-exact reference path uses (`resample_taps`), so the graph reproduces
transformers' processor to within a level and the frame's pixels are never touched here.
"""

from __future__ import annotations

import logging

import numpy as np
from vla_runtime.runtime.manifest import Preprocess
from vla_runtime.runtime.preprocess_exact import resample_taps

logger = logging.getLogger(__name__)

RESIZE_ROLE = "resize"  # manifest graph role
RESIZE_INPUTS = ("image", "resize_rows", "resize_cols")  # uint8 [H, W, 3], f32 [S, H], f32 [W, S]
RESIZE_OUTPUT = "pixel_values"  # f32 [1, 3, S, S], the vision graph's input

_FIXED_ONE = float(1 << 22)  # resample_taps' fixed-point unit (PIL's 22 precision bits)


def filter_matrix(in_size: int, out_size: int, resample: str) -> np.ndarray:
    """float32 [out, in]: row i holds PIL's weights of every source pixel for output pixel i."""
    index, weight = resample_taps(in_size, out_size, resample)  # [out, K] each
    dense = np.zeros((out_size, in_size), dtype=np.float64)  # [out, in]
    rows = np.repeat(np.arange(out_size), index.shape[1])  # [out*K]
    np.add.at(dense, (rows, index.ravel()), weight.ravel() / _FIXED_ONE)  # unused taps add 0
    return dense.astype(np.float32)


class ResizeFeed:
    """uint8 RGB [H, W, 3] -> the resize graph's inputs; matrices kept for the last resolution."""

    def __init__(self, config: Preprocess):
        self.config = config
        self._shape: tuple[int, int] | None = None
        self._rows = self._cols = np.empty((0, 0), dtype=np.float32)

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"camera image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}; "
                "convert the frame (e.g. BGR->RGB, drop alpha) in the camera driver"
            )
        if not image.flags.c_contiguous:  # the graph reads dense rows (e.g. a BGR->RGB view is not)
            image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        if self._shape != (height, width):
            size, resample = self.config.image_size, self.config.resample
            self._rows = filter_matrix(height, size, resample)  # [S, H]
            self._cols = np.ascontiguousarray(filter_matrix(width, size, resample).T)  # [W, S]
            self._shape = (height, width)
            logger.debug("resize graph: filter for %dx%d -> %dx%d (%s)", width, height, size, size, resample)
        return dict(zip(RESIZE_INPUTS, (image, self._rows, self._cols), strict=True))
