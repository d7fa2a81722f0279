"""Calibration frames from flight recordings (`vla-runtime --record DIR`, one .mcap per episode).

Opening reads each file's small per-tick records once (no images). A frame is then fetched
by time through the file's index, so a long recording costs nothing until a frame is
sampled. A file cut short by a crash has no index; its frames are kept encoded in memory
instead (JPEG ~50 kB per 640x480 frame; raw frames much more: `mcap recover` repairs the file).

Record with `--record-raw` for calibration: JPEG frames carry compression artefacts the
camera never produced, which shifts the activation ranges slightly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vla_runtime.runtime.episodes.frames import CalibDataError, CalibFrame, CalibSource, as_rgb_uint8

logger = logging.getLogger(__name__)


class RecordedMcap(CalibSource):
    """Episodes in DIR/*.mcap (or a single file); ticks with a frame of `camera` (default: the first)."""

    def __init__(self, path: str | Path, camera: str | None = None):
        from vla_runtime.runtime.recording import Recording, RecordingError, find_recordings

        try:
            self.recordings = [Recording(p) for p in find_recordings([path])]
        except RecordingError as exc:
            raise CalibDataError(str(exc)) from None
        self.camera = camera
        self._ticks = []
        jpeg = 0
        for rec in self.recordings:
            cam = camera or rec.run.cameras[0]
            if cam not in rec.run.cameras:
                raise CalibDataError(f"{rec.path}: no camera {cam!r}; choose one of {list(rec.run.cameras)} "
                                     "with --camera")
            ticks = [t for t in rec.ticks(images=not rec.complete) if cam in t.cameras]
            if not rec.complete:
                logger.warning("%s was cut short; holding its %d frames in memory", rec.path, len(ticks))
            self._ticks.append((cam, ticks))
            jpeg += rec.metadata.get("images") == "jpeg"
        if jpeg:
            logger.warning("%d of %d recordings hold JPEG frames; record with --record-raw for calibration",
                           jpeg, len(self.recordings))

    def episode_lengths(self) -> list[int]:
        return [len(ticks) for _, ticks in self._ticks]

    def frame(self, episode: int, index: int) -> CalibFrame:
        from vla_runtime.runtime.recording import RecordingError

        rec, (cam, ticks) = self.recordings[episode], self._ticks[episode]
        tick = ticks[index]
        where = f"{rec.path} tick {tick.slot}"
        try:
            image = rec.image(tick, cam)
        except (RecordingError, ValueError) as exc:
            raise CalibDataError(f"{where}: {exc}") from None
        views = None
        if len(tick.cameras) > 1:  # a multi-view policy replays every view the robot recorded
            try:
                views = {c: as_rgb_uint8(rec.image(tick, c), where) for c in tick.cameras}
            except (RecordingError, ValueError) as exc:
                raise CalibDataError(f"{where}: {exc}") from None
        return CalibFrame(image=as_rgb_uint8(image, where), task=rec.run.task, episode=episode, index=index,
                          state=tick.state.astype("float32"), action=tick.sent.astype("float32"), views=views)
