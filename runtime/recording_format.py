"""The flight-recording format: topics, schemas and pure message codecs.

One MCAP file per episode. Every channel uses a schema a viewer already knows, so Foxglove
and Rerun open a recording without plugins:

    /camera/<name>        foxglove.CompressedImage (JPEG, default) or foxglove.RawImage (rgb8,
                          `--record-raw`, lossless for calibration)
    /robot/joint_states   foxglove.JointStates   measured joints, plus "gripper" (0 closed..1 open)
    /robot/command        foxglove.JointStates   what the drivers were sent
    /vla/tick             JSON + JSON Schema `vla.Tick` (TICK_SCHEMA): the policy's desired action,
                          what safety changed and why, the sent action, chunk and inference ids,
                          per-stage milliseconds and the deadline miss
    /vla/events           foxglove.Log           how the episode ended, dropped ticks

All messages of one tick share its log time and carry the tick's slot index as the MCAP
message `sequence`, which is how readers join them back into ticks. A `run` metadata record
holds the task, bundle, robot and versions; the bundle manifest and robot file are attachments.

Codecs here are pure (values in, bytes out, and back); the writer thread and the readers do
the I/O. The MCAP and protobuf packages are imported on first use, so the control loop and
every other command work on a robot without the `record` extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from vla_runtime.common.cli import missing_dependency, require_modules

FORMAT = "vla-runtime-recording/1"  # metadata["format"]; bump on incompatible changes
RUN_METADATA = "run"  # name of the MCAP metadata record
TOPIC_JOINTS = "/robot/joint_states"
TOPIC_COMMAND = "/robot/command"
TOPIC_TICK = "/vla/tick"
TOPIC_EVENTS = "/vla/events"
CAMERA_PREFIX = "/camera/"
INSTALL_HINT = "pip install 'vla-runtime[record]'"

# JSON Schema of /vla/tick; Foxglove plots any numeric path (e.g. /vla/tick.desired[0]).
TICK_SCHEMA = {
    "title": "vla.Tick",
    "type": "object",
    "properties": {
        "slot": {"type": "integer", "description": "deadline slot index of the tick"},
        "t": {"type": "number", "description": "seconds since the episode's first tick"},
        "state": {"type": "array", "items": {"type": "number"}, "description": "joints then gripper"},
        "desired": {"type": ["array", "null"], "items": {"type": "number"},
                    "description": "the policy's action for this slot (action units); null when starved"},
        "safe": {"type": "array", "items": {"type": "number"}, "description": "the action after safety"},
        "sent": {"type": "array", "items": {"type": "number"},
                 "description": "action-space equivalent of what the drivers were sent"},
        "interventions": {"type": "array", "items": {"type": "string"}, "description": "limits that changed it"},
        "held": {"type": "boolean", "description": "desired action rejected; the robot held position"},
        "starved": {"type": "boolean", "description": "no chunk step for this slot; the robot held"},
        "chunk": {"type": "integer", "description": "inference id whose chunk gave this action (-1: none)"},
        "chunk_step": {"type": "integer", "description": "index of the action within its chunk"},
        "inference": {"type": "integer", "description": "inference id started at this tick (-1: none)"},
        "stages_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        "deadline_miss": {"type": "boolean", "description": "the tick's work ran past the next deadline"},
    },
}


class RecordDepsMissing(ImportError):
    """The `record` extra is not installed; the message says how to install it."""


def proto_classes():
    """The Foxglove protobuf message classes used by the recorder (imported on first use)."""
    try:
        from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
        from foxglove_schemas_protobuf.JointStates_pb2 import JointStates
        from foxglove_schemas_protobuf.Log_pb2 import Log
        from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
    except ImportError as exc:
        if missing_dependency(exc) is None:
            raise
        raise _missing(missing_dependency(exc)) from None
    return {"CompressedImage": CompressedImage, "RawImage": RawImage, "JointStates": JointStates, "Log": Log}


def require_record_deps() -> None:
    """Raise RecordDepsMissing (one line with the install command) unless MCAP writing works."""
    require_modules("mcap.writer", "mcap_protobuf.schema", error=_missing)
    proto_classes()


def _missing(name: str) -> RecordDepsMissing:
    return RecordDepsMissing(f"recording needs {name}; {INSTALL_HINT}")


def camera_topic(name: str) -> str:
    return CAMERA_PREFIX + name


# -- images ------------------------------------------------------------------------------------


def encode_image(pb, image: np.ndarray, log_ns: int, frame_id: str, raw: bool, quality: int) -> bytes:
    """uint8 RGB [H, W, 3] -> serialized foxglove.CompressedImage (JPEG) or RawImage (rgb8)."""
    h, w = image.shape[:2]
    if raw:
        msg = pb["RawImage"](frame_id=frame_id, width=w, height=h, encoding="rgb8", step=3 * w,
                             data=np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    else:
        import cv2

        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"JPEG encoding failed for a {image.shape} frame")
        msg = pb["CompressedImage"](frame_id=frame_id, format="jpeg", data=buf.tobytes())
    msg.timestamp.FromNanoseconds(log_ns)
    return msg.SerializeToString()


def decode_image(pb, schema_name: str, data: bytes) -> np.ndarray:
    """A recorded image message -> uint8 RGB [H, W, 3]."""
    if schema_name == "foxglove.RawImage":
        msg = pb["RawImage"].FromString(data)
        if msg.encoding != "rgb8":
            raise ValueError(f"RawImage encoding {msg.encoding!r} is not rgb8")
        rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
        return rows[:, : 3 * msg.width].reshape(msg.height, msg.width, 3).copy()
    if schema_name == "foxglove.CompressedImage":
        import cv2

        msg = pb["CompressedImage"].FromString(data)
        bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot decode a {msg.format!r} CompressedImage")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raise ValueError(f"not an image schema: {schema_name!r}")


def encoded_image_bytes(pb, schema_name: str, data: bytes) -> tuple[str, bytes] | None:
    """(format, bytes) of a CompressedImage, to copy without re-encoding; None for raw images."""
    if schema_name != "foxglove.CompressedImage":
        return None
    msg = pb["CompressedImage"].FromString(data)
    return msg.format, bytes(msg.data)


# -- joints, ticks, events ---------------------------------------------------------------------


def encode_joints(pb, names: tuple[str, ...], positions: np.ndarray, log_ns: int) -> bytes:
    """Joint positions [J] (rad / m, then the gripper opening) -> serialized foxglove.JointStates."""
    msg = pb["JointStates"]()
    msg.timestamp.FromNanoseconds(log_ns)
    for name, value in zip(names, positions, strict=True):
        msg.joints.add(name=name, position=float(value))
    return msg.SerializeToString()


def decode_joints(pb, data: bytes) -> np.ndarray:
    msg = pb["JointStates"].FromString(data)
    return np.array([j.position for j in msg.joints], dtype=np.float64)


def encode_tick(tick: dict) -> bytes:
    return json.dumps(tick, separators=(",", ":"), allow_nan=True).encode()


def decode_tick(data: bytes) -> dict:
    return json.loads(data)


LOG_LEVELS = {"info": 2, "warning": 3, "error": 4}  # foxglove.Log.Level values


def encode_event(pb, text: str, level: str, log_ns: int) -> bytes:
    msg = pb["Log"](level=LOG_LEVELS[level], message=text, name="vla-runtime")
    msg.timestamp.FromNanoseconds(log_ns)
    return msg.SerializeToString()


@dataclass(frozen=True)
class RunInfo:
    """What an episode was: written once as the `run` metadata record (all values strings)."""

    task: str  # the instruction given to the policy
    rate_hz: float  # control rate
    bundle: str  # bundle path or name ("scripted" for the reference policy)
    bundle_id: str  # the bundle's seal (or manifest digest): which exact files drove the robot
    robot: str  # robot name from its description
    robot_file: str  # the robot TOML it was read from
    cameras: tuple[str, ...]  # camera names, one /camera/<name> channel each
    joint_names: tuple[str, ...]  # measured joints, in state order (the gripper follows)
    action_names: tuple[str, ...]  # action dimensions (the bundle's action.names)
    action_kind: str  # ee_delta | joint_position
    action_units: tuple[str, ...] = ()  # physical unit per action dimension, when the bundle says

    def __post_init__(self):
        if not self.cameras:
            raise ValueError("a recording needs at least one camera")
        if not (self.rate_hz > 0):
            raise ValueError(f"rate_hz must be > 0, got {self.rate_hz}")

    def to_metadata(self, versions: dict[str, str], raw: bool) -> dict[str, str]:
        return {
            "format": FORMAT, "task": self.task, "rate_hz": repr(float(self.rate_hz)), "bundle": self.bundle,
            "bundle_id": self.bundle_id, "robot": self.robot, "robot_file": self.robot_file,
            "cameras": json.dumps(list(self.cameras)), "joint_names": json.dumps(list(self.joint_names)),
            "action_names": json.dumps(list(self.action_names)), "action_kind": self.action_kind,
            "action_units": json.dumps(list(self.action_units)), "images": "rgb8" if raw else "jpeg",
            **{f"version.{k}": v for k, v in versions.items()},
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> RunInfo:
        if meta.get("format") != FORMAT:
            raise ValueError(f"recording format {meta.get('format')!r}; this runtime reads {FORMAT!r}")
        lists = {k: tuple(json.loads(meta.get(k, "[]"))) for k in
                 ("cameras", "joint_names", "action_names", "action_units")}
        return cls(task=meta["task"], rate_hz=float(meta["rate_hz"]), bundle=meta.get("bundle", ""),
                   bundle_id=meta.get("bundle_id", ""), robot=meta.get("robot", ""),
                   robot_file=meta.get("robot_file", ""), action_kind=meta.get("action_kind", ""), **lists)
