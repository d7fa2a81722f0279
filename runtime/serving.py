"""The policy as a server decodes it for remote robots: one wire contract, one serving core.

A robot that runs its policy on a server (`--backend remote`) keeps its camera, tokenizer,
unnormalisation, safety and scheduler; per inference it sends one request and receives one
model-space action chunk. `PolicyWire` is that request and reply, written once here and read
by both ends: the Triton repository writer turns it into the `policy` model's config and the
robot's client builds its tensors from it. Names are the dimensions without the batch axis,
which Triton's dynamic batcher adds when it gathers requests from several robots.

Request (per robot):
- per camera view V (the manifest's `camera_views`, in order) `pixel_values.V` float32
  [3, S_V, S_V]: the preprocessed frame, exactly what the vision graph eats; or `image.V` uint8
  [H, W, 3]: the raw RGB frame, preprocessed on the server (4x fewer bytes at the model's size,
  the same Preprocessor as onboard). Exactly one of the two per view.
- `input_ids` int64 [T]: the prompt ids the robot's own tokenizer made.
- `state` float32 [S] when the bundle reads the robot state: the normalised vector
  (`policy.state_vector`), so the statistics stay on the robot's side of the contract.
- the decoder's extras (`Decoder.extra_inputs`): `noise` float32 [H, D] for a flow head (the
  robot's seeded draw, so remote actions equal local ones), `past_action` int64 [D] for a
  parallel head conditioned on the last executed action.
Reply: `normalized` float32 [H, D] (model space), `bins` int64 [H, D] (-1 for flow) and
`server_s` float64 [1], the seconds the server spent on this row (so the robot can tell the
network and queueing apart from the model).

`ServedPolicy` is the server half: a `BundlePolicy` whose graphs run wherever its runners say
(onnxruntime in-process, or Triton's own models through BLS), fed one robot's row at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from vla_runtime.runtime.decoders import DECODERS, make_decoder
from vla_runtime.runtime.manifest import Manifest

logger = logging.getLogger(__name__)

PIXELS, IMAGE, IDS, STATE = "pixel_values", "image", "input_ids", "state"
NORMALIZED, BINS, SERVER_S = "normalized", "bins", "server_s"
SEAL_PARAMETER = "bundle_seal"  # the policy model's config parameter naming the bundle it serves
FRAME_KINDS = ("pixels", "uint8")  # what a robot sends: the preprocessed frame or the raw RGB one


@dataclass(frozen=True)
class WireTensor:
    name: str
    dtype: str  # numpy dtype name
    dims: tuple[int, ...]  # without the batch axis; -1 = variable
    optional: bool = False  # a request may leave it out (pixel_values / image: one of the two)


@dataclass(frozen=True)
class PolicyWire:
    """The `policy` model's inputs and outputs for one bundle."""

    inputs: tuple[WireTensor, ...]
    outputs: tuple[WireTensor, ...]

    views: tuple[str, ...]  # camera views, in the order the policy reads them

    @classmethod
    def of(cls, manifest: Manifest) -> PolicyWire:
        if manifest.head not in DECODERS:  # pi0 builds its prompt from the state on its own path
            raise ValueError(f"the {manifest.head} head cannot be served remotely yet; run it on the robot")
        pre = manifest.preprocess
        horizon, dim = manifest.action.horizon, manifest.action.dim
        extras = make_decoder(manifest).extra_inputs()
        frames = []
        for view in pre.camera_views:
            size = pre.size_of(view)
            frames.append(WireTensor(pixels_name(view), "float32", (3, size, size), optional=True))
            frames.append(WireTensor(image_name(view), "uint8", (-1, -1, 3), optional=True))
        state = (WireTensor(STATE, "float32", (manifest.state.dim,)),) if manifest.state.names else ()
        inputs = (
            *frames,
            WireTensor(IDS, "int64", (-1,)),
            *state,
            *(WireTensor(name, dtype, tuple(shape)) for name, (dtype, shape) in extras.items()),
        )
        outputs = (WireTensor(NORMALIZED, "float32", (horizon, dim)), WireTensor(BINS, "int64", (horizon, dim)),
                   WireTensor(SERVER_S, "float64", (1,)))
        return cls(inputs, outputs, tuple(pre.camera_views))

    @property
    def extra_names(self) -> tuple[str, ...]:
        """The decoder's inputs (noise, past action)."""
        frames = {n for v in self.views for n in (pixels_name(v), image_name(v))}
        return tuple(t.name for t in self.inputs if t.name not in frames and t.name not in (IDS, STATE))

    @property
    def has_state(self) -> bool:
        return any(t.name == STATE for t in self.inputs)


def pixels_name(view: str) -> str:
    return f"{PIXELS}.{view}"


def image_name(view: str) -> str:
    return f"{IMAGE}.{view}"


class RequestError(ValueError):
    """A request that does not fit the wire contract; the message goes back to the robot."""


