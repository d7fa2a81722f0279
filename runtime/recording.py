"""Reading flight recordings back: run metadata, attachments and ticks, crash-cut files included.

A file closed normally has a summary section, so one camera frame can be fetched by time
without reading the rest. A file cut short (a crash, `kill -9`, power loss) has no summary;
it is read front to back and yields every tick up to the last complete chunk, about a second
before the cut. Replay, calibration and the dataset export all read through this module.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from vla_runtime.runtime import recording_format as fmt

logger = logging.getLogger(__name__)


class RecordingError(ValueError):
    """A recording cannot be read; one line naming the file, the problem and the fix."""


@dataclass(frozen=True)
class RecordedImage:
    """One camera frame as stored: decode on demand, or copy the JPEG bytes as they are."""

    schema: str  # foxglove.CompressedImage | foxglove.RawImage
    data: bytes = field(repr=False)  # the serialized message

    def decode(self) -> np.ndarray:
        """uint8 RGB [H, W, 3]."""
        return fmt.decode_image(fmt.proto_classes(), self.schema, self.data)

    def encoded(self) -> tuple[str, bytes] | None:
        """(format, bytes) of a compressed frame; None for raw frames."""
        return fmt.encoded_image_bytes(fmt.proto_classes(), self.schema, self.data)


@dataclass(frozen=True)
class RecordedTick:
    """One tick joined from all channels (see `recording_format.TICK_SCHEMA` for the fields)."""

    slot: int
    t: float  # seconds since the first tick
    log_ns: int  # the tick's MCAP log time
    state: np.ndarray  # [J + 1]
    desired: np.ndarray | None  # [D], None when the loop was starved
    safe: np.ndarray  # [D]
    sent: np.ndarray  # [D]
    interventions: tuple[str, ...]
    held: bool
    chunk: int
    chunk_step: int
    inference: int
    stages_ms: dict[str, float]
    deadline_miss: bool
    cameras: tuple[str, ...] = ()  # cameras with a frame at this tick (images may be dropped under load)
    images: dict[str, RecordedImage] = field(default_factory=dict)  # camera -> frame (when read)


class Recording:
    """An episode recorded by `FlightRecorder`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise RecordingError(f"{self.path}: no such recording; pass an .mcap file written by --record")
        _require_mcap()
        self.metadata: dict[str, str] = {}
        self.attachments: dict[str, bytes] = {}
        self.complete = self._read_summary()
        if not self.complete:
            self._read_head()
        if fmt.RUN_METADATA not in self.metadata_records:
            raise RecordingError(f"{self.path}: no 'run' metadata; not a vla-runtime recording (or cut before tick 0)")
        try:
            self.run = fmt.RunInfo.from_metadata(self.metadata)
        except (KeyError, ValueError) as exc:
            raise RecordingError(f"{self.path}: bad run metadata ({exc}); record it again with this runtime") from None

    # -- header ------------------------------------------------------------------------------
    def _read_summary(self) -> bool:
        from mcap.exceptions import McapError
        from mcap.reader import make_reader

        self.metadata_records: set[str] = set()
        try:
            with open(self.path, "rb") as f:
                reader = make_reader(f)
                if reader.get_summary() is None:
                    return False
                for m in reader.iter_metadata():
                    self.metadata_records.add(m.name)
                    if m.name == fmt.RUN_METADATA:
                        self.metadata = dict(m.metadata)
                self.attachments = {a.name: bytes(a.data) for a in reader.iter_attachments()}
        except (McapError, OSError, ValueError, EOFError, struct.error) as exc:
            logger.info("%s: no usable summary (%s); reading it front to back", self.path, exc)
            return False
        return True

    def _read_head(self) -> None:
        """Metadata and attachments of a cut file: they precede the first chunk."""
        from mcap.records import Attachment, Chunk, Metadata

        for record in self._records(emit_chunks=True):
            if isinstance(record, Metadata):
                self.metadata_records.add(record.name)
                if record.name == fmt.RUN_METADATA:
                    self.metadata = dict(record.metadata)
            elif isinstance(record, Attachment):
                self.attachments[record.name] = bytes(record.data)
            elif isinstance(record, Chunk):
                return

    def _records(self, emit_chunks: bool = False) -> Iterator:
        """Records front to back; a truncated tail ends the iteration instead of raising."""
        from mcap.exceptions import McapError
        from mcap.stream_reader import StreamReader

        with open(self.path, "rb") as f:
            reader = StreamReader(f, emit_chunks=emit_chunks)
            try:
                yield from reader.records
            except (McapError, EOFError, ValueError, OSError, struct.error) as exc:  # zstd errors are ValueErrors
                logger.info("%s: cut short (%s); stopping at the last complete record", self.path, exc)

    # -- ticks -------------------------------------------------------------------------------
    def ticks(self, images: bool = True) -> Iterator[RecordedTick]:
        """Every recorded tick in order; `images=False` skips the frames (faster, less memory)."""
        from mcap.records import Channel, Message, Schema

        schemas: dict[int, str] = {}
        topics: dict[int, tuple[str, str]] = {}  # channel id -> (topic, schema name)
        pending: dict[str, object] = {}
        pending_seq = None
        for record in self._records():
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                topics[record.id] = (record.topic, schemas.get(record.schema_id, ""))
            elif isinstance(record, Message) and record.channel_id in topics:
                topic, schema = topics[record.channel_id]
                if record.sequence != pending_seq:
                    pending, pending_seq = {}, record.sequence
                if topic == fmt.TOPIC_TICK:
                    yield _tick(fmt.decode_tick(record.data), record.log_time, pending)
                elif topic.startswith(fmt.CAMERA_PREFIX):
                    name = topic[len(fmt.CAMERA_PREFIX):]
                    pending[name] = RecordedImage(schema, bytes(record.data)) if images else None

    def image(self, tick: RecordedTick, camera: str) -> np.ndarray:
        """One frame of a tick read without `images` (random access; complete files only)."""
        if camera in tick.images:
            return tick.images[camera].decode()
        if not self.complete:
            raise RecordingError(f"{self.path}: cut short, so frames cannot be fetched by time; "
                                 "read it with ticks(images=True) or repair it with `mcap recover`")
        from mcap.reader import make_reader

        with open(self.path, "rb") as f:
            reader = make_reader(f)
            topic = fmt.camera_topic(camera)
            for schema, _, message in reader.iter_messages(topics=[topic], starting_at=tick.log_ns,
                                                           ending_at=tick.log_ns):
                if message.sequence == tick.slot & 0xFFFFFFFF:
                    return RecordedImage(schema.name, bytes(message.data)).decode()
        raise RecordingError(f"{self.path}: tick {tick.slot} has no {camera!r} frame (dropped while recording)")

    def describe(self) -> str:
        state = "complete" if self.complete else "cut short (no summary)"
        return f"{self.path.name}: task {self.run.task!r}, {self.run.rate_hz:g} Hz, robot {self.run.robot}, {state}"


