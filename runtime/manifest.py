"""The bundle manifest: every fact the onboard runtime needs, checked before anything moves.

The manifest is the contract between `vla-export` (which writes it) and `vla-runtime` (which
refuses to run anything it cannot fully validate). It is plain JSON so a robot can read it
with the standard library; this module turns it into frozen dataclasses and names the exact
field that is wrong when it is not.

Graph roles and their tensors (batch is always 1 on the robot):

- ``resize``   (optional, `vla-export resize-graph`) image u8 [H,W,3], resize_rows f32 [S,H],
               resize_cols f32 [W,S] -> pixel_values f32 [1,3,S,S]: the camera frame's resize,
               rescale and normalise on the accelerator; without it the host preprocesses
- ``vision``   pixel_values f32 [1,3,S,S]             -> image_embeds f32 [1,N,E]
- ``prefill``  image_embeds f32 [1,N,E], input_ids i64 [1,T]
               -> one or more of: hidden_states f32 [1,N+T,E] (flow context),
                  pooled f32 [1,E] (parallel head input), action_logits f32 [1,256]
                  (tokens head: next-token logits over the action ids),
                  present.{i}.key / present.{i}.value f32 [1,KV,N+T,Dh] (tokens head)
- ``decode``   input_ids i64 [1,1], position_ids i64 [1,1],
               past_key_values.{i}.key / .value f32 [1,KV,P,Dh]
               -> action_logits f32 [1,256], present.{i}.key / .value [1,KV,P+1,Dh]
- ``head``     pooled f32 [1,E] (+ past_action i64 [1,D] when conditioned)
               -> action_logits f32 [1,H,D,256]
- ``velocity`` context f32 [1,L,E], noisy_actions f32 [1,H,D], timestep f32 [1]
               -> velocity f32 [1,H,D]

pi0 head (LeRobot pi0 / pi0.5, see `runtime/kv_flow.py`): ``vision`` runs once per camera view;
``prefill`` takes the views' image_embeds concatenated [1,C*N,E], input_ids and prompt_mask
i64 [1,T] (padded to prompt.max_tokens) -> present.{i}.key/value [1,KV,L,Dh]; ``expert`` takes
past_key_values.{i}.*, prefix_mask i64 [1,L], (pi0: state f32 [1,Sp]), noisy_actions
f32 [1,H,Ap], time_embedding f32 [1,W] -> velocity f32 [1,H,Ap] (Sp, Ap: padded widths).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_runtime.runtime.conventions import NORMALIZATION_FIELDS, NORMALIZATIONS, TOKEN_ORDERS
from vla_runtime.runtime.manifest_bounds import (
    MANIFEST_NAME,
    MAX_DIM,
    MAX_FILES,
    MAX_TENSORS,
    ManifestError,
    read_manifest_doc,
)
from vla_runtime.runtime.manifest_bounds import bounded as _bounded
from vla_runtime.runtime.manifest_bounds import rel_path as _rel_path
from vla_runtime.runtime.manifest_bounds import text as _text
from vla_runtime.runtime.seal import SEAL_KEY, SealError, check_seal, make_seal

SCHEMA_VERSION = 1


BUILT_IN_HEADS = ("tokens", "parallel", "flow")  # heads of the embedded reference model (default bundles)
HEADS = BUILT_IN_HEADS + ("pi0",)  # pi0: LeRobot pi0 / pi0.5 (vla-export build --from-lerobot)
GRAPH_ROLES = ("resize", "vision", "prefill", "decode", "head", "velocity", "expert")
OPTIONAL_GRAPHS = ("resize",)  # run first when a bundle has them; older bundles do without
# Which graphs each head needs, in the order one inference runs them.
HEAD_GRAPHS = {
    "tokens": ("vision", "prefill", "decode"),
    "parallel": ("vision", "prefill", "head"),
    "flow": ("vision", "prefill", "velocity"),
    "pi0": ("vision", "prefill", "expert"),  # LeRobot pi0 / pi0.5: Euler steps over the prefix KV cache
}


def run_roles(manifest: Manifest) -> tuple[str, ...]:
    """The graphs one inference runs, in order: the bundle's optional ones, then the head's."""
    return tuple(r for r in OPTIONAL_GRAPHS if r in manifest.graphs) + HEAD_GRAPHS[manifest.head]


PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int8-cpu")
GRAPH_FORMATS = ("onnx", "tensorrt")
DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8")

DEFAULT_CAMERA_VIEWS = ("front",)  # bundles without preprocess.camera_views read the robot's [cameras.front]
MAX_VIEWS = 8  # cameras one bundle may read
STATE_INPUT = "state"  # a graph input of this name receives the normalised robot state f32 [1, S]


# ---------------------------------------------------------------------------------------------
# Dataclasses. Field comments give units; validation lives in __post_init__.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    name: str  # graph input/output name, e.g. "past_key_values.0.key"
    dtype: str  # one of DTYPES
    shape: tuple  # ints for fixed dims, strings for symbolic dims ("seq", "past")

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ManifestError(f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")
        _text(f"tensor {self.name[:40]!r} name", self.name, 256)
        _bounded(f"tensor {self.name!r} rank", len(self.shape), 0, 8)
        for d in self.shape:
            if isinstance(d, str):
                _text(f"tensor {self.name!r} symbolic dim", d, 64)
            elif isinstance(d, bool) or not isinstance(d, int):
                raise ManifestError(f"tensor {self.name!r}: shape holds {d!r}; dims are ints or names")
            else:
                _bounded(f"tensor {self.name!r} dim", d, 0, MAX_DIM)


@dataclass(frozen=True)
class GraphSpec:
    role: str  # one of GRAPH_ROLES
    file: str  # path relative to the bundle root
    format: str = "onnx"  # "onnx" or "tensorrt" (a serialized engine)
    precision: str = "fp32"  # one of PRECISIONS; "int8-cpu" graphs use contrib ops TensorRT cannot parse
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    data_files: tuple[str, ...] = ()  # external-data side files that belong to this graph

    def __post_init__(self):
        if self.role not in GRAPH_ROLES:
            raise ManifestError(f"graphs.{self.role}: unknown role; expected one of {GRAPH_ROLES}")
        if self.format not in GRAPH_FORMATS:
            raise ManifestError(f"graphs.{self.role}.format: {self.format!r} is not one of {GRAPH_FORMATS}")
        if self.precision not in PRECISIONS:
            raise ManifestError(f"graphs.{self.role}.precision: {self.precision!r} is not one of {PRECISIONS}")
        _rel_path(f"graphs.{self.role}.file", self.file)
        _bounded(f"graphs.{self.role}.data_files count", len(self.data_files), 0, 64)
        for i, rel in enumerate(self.data_files):
            _rel_path(f"graphs.{self.role}.data_files[{i}]", rel)
        for key in ("inputs", "outputs"):
            _bounded(f"graphs.{self.role}.{key} count", len(getattr(self, key)), 0, MAX_TENSORS)

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(f"graph {self.role!r} has no input {name!r}")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)


@dataclass(frozen=True)
class Preprocess:
    image_size: int  # pixels; square input side S the vision graph expects
    rescale_factor: float  # multiply uint8 pixels by this (1/255 for SigLIP)
    image_mean: tuple[float, float, float]  # per RGB channel, after rescale
    image_std: tuple[float, float, float]  # per RGB channel, after rescale
    resample: str = "bilinear"  # interpolation used by the exported processor
    # the robot's [cameras.NAME] views, in order: each runs through the vision graph and the
    # image embeddings enter the prefix concatenated in this order
    camera_views: tuple[str, ...] = DEFAULT_CAMERA_VIEWS
    view_sizes: tuple[int, ...] = ()  # pixels per view (camera_views order); empty: image_size for every view

    def __post_init__(self):
        if not self.camera_views or len(set(self.camera_views)) != len(self.camera_views):
            raise ManifestError(f"preprocess.camera_views must name distinct views, got {list(self.camera_views)}")
        _bounded("preprocess.camera_views count", len(self.camera_views), 1, MAX_VIEWS)
        for view in self.camera_views:
            _text("preprocess.camera_views", view, 64)
        if self.view_sizes and len(self.view_sizes) != len(self.camera_views):
            raise ManifestError(
                f"preprocess.view_sizes has {len(self.view_sizes)} sizes for {len(self.camera_views)} camera_views; "
                "give one per view or none"
            )
        for size in self.view_sizes:
            _bounded("preprocess.view_sizes (pixels)", size, 1, 4096)
        _bounded("preprocess.image_size (pixels)", self.image_size, 1, 4096)
        _bounded("preprocess.rescale_factor", self.rescale_factor, 1e-6, 1.0)
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ManifestError("preprocess.image_mean / image_std need 3 values (R, G, B)")
        for key in ("image_mean", "image_std"):
            for v in getattr(self, key):
                _bounded(f"preprocess.{key}", v, -1e3, 1e3)
        if any(s <= 0 for s in self.image_std):
            raise ManifestError("preprocess.image_std values must be > 0")
        if self.resample not in ("bilinear", "bicubic", "nearest"):
            raise ManifestError(f"preprocess.resample: {self.resample!r} is not bilinear|bicubic|nearest")

    def size_of(self, view: str) -> int:
        """Square input side S (pixels) of one view."""
        return self.view_sizes[self.camera_views.index(view)] if self.view_sizes else self.image_size


@dataclass(frozen=True)
class Prompt:
    template: str  # contains "{task}", e.g. "What action should the robot take to {task}?"
    tokenizer_file: str  # a `tokenizers` JSON file inside the bundle
    bos_token_id: int | None = None  # prepended when not None
    max_tokens: int = 48  # prompts are truncated to this many ids, BOS included

    def __post_init__(self):
        if "{task}" not in self.template:
            raise ManifestError("prompt.template must contain the placeholder {task}")
        _text("prompt.template", self.template, 4096)
        _rel_path("prompt.tokenizer_file", self.tokenizer_file)
        _bounded("prompt.max_tokens", self.max_tokens, 2, 8192)
        if self.bos_token_id is not None:
            _bounded("prompt.bos_token_id", self.bos_token_id, 0, MAX_DIM)


@dataclass(frozen=True)
class Normalization:
    kind: str  # "q01_q99" (OpenVLA: [-1,1] <-> [q01,q99]), "mean_std", or "none"
    low: tuple[float, ...] = ()  # q01 per dim (q01_q99)
    high: tuple[float, ...] = ()  # q99 per dim (q01_q99)
    mean: tuple[float, ...] = ()  # per dim (mean_std)
    std: tuple[float, ...] = ()  # per dim (mean_std)
    mask: tuple[bool, ...] = ()  # False leaves that dim in model units (e.g. a gripper already in [0,1])


def _check_normalization(where: str, n: Normalization, dim: int) -> None:
    """The statistics of `dim` values (actions or state), checked alike."""
    if n.kind not in NORMALIZATIONS:
        raise ManifestError(f"{where}.normalization.kind: {n.kind!r} is not one of {NORMALIZATIONS}")
    wanted = NORMALIZATION_FIELDS[n.kind]
    for key in wanted + (("mask",) if n.mask else ()):
        values = getattr(n, key)
        if len(values) != dim:
            raise ManifestError(f"{where}.normalization.{key} needs {dim} values, got {len(values)}")
        if key != "mask" and not all(math.isfinite(v) for v in values):
            raise ManifestError(f"{where}.normalization.{key} holds a non-finite value")
        for v in values if key != "mask" else ():
            _bounded(f"{where}.normalization.{key}", v, -1e6, 1e6)
    if n.kind == "q01_q99" and any(lo >= hi for lo, hi in zip(n.low, n.high, strict=True)):
        raise ManifestError(f"{where}.normalization: every low (q01) must be below its high (q99)")
    if n.kind == "mean_std" and any(s <= 0 for s in n.std):
        raise ManifestError(f"{where}.normalization.std values must be > 0")


@dataclass(frozen=True)
class ActionSpace:
    dim: int  # D: numbers per action step
    horizon: int  # H: steps per predicted chunk (tokens head: 1)
    # D names, e.g. ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"); joint-position
    # bundles name the joints in their order (then "gripper"): the robot must match (joint_contract)
    names: tuple[str, ...]
    units: tuple[str, ...]  # D units, e.g. ("m", "m", "m", "rad", "rad", "rad", "open")
    kind: str  # "ee_delta" (end-effector deltas + gripper) or "joint_position"
    normalization: Normalization
    bins: int = 256  # discrete bins per dim over [-1, 1] (tokens, parallel)
    action_token_offset: int = 0  # vocabulary id of bin 0 (tokens head: vocab_size - bins)
    action_token_order: str = "ascending"  # bin j is id offset + j, or offset - j ("descending", OpenVLA)
    # model-space value of each bin, in bin order; empty (bundles before it was recorded): the
    # uniform centres over [-1, 1] (conventions.bin_centres), which is also what OpenVLA's 255 are
    bin_centres: tuple[float, ...] = ()

    def __post_init__(self):
        _bounded("action.dim", self.dim, 1, 64)
        _bounded("action.horizon (steps)", self.horizon, 1, 1024)
        _bounded("action.bins", self.bins, 2, 65536)
        _bounded("action.action_token_offset", self.action_token_offset, 0, MAX_DIM)
        if len(self.names) != self.dim or len(self.units) != self.dim:
            raise ManifestError(f"action.names and action.units need {self.dim} entries (action.dim)")
        if self.kind not in ("ee_delta", "joint_position"):
            raise ManifestError(f"action.kind: {self.kind!r} is not ee_delta|joint_position")
        _check_normalization("action", self.normalization, self.dim)
        for key in ("names", "units"):
            for text in getattr(self, key):
                _text(f"action.{key}", text, 64)
        if self.action_token_order not in TOKEN_ORDERS:
            raise ManifestError(f"action.action_token_order: {self.action_token_order!r} is not one of {TOKEN_ORDERS}")
        if self.bin_centres and len(self.bin_centres) != self.bins:
            raise ManifestError(f"action.bin_centres needs {self.bins} values, got {len(self.bin_centres)}")
        for v in self.bin_centres:
            _bounded("action.bin_centres", v, -1e3, 1e3)


@dataclass(frozen=True)
class StateSpace:
    """The measured robot state the graphs read, in order; empty when they read none.

    The runtime builds the vector from the robot's measured joint positions (in the bundle's
    joint order, checked like the actions by `joint_contract`) and, when the last name is
    "gripper", the gripper opening; it normalises it with these statistics and feeds it as
    f32 [1, S] to every graph that declares an input named `state`.
    """

    names: tuple[str, ...] = ()  # joint names in the bundle's order, then "gripper" if read
    units: tuple[str, ...] = ()  # "rad" / "m" per joint, "open" for the gripper
    # physical -> model space, as the policy was trained (q01/q99 to [-1, 1], or mean/std)
    normalization: Normalization = field(default_factory=lambda: Normalization(kind="none"))

    def __post_init__(self):
        if len(self.names) != len(self.units):
            raise ManifestError("state.names and state.units need one entry per state dimension")
        _bounded("state dimensions", len(self.names), 0, 64)
        if len(set(self.names)) != len(self.names):
            raise ManifestError(f"state.names must be distinct, got {list(self.names)}")
        for i, (name, unit) in enumerate(zip(self.names, self.units, strict=True)):
            _text("state.names", name, 64)
            if name == "gripper" and (i != len(self.names) - 1 or unit != "open"):
                raise ManifestError('state: "gripper" must be the last state value, in unit "open"')
            if name != "gripper" and unit not in ("rad", "m"):
                raise ManifestError(f"state joint {name!r}: unit {unit!r} is not rad|m")
        _check_normalization("state", self.normalization, len(self.names))

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def has_gripper(self) -> bool:
        return bool(self.names) and self.names[-1] == "gripper"


@dataclass(frozen=True)
class DecodeSettings:
    head: str  # "tokens" | "parallel" | "flow"
    flow_steps: int = 10  # Euler steps from t=1 (noise) to t=0 (flow head)
    noise_seed: int = 0  # seed of the Gaussian start noise (flow head); fixed so runs are repeatable
    condition_on_past_action: bool = False  # parallel head takes the previous action's bins
    num_layers: int = 0  # decoder layers: how many past_key_values pairs the decode graph takes
    num_kv_heads: int = 0  # KV heads per layer
    head_dim: int = 0  # per-head width of the KV cache
    # pi0 head (LeRobot): the expert's padded widths, its time embedding and where the state goes
    action_pad: int = 0  # noisy_actions / velocity width (LeRobot max_action_dim); first action.dim used
    state_pad: int = 0  # state input width (max_state_dim); 0 when the state enters through the prompt
    time_embedding_width: int = 0  # sine-cosine width of the flow time (the expert's hidden size)
    time_periods: tuple[float, ...] = ()  # (min, max) periods of that embedding, in flow-time units
    state_in_prompt: bool = False  # pi0.5: the normalised state is written into the prompt as bins

    def __post_init__(self):
        if self.head not in HEADS:
            raise ManifestError(f"decode.head: {self.head!r} is not one of {HEADS}")
        _bounded("decode.flow_steps", self.flow_steps, 1, 1000)
        _bounded("decode.noise_seed", self.noise_seed, 0, (1 << 63) - 1)
        _bounded("decode.num_layers", self.num_layers, 0, 1024)
        _bounded("decode.num_kv_heads", self.num_kv_heads, 0, 1024)
        _bounded("decode.head_dim", self.head_dim, 0, 4096)


@dataclass(frozen=True)
class Control:
    rate_hz: float = 10.0  # control loop rate the policy was trained for
    replan_every: int = 1  # ticks between inferences; <= action.horizon

    def __post_init__(self):
        if not (0 < self.rate_hz <= 1000):
            raise ManifestError("control.rate_hz must be in (0, 1000]")
        if self.replan_every < 1:
            raise ManifestError("control.replan_every must be >= 1")


@dataclass(frozen=True)
class SafetyDefaults:
    max_translation_step: float = 0.02  # metres per tick the end effector may move
    max_rotation_step: float = 0.15  # radians per tick the end effector may rotate
    workspace_min: tuple[float, float, float] = (-1.0, -1.0, 0.0)  # metres, robot base frame
    workspace_max: tuple[float, float, float] = (1.0, 1.0, 1.0)  # metres, robot base frame
    gripper_min: float = 0.0  # 0 = closed
    gripper_max: float = 1.0  # 1 = open

    def __post_init__(self):
        if self.max_translation_step <= 0 or self.max_rotation_step <= 0:
            raise ManifestError("safety step limits must be > 0")
        _bounded("safety.max_translation_step (m per tick)", self.max_translation_step, 0.0, 1.0)
        _bounded("safety.max_rotation_step (rad per tick)", self.max_rotation_step, 0.0, math.pi)
        for key in ("workspace_min", "workspace_max"):
            if len(getattr(self, key)) != 3:
                raise ManifestError(f"safety.{key} needs 3 values (x, y, z in metres)")
            for v in getattr(self, key):
                _bounded(f"safety.{key} (m)", v, -100.0, 100.0)
        _bounded("safety.gripper_min", self.gripper_min, -1e3, 1e3)
        _bounded("safety.gripper_max", self.gripper_max, -1e3, 1e3)
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max, strict=True)):
            raise ManifestError("safety.workspace_min must be below workspace_max on every axis")
        if self.gripper_min >= self.gripper_max:
            raise ManifestError("safety.gripper_min must be below gripper_max")


@dataclass(frozen=True)
class Target:
    kind: str = "cpu"  # "cpu" (portable ONNX) or "tensorrt" (engines bound to one GPU + TRT version)
    gpu_name: str | None = None
    compute_capability: str | None = None  # e.g. "8.7" (Orin)
    tensorrt_version: str | None = None
    cuda_version: str | None = None

    def __post_init__(self):
        if self.kind not in ("cpu", "tensorrt"):
            raise ManifestError(f"target.kind: {self.kind!r} is not cpu|tensorrt")
        for key in ("gpu_name", "compute_capability", "tensorrt_version", "cuda_version"):
            if getattr(self, key) is not None:
                _text(f"target.{key}", getattr(self, key), 128)


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    model: dict  # identity: name, preset, head, source, parameters
    graphs: dict[str, GraphSpec]  # role -> spec
    preprocess: Preprocess
    prompt: Prompt
    action: ActionSpace
    decode: DecodeSettings
    control: Control
    safety: SafetyDefaults
    target: Target
    files: dict[str, str]  # relative path -> sha256 hex of every bundle file except manifest.json
    parity: dict = field(default_factory=dict)  # export-time parity report (per graph + action level)
    gate: dict | None = None  # INT8 accuracy-gate report; gate["passed"] is the verdict
    versions: dict = field(default_factory=dict)  # tool versions the bundle was built with
    state: StateSpace = field(default_factory=StateSpace)  # robot state the graphs read (none today)

    def __post_init__(self):
        if self.schema_version != SCHEMA_VERSION:
            raise ManifestError(
                f"schema_version {self.schema_version} is not supported (this runtime reads "
                f"{SCHEMA_VERSION}); rebuild the bundle with a matching vla-export"
            )
        _bounded("files count", len(self.files), 1, MAX_FILES)
        for rel, digest in self.files.items():
            _rel_path(f"files[{rel[:60]!r}]", rel)
            if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
                raise ManifestError(f"files[{rel!r}]: expected a sha256 hex digest")
        needed = HEAD_GRAPHS[self.decode.head]
        missing = [r for r in needed if r not in self.graphs]
        if missing:
            raise ManifestError(f"graphs: head {self.decode.head!r} needs graphs {missing}")
        for role, spec in self.graphs.items():
            if spec.file not in self.files:
                raise ManifestError(f"graphs.{role}.file {spec.file!r} has no sha256 entry in files")
            for rel in spec.data_files:
                if rel not in self.files:
                    raise ManifestError(f"graphs.{role}.data_files {rel!r} has no sha256 entry in files")
        if self.prompt.tokenizer_file not in self.files:
            raise ManifestError(f"prompt.tokenizer_file {self.prompt.tokenizer_file!r} has no entry in files")
        if self.control.replan_every > self.action.horizon:
            raise ManifestError("control.replan_every cannot exceed action.horizon")
        _check_inputs(self)

    @property
    def head(self) -> str:
        return self.decode.head

    @property
    def gate_failed(self) -> bool:
        return bool(self.gate) and not self.gate.get("passed", False)

    def to_json(self) -> dict:
        return _to_plain(self)

    # -----------------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        """Build and validate; every error names the JSON path of the bad field.

        The seal (checked by `load_sealed`) is not a manifest field and is ignored here."""
        if isinstance(doc, Mapping) and SEAL_KEY in doc:
            doc = {k: v for k, v in doc.items() if k != SEAL_KEY}
        return _build(cls, doc, "")


def _check_inputs(m: Manifest) -> None:
    """Views and state against the graphs that read them: which graph takes the state, and how
    many image embeddings the prefix expects for that many views (where the shapes are fixed)."""
    readers = [r for r in HEAD_GRAPHS[m.decode.head] if STATE_INPUT in m.graphs[r].input_names]
    width = m.decode.state_pad or m.state.dim  # pi0 pads the state to LeRobot's max_state_dim
    if m.state.names and not readers and not m.decode.state_in_prompt:  # pi0.5 writes it into the prompt
        raise ManifestError(f"state lists {m.state.dim} values but no graph has an input {STATE_INPUT!r}; "
                            "rebuild the bundle or drop state")
    for role in readers:
        if not m.state.names:
            raise ManifestError(f"graphs.{role} reads the robot state but state.names is empty; rebuild the bundle")
        shape = m.graphs[role].input(STATE_INPUT).shape
        if len(shape) != 2 or (isinstance(shape[-1], int) and shape[-1] != width):
            raise ManifestError(f"graphs.{role}.{STATE_INPUT} has shape {list(shape)}; state lists "
                                f"{m.state.dim} values (padded to {width}), so it must be [1, {width}]")
    vision, prefill = m.graphs["vision"], m.graphs["prefill"]
    pixels = vision.input("pixel_values").shape if "pixel_values" in vision.input_names else ()
    for view in m.preprocess.camera_views:
        size = m.preprocess.size_of(view)
        fixed = [d for d in pixels[2:] if isinstance(d, int)]
        if any(d != size for d in fixed):
            raise ManifestError(f"preprocess: view {view!r} is resized to {size} pixels but graphs.vision "
                                f"takes pixel_values {list(pixels)}")
    embeds = [s.shape for s in vision.outputs if s.name == "image_embeds"]
    prefix = [s.shape for s in prefill.inputs if s.name == "image_embeds"]
    if embeds and prefix and len(embeds[0]) == 3 == len(prefix[0]):
        per_view, total = embeds[0][1], prefix[0][1]
        views = len(m.preprocess.camera_views)
        if isinstance(per_view, int) and isinstance(total, int) and per_view * views != total:
            raise ManifestError(f"graphs.prefill takes {total} image embeddings but {views} view(s) of "
                                f"{per_view} give {per_view * views}; preprocess.camera_views does not fit the graphs")


def load_sealed(bundle_dir: str | Path) -> tuple[Manifest, str]:
    """(manifest, seal digest): the seal is checked before any field is trusted."""
    doc = read_manifest_doc(bundle_dir)
    try:
        digest = check_seal(doc)
    except SealError as exc:
        raise ManifestError(str(exc)) from None
    return Manifest.from_json(doc), digest


def load_manifest(bundle_dir: str | Path) -> Manifest:
    return load_sealed(bundle_dir)[0]


def save_manifest(manifest: Manifest, bundle_dir: str | Path) -> Path:
    """Write the manifest with a fresh seal, atomically (a reader sees the old or the new file)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    doc = json.loads(json.dumps(manifest.to_json()))  # seal exactly what a reader will parse back
    doc[SEAL_KEY] = make_seal(doc)
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# Generic typed construction from JSON, with the failing field's path in every message.
# ---------------------------------------------------------------------------------------------

