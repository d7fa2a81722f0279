"""PIL's antialiased resampling reproduced bit for bit, in numpy: the parity reference path.

transformers' SigLIP processor hands uint8 images to `PIL.Image.resize`. This module reproduces
PIL's separable resampling exactly: the same filter taps, the same 22-bit fixed-point
coefficients, the same rounding, the same pass order and the same uint8 intermediate between the
two passes. It is slow (integer multiply-adds per tap in numpy: ~18 ms for a 480p frame on a
small x86 core), so the control loop uses the OpenCV path in preprocess.py; this one stays for
checking that path against the training-time pixels (`Preprocessor(exact=True)`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)

_PRECISION_BITS = 22  # PIL's fixed-point precision for 8-bit images (32 - 8 - 2)
_HALF = 1 << (_PRECISION_BITS - 1)  # rounding offset added before the shift
_MAX_PLANS = 8  # input resolutions whose resampling plans are kept (a camera keeps one)


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float) -> float:
    a = -0.5  # PIL's (and SigLIP training's) cubic coefficient
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


# resample name -> (filter, support in input pixels at scale 1)
_FILTERS: dict[str, tuple[Callable[[float], float], float]] = {
    "bilinear": (_bilinear, 1.0),
    "bicubic": (_bicubic, 2.0),
}


def resample_taps(in_size: int, out_size: int, resample: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights of every output pixel along one axis.

    Returns (index intp [out, K], weight int32 [out, K]); unused taps have weight 0. Weights
    of one output pixel sum to about 2**22. Widening the filter by the downscale factor is
    what makes this an antialiased (area-aware) resize, as in PIL.
    """
    if resample == "nearest":
        # PIL walks the source coordinate by repeated float addition from half a step; the
        # accumulated rounding decides ties, so the walk is reproduced rather than a closed form.
        step = in_size / out_size
        coord, index = step * 0.5, np.empty(out_size, dtype=np.intp)  # index: [out]
        for x in range(out_size):
            index[x] = min(int(coord), in_size - 1)
            coord += step
        return index[:, None], np.full((out_size, 1), 1 << _PRECISION_BITS, dtype=np.int32)
    filt, base_support = _FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    inv = 1.0 / filterscale
    width = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, width), dtype=np.intp)  # [out, K]
    weight = np.zeros((out_size, width), dtype=np.int32)  # [out, K], PIL's 32-bit fixed point
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - xmin
        taps = [filt((x + xmin - center + 0.5) * inv) for x in range(count)]
        total = sum(taps)
        if total != 0.0:
            taps = [t / total for t in taps]
        index[xx, :count] = np.arange(xmin, xmin + count)
        index[xx, count:] = xmin
        weight[xx, :count] = [int(t * (1 << _PRECISION_BITS) + (-0.5 if t < 0 else 0.5)) for t in taps]
    return index, weight


class _AxisResampler:
    """One resampling pass along one axis of a uint8 [H, W, 3] image, with reused buffers."""

    def __init__(self, shape: tuple[int, int, int], axis: int, out_size: int, resample: str):
        self.axis = axis
        self.index, self.weight = resample_taps(shape[axis], out_size, resample)
        out_shape = list(shape)
        out_shape[axis] = out_size
        self.out_shape = tuple(out_shape)
        # One weight column per tap, shaped to broadcast over [H', W', 3]: [out,1,1] or [1,out,1].
        bshape = (-1, 1, 1) if axis == 0 else (1, -1, 1)
        self._w = [self.weight[:, k].reshape(bshape) for k in range(self.weight.shape[1])]
        self._gather = np.empty(self.out_shape, dtype=np.uint8)  # [H', W', 3] one tap's source pixels
        # int32 like PIL: 255 * 2**22 per tap plus headroom for the filter's negative lobes
        self._term = np.empty(self.out_shape, dtype=np.int32)  # [H', W', 3] one tap's contribution
        self._acc = np.empty(self.out_shape, dtype=np.int32)  # [H', W', 3] fixed-point sum
        self.out = np.empty(self.out_shape, dtype=np.uint8)  # [H', W', 3] result, reused

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self._acc.fill(_HALF)
        for k, w in enumerate(self._w):
            np.take(image, self.index[:, k], axis=self.axis, out=self._gather)
            np.multiply(self._gather, w, out=self._term)
            self._acc += self._term
        np.right_shift(self._acc, _PRECISION_BITS, out=self._acc)  # floor division, as PIL's >>
        np.clip(self._acc, 0, 255, out=self._acc)
        self.out[...] = self._acc
        return self.out


class ExactResizer:
    """uint8 [H, W, 3] -> uint8 [S, S, 3] exactly as PIL resizes; plans cached per input resolution."""

    def __init__(self, size: int, resample: str):
        self.size, self.resample = size, resample
        self._plans: dict[tuple[int, int], list[_AxisResampler]] = {}

    def _plan(self, height: int, width: int) -> list[_AxisResampler]:
        plan = self._plans.get((height, width))
        if plan is None:
            size = self.size
            # Pillow (13) runs the vertical pass first when the height shrinks by more than twice
            # as many pixels as the width; the order changes the uint8 intermediate, so follow it.
            vertical_first = max(height - size, 0) > 2 * max(width - size, 0)
            axes = (0, 1) if vertical_first else (1, 0)
            plan, shape = [], (height, width, 3)
            for axis in axes:
                if shape[axis] != size:
                    plan.append(_AxisResampler(shape, axis, size, self.resample))
                    shape = plan[-1].out_shape
            if len(self._plans) >= _MAX_PLANS:
                self._plans.pop(next(iter(self._plans)))
            self._plans[(height, width)] = plan
            logger.debug("exact resize: new plan %dx%d -> %dx%d (%s)", width, height, size, size, self.resample)
        return plan

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The returned array is reused by the next call with the same input resolution."""
        out = image
        for step in self._plan(image.shape[0], image.shape[1]):
            out = step(out)
        return out
