"""The flight recorder: one MCAP file per episode, streamed by a writer thread.

Layout (see `recording_format` for the channels)::

    DIR/episode_000000.mcap    one episode: camera images, measured joints, sent command, and a
    DIR/episode_000001.mcap    per-tick record of what the policy wanted, what safety changed and
                               why, what was sent and how late; `run` metadata; the bundle
                               manifest and robot file as attachments

The control loop only calls `record(tick)`, which puts references into a bounded queue and
returns: no encoding, no I/O and never a wait inside the deadline. A writer thread encodes
images (JPEG, or raw rgb8 with `raw_images`), serialises and writes. When the writer falls
behind, images are dropped first (the small per-tick record still goes in) and whole ticks
only when the queue is full; both are counted and reported. Chunks are closed and flushed to
the OS at least every `flush_s`, so a crash or `kill -9` loses about the last second; the
queue bound keeps memory flat however long the run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from collections import deque
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import NamedTuple

import numpy as np
from vla_runtime.runtime import recording_format as fmt

logger = logging.getLogger(__name__)

POLL_S = 0.005  # seconds the writer sleeps when the queue is empty (200 cheap wake-ups a second)


@dataclass(frozen=True)
class RecorderConfig:
    raw_images: bool = False  # lossless foxglove.RawImage rgb8 instead of JPEG (for INT8 calibration)
    jpeg_quality: int = 90  # 1..100; 90 keeps small text and edges readable at ~50 kB per 640x480 frame
    # ticks the queue holds before whole ticks are dropped (~0.9 MB each at 640x480 per camera):
    # 32 ticks is 3 s of slack at 10 Hz for a disk that stalls, and caps the recorder's memory
    queue_ticks: int = 32
    image_watermark: float = 0.5  # queue fill (0..1] above which new ticks are queued without images
    flush_s: float = 1.0  # seconds between chunk flushes: the most a crash can lose
    chunk_bytes: int = 1 << 20  # a chunk also closes when it grows past this (bytes, uncompressed)
    fsync: bool = True  # push each flush to the storage device too, so a power cut keeps it

    def __post_init__(self):
        if not (1 <= self.jpeg_quality <= 100):
            raise ValueError(f"jpeg_quality {self.jpeg_quality} must be 1..100")
        if self.queue_ticks < 2:
            raise ValueError("queue_ticks must be >= 2")
        if not (0 < self.image_watermark <= 1):
            raise ValueError("image_watermark must be in (0, 1]")
        if not (0 < self.flush_s <= 10):
            raise ValueError("flush_s must be in (0, 10] seconds")
        if self.chunk_bytes < 1024:
            raise ValueError("chunk_bytes must be >= 1024")


class TickRecord(NamedTuple):
    """One tick as the loop saw it: only references the loop already holds, so queueing it costs
    microseconds (a NamedTuple builds ~10x faster than a frozen dataclass). Frames are immutable by
    contract (a camera hands out a new array per frame) and the loop never mutates the others."""

    slot: int  # deadline slot index
    t: float  # seconds, the scheduler clock at the start of the tick
    images: dict[str, np.ndarray]  # camera name -> uint8 RGB [H, W, 3]
    joints: np.ndarray  # [J] measured joint positions (rad / m)
    gripper: float  # measured gripper opening (0 closed .. 1 open)
    desired: np.ndarray | None  # [D] the policy's action for this slot, None when starved
    safe: np.ndarray  # [D] the action after the safety layer
    sent_joints: np.ndarray  # [J] joint targets the arm was sent
    sent_gripper: float  # gripper opening the gripper was sent
    sent: np.ndarray  # [D] action-space equivalent of what was sent
    interventions: tuple[str, ...] = ()  # safety limits that changed the action
    held: bool = False  # the desired action was rejected and the robot held
    chunk: int = -1  # inference id whose chunk produced the action (-1: none)
    chunk_step: int = -1  # index of the action within that chunk
    inference: int = -1  # inference id started at this tick (-1: none)
    stages: dict[str, float] | None = None  # this tick's loop stages so far, seconds
    deadline_miss: bool = False  # the work ran past the next deadline


@dataclass
class RecordingSummary:
    path: Path
    ticks: int = 0  # ticks written
    dropped_ticks: int = 0  # ticks lost to a full queue
    dropped_images: int = 0  # ticks written without their images because the writer lagged
    bytes: int = 0  # file size
    error: str = ""  # set when the writer failed (disk full, ...); the file holds what came before

    def line(self) -> str:
        mb = self.bytes / 1e6
        text = f"recorded: {self.path} ({self.ticks} ticks, {mb:.1f} MB, dropped ticks {self.dropped_ticks}"
        text += f", ticks without images {self.dropped_images})"
        return text + (f" - writer failed: {self.error}" if self.error else "")


def next_episode_path(root: str | Path) -> Path:
    """The first unused DIR/episode_NNNNNN.mcap."""
    root = Path(root)
    taken = {p.stem for p in root.glob("episode_*")} if root.is_dir() else set()
    i = 0
    while f"episode_{i:06d}" in taken:
        i += 1
    return root / f"episode_{i:06d}.mcap"


def runtime_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("vla-runtime", "onnxruntime", "mcap"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


class FlightRecorder:
    """Bounded queue in front of an MCAP writer thread; `open()` before tick 0, `close()` after."""

    def __init__(self, root: str | Path, run: fmt.RunInfo, config: RecorderConfig | None = None,
                 attachments: dict[str, tuple[str, bytes]] | None = None):
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise ValueError(f"--record {root}: exists and is not a directory; pass a directory path")
        fmt.require_record_deps()
        self.root, self.run, self.config = root, run, config or RecorderConfig()
        self.attachments = dict(attachments or {})  # name -> (media type, bytes)
        # A deque, not queue.Queue: append and popleft are atomic under the GIL, so the tick never
        # waits on a lock that a descheduled writer thread happens to hold; the writer polls instead.
        self._queue: deque = deque()
        self._watermark = max(1, int(self.config.queue_ticks * self.config.image_watermark))
        self.summary: RecordingSummary | None = None
        self._thread: threading.Thread | None = None
        self._t0: float | None = None  # scheduler-clock seconds of the first tick
        self._wall0_ns = 0  # wall-clock ns matching _t0, so viewers show real dates

    @property
    def path(self) -> Path | None:
        return self.summary.path if self.summary else None

    # -- the loop's side -----------------------------------------------------------------------
    def record(self, tick: TickRecord) -> bool:
        """Queue one tick without blocking; False when it had to be dropped."""
        if self._t0 is None:
            self._t0, self._wall0_ns = tick.t, time.time_ns()
        queued = len(self._queue)
        if queued >= self.config.queue_ticks:
            self.summary.dropped_ticks += 1
            return False
        stripped = bool(tick.images) and queued >= self._watermark
        if stripped:
            tick = tick._replace(images={})
        self._queue.append(tick)
        self.summary.dropped_images += stripped
        return True

    def event(self, t: float | None, text: str, level: str = "warning") -> None:
        """A line for /vla/events (a failed bus tick, a fault) at scheduler time t; never blocks."""
        if self.summary is not None and len(self._queue) < 2 * self.config.queue_ticks:
            self._queue.append(("event", text, level, t))

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> Path:
        """Create the file, its schemas, channels, metadata and attachments; start the writer."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = next_episode_path(self.root)
        self.summary = RecordingSummary(path)
        self._writer = _McapTickWriter(path, self.run, self.config, self.attachments)
        self._thread = threading.Thread(target=self._drain, name="recorder", daemon=True)
        self._thread.start()
        logger.info("recording to %s", path)
        return path

    def close(self, stop_reason: str = "") -> RecordingSummary:
        """Write what is queued, the closing event and the summary section; returns the totals."""
        assert self.summary is not None, "open() first"
        if self._thread is not None:
            self._queue.append(("event", self._closing_text(stop_reason), "info", None))
            self._queue.append(None)
            self._thread.join()
            self._thread = None
            try:
                self._writer.finish()
            except Exception as exc:  # noqa: BLE001 - reported; the chunks already on disk stay readable
                self.summary.error = self.summary.error or f"{type(exc).__name__}: {exc}"
            self.summary.bytes = self.summary.path.stat().st_size if self.summary.path.exists() else 0
        return self.summary

    # -- the writer thread ---------------------------------------------------------------------
    def _drain(self) -> None:
        flush_s, last_flush = self.config.flush_s, time.monotonic()
        while True:
            try:
                item = self._queue.popleft()
            except IndexError:  # nothing queued: wait a little, and still flush on time
                item = ()
                time.sleep(min(POLL_S, max(0.0, last_flush + flush_s - time.monotonic())))
            if item is None:
                return
            if isinstance(item, TickRecord):
                if self._guarded(self._writer.write_tick, item, self._log_ns(item.t), item.t - self._t0):
                    self.summary.ticks += 1
            elif item:
                _, text, level, t = item
                self._guarded(self._writer.write_event, text, level, self._log_ns(t))
            if time.monotonic() - last_flush >= flush_s:
                self._guarded(self._writer.flush)
                last_flush = time.monotonic()

    def _guarded(self, write, *args) -> bool:
        """Run one write; after a failure (disk full, ...) stop writing but keep draining the queue."""
        if self.summary.error:
            return False
        try:
            write(*args)
        except Exception as exc:  # noqa: BLE001 - the robot keeps running; the loss is reported
            self.summary.error = f"{type(exc).__name__}: {exc}"
            logger.error("recorder stopped writing: %s", self.summary.error)
            return False
        return True

    def _log_ns(self, t: float | None) -> int:
        if self._t0 is None or t is None:
            return time.time_ns()
        return self._wall0_ns + int(round((t - self._t0) * 1e9))

    def _closing_text(self, stop_reason: str) -> str:
        s = self.summary
        return (f"episode ended: {stop_reason or 'closed'}; ticks dropped {s.dropped_ticks}, "
                f"ticks without images {s.dropped_images}")


class _McapTickWriter:
    """Owns the MCAP writer and file; used only by the writer thread after construction."""

    def __init__(self, path: Path, run: fmt.RunInfo, config: RecorderConfig,
                 attachments: dict[str, tuple[str, bytes]]):
        from mcap.writer import CompressionType, Writer
        from mcap_protobuf.schema import register_schema

        self.config, self.run = config, run
        self.pb = fmt.proto_classes()
        self._file = open(path, "xb")  # noqa: SIM115 - closed in finish()
        self._writer = Writer(self._file, chunk_size=config.chunk_bytes, compression=CompressionType.ZSTD)
        # mcap 1.x closes chunks only by size; ending one on time needs its private finaliser
        self._end_chunk = getattr(self._writer, "_Writer__finalize_chunk", None)
        if self._end_chunk is None:
            logger.warning("this mcap version cannot close chunks on time; a crash may lose up to %d bytes",
                           config.chunk_bytes)
        w = self._writer
        w.start(profile="", library=f"vla-runtime {fmt.FORMAT}")
        image_class = self.pb["RawImage"] if config.raw_images else self.pb["CompressedImage"]
        image_schema = register_schema(w, image_class)
        joints_schema = register_schema(w, self.pb["JointStates"])
        log_schema = register_schema(w, self.pb["Log"])
        tick_schema = w.register_schema("vla.Tick", "jsonschema", json.dumps(fmt.TICK_SCHEMA).encode())
        self.cameras = {name: w.register_channel(fmt.camera_topic(name), "protobuf", image_schema)
                        for name in run.cameras}
        self.joints = w.register_channel(fmt.TOPIC_JOINTS, "protobuf", joints_schema)
        self.command = w.register_channel(fmt.TOPIC_COMMAND, "protobuf", joints_schema)
        self.tick = w.register_channel(fmt.TOPIC_TICK, "json", tick_schema)
        self.events = w.register_channel(fmt.TOPIC_EVENTS, "protobuf", log_schema)
        w.add_metadata(fmt.RUN_METADATA, run.to_metadata(runtime_versions(), config.raw_images))
        now = time.time_ns()
        for name, (media_type, data) in attachments.items():
            w.add_attachment(create_time=now, log_time=now, name=name, media_type=media_type, data=data)
        self.joint_names = (*run.joint_names, "gripper")
        self.flush()
        self._unknown_cameras: set[str] = set()

    def write_tick(self, tick: TickRecord, log_ns: int, t: float) -> None:
        w, pb, seq = self._writer, self.pb, tick.slot & 0xFFFFFFFF
        for name, image in tick.images.items():
            channel = self.cameras.get(name)
            if channel is None:
                if name not in self._unknown_cameras:
                    self._unknown_cameras.add(name)
                    logger.warning("recorder: camera %r was not declared at open; its frames are not recorded", name)
                continue
            data = fmt.encode_image(pb, image, log_ns, name, self.config.raw_images, self.config.jpeg_quality)
            w.add_message(channel, log_ns, data, log_ns, seq)
        state = np.append(tick.joints, tick.gripper)  # [J + 1]
        sent_joints = np.append(tick.sent_joints, tick.sent_gripper)  # [J + 1]
        w.add_message(self.joints, log_ns, fmt.encode_joints(pb, self.joint_names, state, log_ns), log_ns, seq)
        w.add_message(self.command, log_ns, fmt.encode_joints(pb, self.joint_names, sent_joints, log_ns), log_ns, seq)
        record = {
            "slot": int(tick.slot), "t": round(float(t), 6), "state": _floats(state),
            "desired": None if tick.desired is None else _floats(tick.desired), "safe": _floats(tick.safe),
            "sent": _floats(tick.sent), "interventions": list(tick.interventions), "held": bool(tick.held),
            "starved": tick.desired is None, "chunk": int(tick.chunk), "chunk_step": int(tick.chunk_step),
            "inference": int(tick.inference),
            "stages_ms": {k: round(v * 1e3, 4) for k, v in (tick.stages or {}).items()},
            "deadline_miss": bool(tick.deadline_miss),
        }
        w.add_message(self.tick, log_ns, fmt.encode_tick(record), log_ns, seq)

    def write_event(self, text: str, level: str, log_ns: int) -> None:
        self._writer.add_message(self.events, log_ns, fmt.encode_event(self.pb, text, level, log_ns), log_ns)

    def flush(self) -> None:
        """Close the open chunk and push everything written so far to the OS (and the device)."""
        if self._end_chunk is not None:
            self._end_chunk()
        self._file.flush()
        if self.config.fsync:
            os.fsync(self._file.fileno())

    def finish(self) -> None:
        try:
            self._writer.finish()
        finally:
            self._file.close()


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