_NESTED = {
    "preprocess": Preprocess,
    "prompt": Prompt,
    "action": ActionSpace,
    "state": StateSpace,
    "normalization": Normalization,
    "decode": DecodeSettings,
    "control": Control,
    "safety": SafetyDefaults,
    "target": Target,
}


def _check_type(value: Any, expected: str, where: str) -> Any:
    """Check a JSON value against a field's annotation (as a string) and coerce containers."""
    ok: bool
    if expected.endswith("| None") and value is None:
        return None
    if expected.startswith("tuple"):
        ok = isinstance(value, list)
        if ok:
            value = tuple(value)
    elif expected.startswith("dict"):
        ok = isinstance(value, dict)
    elif expected == "bool":
        ok = isinstance(value, bool)
    elif expected == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif expected == "str":
        ok = isinstance(value, str)
    elif expected.endswith("| None"):
        if value is None:
            return None
        return _check_type(value, expected[: -len("| None")].strip(), where)
    else:
        ok = True
    if not ok:
        raise ManifestError(f"{where}: expected {expected}, got {type(value).__name__} ({value!r:.60})")
    return value


def _build(cls, doc: Any, where: str):
    label = where or "manifest"
    if not isinstance(doc, Mapping):
        raise ManifestError(f"{label}: expected a JSON object, got {type(doc).__name__}")
    kwargs = {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in known.items():
        path = f"{where}.{name}" if where else name
        if name not in doc:
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if has_default:
                continue
            raise ManifestError(f"{path}: required field is missing")
        value = doc[name]
        if name in _NESTED and cls is not GraphSpec:
            kwargs[name] = _build(_NESTED[name], value, path)
        elif cls is Manifest and name == "graphs":
            if not isinstance(value, Mapping):
                raise ManifestError(f"{path}: expected an object mapping role -> graph")
            kwargs[name] = {role: _build_graph(role, g, f"{path}.{role}") for role, g in value.items()}
        else:
            kwargs[name] = _check_type(value, str(f.type), path)
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise ManifestError(f"{label}: unknown field(s) {unknown}; written by a newer vla-export?")
    try:
        return cls(**kwargs)
    except ManifestError as exc:
        raise ManifestError(str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{label}: {exc}") from None


def _build_graph(role: str, doc: Any, where: str) -> GraphSpec:
    if not isinstance(doc, Mapping):
        raise ManifestError(f"{where}: expected an object")
    doc = dict(doc)
    doc.setdefault("role", role)
    for key in ("inputs", "outputs"):
        specs = doc.get(key, [])
        if not isinstance(specs, list):
            raise ManifestError(f"{where}.{key}: expected a list of tensor specs")
        doc[key] = tuple(_build(TensorSpec, s, f"{where}.{key}[{i}]") for i, s in enumerate(specs))
    inputs, outputs = doc.pop("inputs"), doc.pop("outputs")
    spec = _build(GraphSpec, doc, where)
    return dataclasses.replace(spec, inputs=inputs, outputs=outputs)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj
