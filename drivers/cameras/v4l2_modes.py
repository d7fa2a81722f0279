"""The capture modes a V4L2 device lists, read with the kernel's own enumeration ioctls.

OpenCV can set a mode and read back what it got, but cannot say which modes exist, so a
refusal would leave the user guessing. VIDIOC_ENUM_FMT, VIDIOC_ENUM_FRAMESIZES and
VIDIOC_ENUM_FRAMEINTERVALS (linux/videodev2.h) answer that. The struct layouts are packed
and unpacked by pure functions here; `list_modes` is the only part that touches the device.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

BUF_TYPE_VIDEO_CAPTURE = 1
FRMSIZE_TYPE_DISCRETE = 1  # else continuous/stepwise: one range, reported by its largest size
FRMIVAL_TYPE_DISCRETE = 1

# struct v4l2_fmtdesc: index, type, flags, description[32], pixelformat, mbus_code, reserved[3]
FMTDESC = struct.Struct("=III32sII3I")  # 64 bytes
# struct v4l2_frmsizeenum: index, pixel_format, type, union{discrete w,h | stepwise 6 x u32}, reserved[2]
FRMSIZE = struct.Struct("=III6I2I")  # 44 bytes
# struct v4l2_frmivalenum: index, pixel_format, width, height, type, union{fract | stepwise 3 fracts}, reserved[2]
FRMIVAL = struct.Struct("=IIIII6I2I")  # 52 bytes


def _iowr(nr: int, size: int) -> int:
    """_IOWR('V', nr, size) from the kernel's ioctl.h (direction read|write = 3)."""
    return (3 << 30) | (size << 16) | (ord("V") << 8) | nr


VIDIOC_ENUM_FMT = _iowr(2, FMTDESC.size)
VIDIOC_ENUM_FRAMESIZES = _iowr(74, FRMSIZE.size)
VIDIOC_ENUM_FRAMEINTERVALS = _iowr(75, FRMIVAL.size)


@dataclass(frozen=True)
class ListedMode:
    fourcc: str  # "MJPG", "YUYV", ...
    width: int  # pixels
    height: int  # pixels
    fps: tuple[float, ...]  # frame rates offered at this size, highest first (empty: not listed)

    def __str__(self) -> str:
        rates = "/".join(f"{f:g}" for f in self.fps) or "?"
        return f"{self.width}x{self.height} {self.fourcc} @ {rates} fps"


def fourcc_code(text: str) -> int:
    return int.from_bytes(text.encode("ascii"), "little")


def fourcc_name(code: int) -> str:
    return code.to_bytes(4, "little").decode("ascii", errors="replace").strip("\x00 ")


def pack_fmtdesc(index: int) -> bytearray:
    return bytearray(FMTDESC.pack(index, BUF_TYPE_VIDEO_CAPTURE, 0, b"", 0, 0, 0, 0, 0))


def unpack_fmtdesc(buf: bytes) -> str:
    """The pixel format's four-character code."""
    return fourcc_name(FMTDESC.unpack(buf)[4])


def pack_frmsize(index: int, fourcc: str) -> bytearray:
    return bytearray(FRMSIZE.pack(index, fourcc_code(fourcc), 0, 0, 0, 0, 0, 0, 0, 0, 0))


def unpack_frmsize(buf: bytes) -> tuple[int, int, bool]:
    """(width, height, discrete); a stepwise/continuous range gives its largest size."""
    _, _, kind, a, b, c, d, e, _f, _, _ = FRMSIZE.unpack(buf)
    if kind == FRMSIZE_TYPE_DISCRETE:
        return a, b, True
    return b, e, False  # max_width, max_height of v4l2_frmsize_stepwise


def pack_frmival(index: int, fourcc: str, width: int, height: int) -> bytearray:
    return bytearray(FRMIVAL.pack(index, fourcc_code(fourcc), width, height, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def unpack_frmival(buf: bytes) -> float | None:
    """Frames per second of a discrete interval (denominator / numerator); None for a range."""
    _, _, _, _, kind, num, den, *_ = FRMIVAL.unpack(buf)
    if kind != FRMIVAL_TYPE_DISCRETE or num == 0:
        return None
    return den / num


def list_modes(device: str, limit: int = 64) -> list[ListedMode]:
    """Every (format, size, rates) the device lists; [] when it is not a V4L2 capture node or cannot be opened."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return []
    modes: list[ListedMode] = []
    try:
        for fourcc in _enumerate(fd, VIDIOC_ENUM_FMT, pack_fmtdesc, unpack_fmtdesc, limit):
            pack_size = lambda i, f=fourcc: pack_frmsize(i, f)  # noqa: E731 - bound per format
            sizes = _enumerate(fd, VIDIOC_ENUM_FRAMESIZES, pack_size, unpack_frmsize, limit)
            for width, height, _discrete in sizes:
                rates = _enumerate(
                    fd, VIDIOC_ENUM_FRAMEINTERVALS,
                    lambda i, f=fourcc, w=width, h=height: pack_frmival(i, f, w, h), unpack_frmival, limit,
                )
                fps = tuple(sorted({round(r, 2) for r in rates if r is not None}, reverse=True))
                modes.append(ListedMode(fourcc, width, height, fps))
    finally:
        os.close(fd)
    return modes


def describe_modes(modes: list[ListedMode], most: int = 12) -> str:
    """One line: the first `most` modes, then how many more."""
    if not modes:
        return "the device listed no modes"
    shown = ", ".join(str(m) for m in modes[:most])
    return shown + (f" and {len(modes) - most} more" if len(modes) > most else "")


def _enumerate(fd: int, request: int, pack, unpack, limit: int) -> list:
    """Call an ENUM ioctl with index 0, 1, ... until the driver says EINVAL (the end of the list)."""
    found = []
    for index in range(limit):
        buf = pack(index)
        try:
            fcntl.ioctl(fd, request, buf, True)
        except OSError:
            break
        found.append(unpack(bytes(buf)))
    return found
