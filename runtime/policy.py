"""A verified bundle as a `Policy`: frame + task -> ActionChunk in physical units.

`load_policy` is the one place where a bundle becomes running objects, and it refuses early:
seal, hashes and manifest first, then the robot's trust store (signature), then the accuracy
gate, then whether this machine is the target the engines were built for, then which backend
runs the graphs. Only then are sessions created, once; every tick after that reuses the same
sessions, buffers and the task's prompt ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from vla_runtime.runtime.backends import Backend, BackendError, BackendOptions, Selection, candidates
from vla_runtime.runtime.backends.device import engine_mismatch, live_device
from vla_runtime.runtime.backends.profiles import ProfileError, bundle_profiles
from vla_runtime.runtime.bundle import Bundle, BundleError, open_bundle
from vla_runtime.runtime.decoders import Decoded, Decoder, Unnormalizer, make_decoder
from vla_runtime.runtime.kv_flow import Pi0Decoder, Pi0Prompt, infer_pi0
from vla_runtime.runtime.manifest import STATE_INPUT, Manifest, ManifestError, Target, run_roles
from vla_runtime.runtime.preprocess import Preprocessor
from vla_runtime.runtime.preprocess_graph import RESIZE_OUTPUT, RESIZE_ROLE, ResizeFeed
from vla_runtime.runtime.state_input import StateInput
from vla_runtime.runtime.tokenizer import PromptTokenizer
from vla_runtime.runtime.trust import enforce as enforce_trust
from vla_runtime.runtime.types import ActionChunk, Frames, Policy, RobotState, capture_time, view_frames

logger = logging.getLogger(__name__)

GraphTap = Callable[[str, dict[str, np.ndarray]], None]


def default_threads() -> int:
    """CPU threads per graph: the cores this process may use (the loop itself is mostly idle)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def engine_cache_root() -> Path:
    """Per-user cache for TensorRT engines; never inside a bundle, whose file list is sealed."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vla-runtime" / "tensorrt"


def check_target(target: Target, device_id: int = 0) -> None:
    """Refuse engines built for another GPU or TensorRT version, in one line."""
    if target.kind == "cpu":
        return
    live = live_device(device_id)
    problem = engine_mismatch(dataclasses.asdict(target), live)
    if problem:
        fix = "; use a cpu-target bundle here" if isinstance(live, str) else ""
        raise BundleError(f"bundle's TensorRT {problem}{fix}")


def view_preprocess(manifest: Manifest) -> list:
    """Each camera view's preprocessing settings (its own image size), in the manifest's order."""
    pre = manifest.preprocess
    return [dataclasses.replace(pre, image_size=pre.size_of(v)) for v in pre.camera_views]


class BundlePolicy(Policy):
    """Runs a bundle's graphs for one observation; sessions and buffers live as long as it does."""

    def __init__(
        self,
        bundle: Bundle,
        runners: Mapping[str, Backend],
        decoder: Decoder,
        backend_name: str,
        exact_preprocess: bool = False,
    ):
        manifest = bundle.manifest
        self.bundle = bundle
        self.manifest: Manifest = manifest
        self.backend_name = backend_name  # the device actually used: cpu | cuda | tensorrt
        self.graph_tap: GraphTap | None = None  # sees a copy of every graph's inputs before it runs
        self.last_normalized: np.ndarray | None = None  # float32 [H, D] model-space actions
        self.last_bins: np.ndarray | None = None  # int64 [H, D] chosen bins; None for flow
        self.stage_times: dict[str, float] = {}  # seconds per stage of the last infer()
        self._times: dict[str, float] = {}  # the inference in progress
        self._runners = dict(runners)
        self._decoder = decoder
        # one preprocessor (own size, own buffers) per camera view, in the manifest's order; the loop
        # resizes with OpenCV, exact=True reproduces PIL bit for bit (parity references)
        pre = manifest.preprocess
        self.views = pre.camera_views
        view_pre = view_preprocess(manifest)
        self._preprocessors = tuple(Preprocessor(p, exact=exact_preprocess) for p in view_pre)
        self._preprocess = self._preprocessors[0]
        # a bundle with a resize graph hands each frame to the accelerator as it is (exact: the host's PIL path)
        in_graph = RESIZE_ROLE in self._runners and not exact_preprocess
        self._resize_feeds = tuple(ResizeFeed(p) for p in view_pre) if in_graph else None
        # the measured state, normalised, for every graph that declares an input `state`
        self._state = StateInput(manifest.state) if manifest.state.names else None
        self._state_roles = frozenset(r for r, g in runners.items() if STATE_INPUT in g.spec.input_names)
        self._state_vector = None
        self._tokenize = PromptTokenizer(manifest.prompt, bundle.path(manifest.prompt.tokenizer_file))
        self._unnormalize = Unnormalizer(manifest.action)
        self._pi0 = None  # LeRobot pi0 / pi0.5: several views + state (runtime/kv_flow.py)
        if manifest.head == "pi0":
            self._pi0 = Pi0Prompt(manifest, bundle.path(manifest.prompt.tokenizer_file))
            self._state_roles = frozenset()  # the decoder feeds its expert the padded state itself
        self._names = manifest.action.names
        self._graph_s = 0.0  # graph seconds inside the current decode stage

    # -- the pieces, public so calibration and tests can use exactly the runtime's path ----------

    def preprocess(self, image: np.ndarray, view: str | None = None) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> pixel_values float32 [1, 3, S, S] of `view` (default: the first),
        in a buffer reused per call."""
        return self._preprocessors[self.views.index(view) if view is not None else 0](image)

    def state_vector(self, state: RobotState | None) -> np.ndarray | None:
        """The normalised state f32 [1, S] the graphs read (None for a bundle that reads none)."""
        return None if self._state is None else self._state(state)

    def inject_noise(self, noise: np.ndarray) -> None:
        """Start the next flow decode from this noise (parity replays a reference's own draw)."""
        if not hasattr(self._decoder, "inject_noise"):
            raise ValueError(f"the {self.manifest.head} head draws no start noise")
        self._decoder.inject_noise(noise)

    def tokenize(self, task: str) -> np.ndarray:
        """Task -> input_ids int64 [1, T], cached per task string."""
        return self._tokenize(task)

    def run_graph(self, role: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One graph on this policy's own runner, every output copied to the host (parity, tests)."""
        runner = self._runners[role]
        return {name: runner.fetch(value) for name, value in runner.run(inputs).items()}

    # -- one inference ---------------------------------------------------------------------------

    def infer(self, frame: Frames, task: str, state: RobotState | None = None) -> ActionChunk:
        """One frame (or {view: Frame}) + task (+ the measured state) -> ActionChunk [H, D] in physical units."""
        if self._pi0 is not None:
            return self._infer_pi0(frame, task, state)
        times = self._times = {}  # published whole at the end: a profiler thread may be reading the last
        frames = view_frames(frame, self.views)
        self._state_vector = self.state_vector(state)  # [1, S] or None
        if len(frames) == 1:
            pixels = self._pixels(0, frames[0].image, times, "preprocess")  # [1, 3, S, S]
            pixels_of = lambda i: pixels  # noqa: E731
        else:
            pixels_of = lambda i: self._pixels(i, frames[i].image, times, f"preprocess[{self.views[i]}]")  # noqa: E731
        t1 = time.perf_counter()
        input_ids = self._tokenize(task)  # [1, T]
        times["tokenize"] = time.perf_counter() - t1

        embeds, tokens = self._embed(pixels_of, len(frames))
        decoded = self._decode_prefix(embeds, tokens, input_ids)
        t3 = time.perf_counter()
        actions = self._unnormalize(decoded.normalized)  # float64 [H, D]
        times["decode_actions"] += time.perf_counter() - t3
        self.stage_times = times
        return ActionChunk(actions=actions, names=self._names, t_obs=capture_time(frame))

    def decode_prepared(
        self,
        pixels: Sequence[np.ndarray],
        input_ids: np.ndarray,
        state_vector: np.ndarray | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
    ) -> Decoded:
        """Graphs + decoder on prepared inputs (pixel_values per view, ids, normalised state): model space.

        What a server runs for a remote robot (runtime/serving.py): `extras` are the robot's own
        draw or carry-over (`Decoder.request_extras`); None decodes with this policy's own.
        """
        self._times = {}
        self._state_vector = state_vector  # [1, S] or None
        embeds, tokens = self._embed(pixels.__getitem__, len(pixels))
        return self._decode_prefix(embeds, tokens, input_ids, extras)

    def _decode_prefix(self, embeds: Any, tokens: int, input_ids: np.ndarray,
                       extras: Mapping[str, np.ndarray] | None = None) -> Decoded:
        """prefill, then the head's decoder: model-space actions."""
        times = self._times
        prefix = self._run("prefill", {"image_embeds": embeds, "input_ids": input_ids}, self._decoder.prefill_keep)
        prefix_len = tokens + input_ids.shape[1]  # V*N + T
        times[self._decoder.role] = 0.0
        self._graph_s = 0.0
        t3 = time.perf_counter()
        if extras is not None:
            self._decoder.use_extras(extras)
        decoded = self._decoder.decode(prefix, self._run, prefix_len)
        times["decode_actions"] = time.perf_counter() - t3 - self._graph_s
        self.last_normalized, self.last_bins = decoded.normalized, decoded.bins
        return decoded

    def _embed(self, pixels_of: Callable[[int], Any], views: int) -> tuple[Any, int]:
        """The vision graph on every view -> (image_embeds, image tokens).

        One view's embeddings stay resident on the backend; several are copied to the host as
        each view finishes (the next run may reuse the output buffer) and joined in view order.
        Each view's pixels are made just before its vision run, for the same reason.
        """
        if views == 1:
            embeds = self._run("vision", {"pixel_values": pixels_of(0)}, ("image_embeds",))["image_embeds"]  # [1, N, E]
            return embeds, self._runners["vision"].describe(embeds)[1][1]
        parts = [self._run("vision", {"pixel_values": pixels_of(i)})["image_embeds"].copy()  # [1, N, E] own copy
                 for i in range(views)]
        embeds = np.concatenate(parts, axis=1)  # [1, V*N, E]
        return embeds, embeds.shape[1]

    def _pixels(self, view: int, image: np.ndarray, times: dict[str, float], stage: str) -> Any:
        """pixel_values [1, 3, S, S] of one view: host OpenCV, or the bundle's resize graph.

        With the graph, the host stage only checks the frame and looks up PIL's filter for its
        resolution; the pixels are the graph's work (timed as the `resize` stage).
        """
        t = time.perf_counter()
        if self._resize_feeds is None:
            pixels = self._preprocessors[view](image)
            times[stage] = time.perf_counter() - t
            return pixels
        feeds = self._resize_feeds[view](image)
        times[stage] = time.perf_counter() - t
        return self._run(RESIZE_ROLE, feeds, (RESIZE_OUTPUT,))[RESIZE_OUTPUT]  # resident on the device

    def _infer_pi0(self, frame: Frames, task: str, state: RobotState | None) -> ActionChunk:
        """Every view + task + the measured state -> ActionChunk, LeRobot's pi0 order (runtime/kv_flow.py)."""
        times = self._times = {}
        self._graph_s = 0.0
        t0 = time.perf_counter()
        normalized_state = self.state_vector(state)[0]  # [S], refuses a missing state in one line
        frames = view_frames(frame, self.views)
        pixels = [self._pixels(i, f.image, times, f"preprocess[{v}]")
                  for i, (v, f) in enumerate(zip(self.views, frames, strict=True))]  # C x [1, 3, S, S]
        decoded = infer_pi0(self._pi0, self._decoder, self._run, pixels, task, normalized_state)
        actions = self._unnormalize(decoded.normalized)  # float64 [H, D]
        times["decode_actions"] = time.perf_counter() - t0 - sum(times.values())
        self.last_normalized, self.last_bins = decoded.normalized, None
        self.stage_times = times
        return ActionChunk(actions=actions, names=self._names, t_obs=capture_time(frame))

    def _run(self, role: str, inputs: Mapping[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
        runner = self._runners[role]
        if role in self._state_roles:
            inputs = {**inputs, STATE_INPUT: self._state_vector}
        if self.graph_tap is not None:
            self.graph_tap(role, {name: runner.fetch(value) for name, value in inputs.items()})
        outputs = runner.run(inputs, keep)
        self._times[role] = self._times.get(role, 0.0) + runner.last_run_s
        if role == self._decoder.role:
            self._graph_s += runner.last_run_s
        return outputs

    # -- lifecycle -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start of an episode: forget the previous action a conditioned head sees."""
        self._decoder.reset()

    def close(self) -> None:
        for runner in self._runners.values():
            runner.deactivate()

    def __enter__(self) -> BundlePolicy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def verified_bundle(
    bundle_dir: str | Path, allow_failed_gate: bool = False, verify: bool = True, trusted_keys: str | Path | None = None
) -> Bundle:
    """Seal, hashes, the robot's trust store and the accuracy gate: what must hold before a robot uses a bundle."""
    bundle = open_bundle(bundle_dir, verify=verify)
    if verify:  # trusted_keys None: the default store ($VLA_RUNTIME_TRUSTED_KEYS or /etc/...), if any
        enforce_trust(bundle, trusted_keys)
    manifest = bundle.manifest
    if manifest.gate_failed and not allow_failed_gate:
        summary = manifest.gate.get("summary") or manifest.gate.get("reason") or "see manifest.gate"
        raise BundleError(
            f"{bundle.root.name}: the INT8 accuracy gate failed ({summary}); use the fp32 bundle, "
            "re-quantize, or pass --allow-failed-gate to run it anyway"
        )
    if manifest.gate_failed:
        logger.warning("running a bundle whose accuracy gate FAILED (--allow-failed-gate)")
    return bundle


def load_policy(
    bundle_dir: str | Path,
    backend: str = "cpu",
    allow_failed_gate: bool = False,
    verify: bool = True,
    threads: int | None = None,
    engine_cache_dir: str | Path | None = None,
    spin: bool = False,
    exact_preprocess: bool = False,
    trusted_keys: str | Path | None = None,
    gpu_fp16: bool = True,
) -> BundlePolicy:
    """Verify a bundle, pick a backend, create every session once; refuse with one line otherwise.

    Raises BundleError (bundle untrusted, gate failed, wrong target) or BackendError (the
    requested backend cannot run here); both messages name the fix. `gpu_fp16=False` keeps
    the onnxruntime TensorRT provider from running an fp32 graph's float layers in fp16.
    """
    bundle = verified_bundle(bundle_dir, allow_failed_gate, verify, trusted_keys)
    manifest = bundle.manifest
    check_target(manifest.target)

    roles = run_roles(manifest)
    specs = [manifest.graphs[r] for r in roles]
    try:
        decoder = Pi0Decoder(manifest) if manifest.head == "pi0" else make_decoder(manifest)
    except ManifestError as exc:
        raise BundleError(f"{bundle.root / 'manifest.json'}: {exc}") from None
    threads = threads if threads is not None else default_threads()
    cache = Path(engine_cache_dir) if engine_cache_dir is not None else engine_cache_root() / _bundle_id(manifest)
    tried = []
    for chosen in candidates(backend, specs):
        options = BackendOptions(
            threads=threads,
            spin=spin,
            gpu_fp16=gpu_fp16,
            engine_cache_dir=cache if chosen.device == "tensorrt" else None,
            profiles=_provider_profiles(manifest) if chosen.device == "tensorrt" else {},
        )
        try:
            runners = _activate(chosen, specs, bundle, options)
            break
        except BackendError as exc:
            if backend != "auto":
                raise
            tried.append(f"{chosen.device}: {exc}")
            logger.warning("backend auto: %s failed to activate (%s); trying the next device", chosen.device, exc)
    else:
        raise BackendError("no device could run this bundle here (" + " | ".join(tried) + ")")
    logger.info("backend: %s", chosen.reason)
    logger.info(
        "loaded %s (%s head, %s) on %s with %d thread(s)",
        manifest.model.get("name", bundle.root.name), manifest.head,
        "/".join(f"{r}:{manifest.graphs[r].precision}" for r in roles), chosen.device, options.threads,
    )
    return BundlePolicy(bundle, runners, decoder, chosen.device, exact_preprocess)


def _provider_profiles(manifest: Manifest) -> dict:
    """Profiles for the onnxruntime TensorRT provider; none (it infers them) for unknown axes."""
    try:
        return bundle_profiles(manifest, dynamic_only=True)
    except ProfileError as exc:
        logger.warning("TensorRT provider: no optimization profiles (%s); engines may rebuild on new shapes", exc)
        return {}


def _activate(chosen: Selection, specs, bundle: Bundle, options: BackendOptions) -> dict[str, Backend]:
    """One activated runner per graph on the chosen device; all or none."""
    runners: dict[str, Backend] = {}
    try:
        for spec in specs:
            runner = chosen.cls(spec, bundle.path(spec.file), chosen.device, options)
            runner.activate()
            runners[spec.role] = runner
    except Exception:
        for runner in runners.values():
            runner.deactivate()
        raise
    return runners


def _bundle_id(manifest: Manifest) -> str:
    """Short stable id of a bundle's contents, to key caches that must not outlive it."""
    digest = hashlib.sha256("".join(f"{k}:{v};" for k, v in sorted(manifest.files.items())).encode())
    return digest.hexdigest()[:16]