class ServedPolicy:
    """Decodes batched requests from several robots with one policy, row by row."""

    def __init__(self, policy):
        self.policy = policy  # a BundlePolicy (runtime/policy.py); its decoder state is per request
        self.wire = PolicyWire.of(policy.manifest)
        self._horizon, self._dim = policy.manifest.action.horizon, policy.manifest.action.dim

    def serve(self, request: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One Triton request ([B, ...] tensors, B robots' rows) -> outputs [B, H, D]."""
        ids = _need(request, IDS)
        for view in self.wire.views:
            if (request.get(pixels_name(view)) is None) == (request.get(image_name(view)) is None):
                raise RequestError(f"send exactly one of {pixels_name(view)!r} (preprocessed) or "
                                   f"{image_name(view)!r} (uint8 RGB) for camera view {view!r}")
        state = _need(request, STATE) if self.wire.has_state else None
        rows = ids.shape[0]
        normalized = np.empty((rows, self._horizon, self._dim), dtype=np.float32)
        bins = np.full((rows, self._horizon, self._dim), -1, dtype=np.int64)
        seconds = np.zeros((rows, 1), dtype=np.float64)
        for b in range(rows):
            start = time.perf_counter()
            pixels = [self._pixels(request, view, b) for view in self.wire.views]  # [1, 3, S_v, S_v] each
            extras = {name: _need(request, name)[b : b + 1] for name in self.wire.extra_names}
            vector = None if state is None else np.ascontiguousarray(state[b : b + 1], dtype=np.float32)  # [1, S]
            decoded = self.policy.decode_prepared(
                pixels, np.ascontiguousarray(ids[b : b + 1], dtype=np.int64), vector, extras
            )
            normalized[b] = decoded.normalized
            if decoded.bins is not None:
                bins[b] = decoded.bins
            seconds[b] = time.perf_counter() - start
        return {NORMALIZED: normalized, BINS: bins, SERVER_S: seconds}

    def _pixels(self, request: Mapping[str, np.ndarray], view: str, row: int) -> np.ndarray:
        pixels = request.get(pixels_name(view))
        if pixels is not None:
            return np.ascontiguousarray(pixels[row : row + 1], dtype=np.float32)
        return self.policy.preprocess(request[image_name(view)][row], view)  # the view's own preprocessor


# where the policy model's graphs run: in its own process, or as Triton models called through BLS
# (on the onnxruntime / TensorRT backends, or as python models running onnxruntime)
GRAPH_PLACES = ("inprocess", "triton", "python")


def open_served(bundle_dir: str | Path, graphs: str = "inprocess", device: str = "auto", threads: int | None = None,
                model_prefix: str = "policy", pb_utils: Any = None) -> ServedPolicy:
    """The serving core for a repository's policy model.

    `inprocess`: the graphs run on onnxruntime inside the python model (any Triton with the
    python backend). `triton` / `python`: each graph is the Triton model `<model_prefix>_<role>`
    and is called through BLS (`pb_utils` required); the repository writer verified those
    graphs' hashes, so only the manifest's seal is checked here.
    """
    from vla_runtime.runtime.policy import BundlePolicy, load_policy

    if graphs == "inprocess":
        return ServedPolicy(load_policy(bundle_dir, backend=device, threads=threads))
    if graphs not in GRAPH_PLACES:
        raise ValueError(f"graphs {graphs!r} is not one of {GRAPH_PLACES}")
    from vla_runtime.runtime.backends.base import BackendOptions
    from vla_runtime.runtime.backends.bls import BlsBackend
    from vla_runtime.runtime.bundle import open_bundle
    from vla_runtime.runtime.manifest import HEAD_GRAPHS

    if pb_utils is None:
        raise ValueError("graphs 'triton' runs inside a Triton python model; pass its triton_python_backend_utils")
    bundle = open_bundle(bundle_dir, verify=False)
    manifest = bundle.manifest
    runners = {}
    for role in HEAD_GRAPHS[manifest.head]:
        spec = manifest.graphs[role]
        runner = BlsBackend(spec, bundle.root / spec.file, "cpu", BackendOptions(),
                            model_name=f"{model_prefix}_{role}", pb_utils=pb_utils)
        runner.activate()
        runners[role] = runner
    return ServedPolicy(BundlePolicy(bundle, runners, make_decoder(manifest), "triton"))


def _need(request: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    value = request.get(name)
    if value is None:
        raise RequestError(f"request lacks input {name!r}; the robot's bundle does not match this server's")
    return value


__all__ = ["BINS", "FRAME_KINDS", "GRAPH_PLACES", "IDS", "NORMALIZED", "SEAL_PARAMETER", "SERVER_S", "STATE",
           "PolicyWire", "RequestError", "ServedPolicy", "WireTensor", "image_name", "open_served", "pixels_name"]