def _tick(doc: dict, log_ns: int, images: dict) -> RecordedTick:
    def arr(key):
        value = doc.get(key)
        return None if value is None else np.asarray(value, dtype=np.float64)

    return RecordedTick(
        slot=int(doc["slot"]), t=float(doc["t"]), log_ns=log_ns, state=arr("state"), desired=arr("desired"),
        safe=arr("safe"), sent=arr("sent"), interventions=tuple(doc.get("interventions", ())),
        held=bool(doc.get("held")), chunk=int(doc.get("chunk", -1)), chunk_step=int(doc.get("chunk_step", -1)),
        inference=int(doc.get("inference", -1)), stages_ms=dict(doc.get("stages_ms", {})),
        deadline_miss=bool(doc.get("deadline_miss")), cameras=tuple(images),
        images={k: v for k, v in images.items() if v is not None},
    )


def _require_mcap() -> None:
    try:
        fmt.require_record_deps()  # reading decodes with the same packages the recorder writes with
    except fmt.RecordDepsMissing as exc:
        raise RecordingError(f"cannot read recordings: {exc}") from None


def find_recordings(paths: list[str | Path]) -> list[Path]:
    """.mcap files named directly or found in the given folders, sorted; refuses an empty result."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(p.glob("*.mcap")))
        elif p.is_file():
            found.append(p)
        else:
            raise RecordingError(f"{p}: no such file or folder; pass recordings (.mcap) or folders holding them")
    if not found:
        raise RecordingError(f"no .mcap recordings in {', '.join(map(str, paths))}; record some with --record DIR")
    return found
