"""A policy whose graphs run on an inference server (`--backend remote --server grpc://HOST:8001`).

The robot keeps everything that decides what the arm does and when: the verified bundle
(seal, trust store, accuracy gate), the camera frame's preprocessing, the tokenizer, the
decoder's own draw and carry-over (the flow head's seeded noise, a parallel head's last
action), unnormalisation, safety and the scheduler. Per inference it sends one request (the
wire contract in runtime/serving.py) and gets one model-space chunk back, so the actions equal
a local run of the same bundle. Every request has a deadline inside the tick; a late or lost
server raises `InferenceMiss`, which the loop turns into "keep the chunk, then hold, stop after
N in a row".

Before anything moves, the served model's configuration must name this bundle's seal: a
server serving another bundle (or another version of it) is refused in one line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from vla_runtime.runtime.backends.remote_link import SETUP_TIMEOUT_S, RemoteError, RemoteLink, ServerAddress
from vla_runtime.runtime.bundle import Bundle
from vla_runtime.runtime.decoders import Decoded, Unnormalizer, make_decoder
from vla_runtime.runtime.policy import view_preprocess
from vla_runtime.runtime.preprocess import Preprocessor
from vla_runtime.runtime.serving import (
    BINS,
    FRAME_KINDS,
    IDS,
    NORMALIZED,
    SEAL_PARAMETER,
    SERVER_S,
    STATE,
    PolicyWire,
    image_name,
    pixels_name,
)
from vla_runtime.runtime.state_input import StateInput
from vla_runtime.runtime.tokenizer import PromptTokenizer
from vla_runtime.runtime.types import ActionChunk, Frames, InferenceMiss, Policy, RobotState, capture_time, view_frames

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteConfig:
    server: str  # grpc://HOST:PORT, grpcs://, http:// or https://
    timeout_s: float  # seconds each request may take; inside the tick (sync) or the replan interval (async)
    model: str = "policy"  # the repository's policy model name (vla-export triton --name)
    frame: str = "pixels"  # "pixels": send the preprocessed frame; "uint8": the raw RGB frame
    ca_file: str | None = None  # PEM CA bundle that signed the server's certificate (TLS)
    auth_file: str | None = None  # file holding "Header-Name: value"; else $VLA_RUNTIME_REMOTE_AUTH

    def __post_init__(self):
        if not (0 < self.timeout_s <= 60):
            raise ValueError(f"remote timeout {self.timeout_s * 1e3:.0f} ms: must be in (0, 60 s]")
        if self.frame not in FRAME_KINDS:
            raise ValueError(f"--remote-frame {self.frame!r} is not one of {FRAME_KINDS}")


class RemotePolicy(Policy):
    """Frame + task -> ActionChunk, inferred by a Triton / KServe v2 server."""

    def __init__(self, bundle: Bundle, link: RemoteLink, frame: str = "pixels"):
        manifest = bundle.manifest
        self.bundle, self.manifest, self.link = bundle, manifest, link
        self.backend_name = f"remote {link.address}"
        self.stage_times: dict[str, float] = {}  # seconds per stage of the last infer()
        self.last_normalized: np.ndarray | None = None  # float32 [H, D]
        self.last_bins: np.ndarray | None = None  # int64 [H, D]; None for flow
        self._frame = frame
        self.views = manifest.preprocess.camera_views
        self._preprocessors = tuple(Preprocessor(p) for p in view_preprocess(manifest))  # host OpenCV per view
        self._state = StateInput(manifest.state) if manifest.state.names else None
        self._tokenize = PromptTokenizer(manifest.prompt, bundle.path(manifest.prompt.tokenizer_file))
        self._unnormalize = Unnormalizer(manifest.action)
        self._decoder = make_decoder(manifest)  # robot side: only its draw and carry-over are used
        self._flow = manifest.head == "flow"
        self._wire = PolicyWire.of(manifest)
        self._outputs = tuple(t.name for t in self._wire.outputs)
        self._names = manifest.action.names

    def check_server(self) -> None:
        """The server must serve this very bundle (its seal); refuses in one line otherwise."""
        config = self.link.check_model()
        params = config.get("parameters", {}) or {}
        served = (params.get(SEAL_PARAMETER) or {}).get("string_value", "")
        if served != self.bundle.seal:
            what = f"bundle seal {served[:12]}..." if served else "no bundle seal (not a vla-export triton model)"
            raise RemoteError(
                f"{self.link.address} model {self.link.model!r} serves {what}, this robot's bundle is "
                f"{self.bundle.seal[:12]}...; regenerate the repository from this bundle (vla-export triton)"
            )

    def warm_up(self) -> float:
        """One request of zeros with a patient deadline, so the first real one finds the server warm; seconds."""
        skip = {image_name(v) if self._frame == "pixels" else pixels_name(v) for v in self.views}
        request = {}
        for tensor in self._wire.inputs:
            if tensor.name not in skip:
                dims = tuple(self.manifest.preprocess.size_of(self.views[0]) if d < 0 else d for d in tensor.dims)
                request[tensor.name] = np.zeros((1, *dims), dtype=tensor.dtype)
        start = time.perf_counter()
        self.link.infer(request, self._outputs, timeout_s=SETUP_TIMEOUT_S)
        return time.perf_counter() - start

    def infer(self, frame: Frames, task: str, state: RobotState | None = None) -> ActionChunk:
        times = {}
        t0 = time.perf_counter()
        request = {}
        for view, pre, f in zip(self.views, self._preprocessors, view_frames(frame, self.views), strict=True):
            if self._frame == "pixels":
                request[pixels_name(view)] = pre(f.image)  # [1, 3, S_v, S_v]
            else:
                request[image_name(view)] = np.ascontiguousarray(f.image, dtype=np.uint8)[None]  # [1, H, W, 3]
        if self._state is not None:
            request[STATE] = self._state(state)  # [1, S] normalised
        t1 = time.perf_counter()
        request[IDS] = self._tokenize(task)  # [1, T]
        request.update(self._decoder.request_extras())  # [1, ...] noise or past action
        t2 = time.perf_counter()
        reply = self.link.infer(request, self._outputs)  # InferenceMiss when late or unreachable
        t3 = time.perf_counter()
        normalized, bins = reply[NORMALIZED][0], reply[BINS][0]  # [H, D] each
        server_s = float(reply[SERVER_S].reshape(-1)[0])
        decoded = Decoded(normalized=normalized, bins=None if self._flow else bins)
        self._decoder.observe(decoded)
        actions = self._unnormalize(normalized)  # float64 [H, D]
        t4 = time.perf_counter()
        times["preprocess"], times["tokenize"] = t1 - t0, t2 - t1
        times["server"] = min(server_s, t3 - t2)  # the graphs and the decode loop on the server
        times["network"] = t3 - t2 - times["server"]  # transfer, (de)serialisation and the server's queue
        times["decode_actions"] = t4 - t3
        self.last_normalized, self.last_bins = decoded.normalized, decoded.bins
        self.stage_times = times
        return ActionChunk(actions=actions, names=self._names, t_obs=capture_time(frame))

    def reset(self) -> None:
        self._decoder.reset()

    def close(self) -> None:
        self.link.close()


def open_remote_policy(bundle: Bundle, config: RemoteConfig) -> RemotePolicy:
    """Connect for a verified bundle (`policy.verified_bundle`), check the server serves it, warm it up."""
    from vla_runtime.runtime.backends.remote_link import load_auth_header

    address = ServerAddress.parse(config.server)
    link = RemoteLink(address, config.model, config.timeout_s, load_auth_header(config.auth_file), config.ca_file)
    policy = RemotePolicy(bundle, link, config.frame)
    try:
        policy.check_server()
        logger.info("remote warm-up: %.0f ms", policy.warm_up() * 1e3)
    except InferenceMiss as exc:
        policy.close()
        raise RemoteError(f"{exc}; is the server running and reachable?") from None
    except BaseException:
        policy.close()
        raise
    logger.info("remote policy: %s model %r serves this bundle", address, config.model)
    return policy


__all__ = ["RemoteConfig", "RemotePolicy", "open_remote_policy"]
