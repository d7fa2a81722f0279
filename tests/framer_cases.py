"""Feeding a codec's decoder the way a link does, with a frame split whole, in halves or byte by byte."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SPLITS = ["whole", "halves", "bytes"]


def split(frame: bytes, how: str) -> list[bytes]:
    """The chunks `frame` arrives in: one read, two halves, or one byte per read."""
    if how == "whole":
        return [frame]
    if how == "halves":
        return [frame[: len(frame) // 2], frame[len(frame) // 2 :]]
    return [frame[i : i + 1] for i in range(len(frame))]


def feed(decode: Callable[[bytes], tuple[int, Any]], chunks: list[bytes]) -> tuple[list, int, bytes]:
    """Run the decoder over a stream arriving in chunks: (frames, bytes skipped, bytes left)."""
    buf, out, skipped = b"", [], 0
    for chunk in chunks:
        buf += chunk
        while buf:
            consumed, msg = decode(buf)
            if consumed == 0:
                break
            buf = buf[consumed:]
            if msg is None:
                skipped += consumed
            else:
                out.append(msg)
    return out, skipped, buf
