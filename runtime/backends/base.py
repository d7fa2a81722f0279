"""The runner every inference backend implements: activate, run, deactivate.

One runner wraps one component graph of a bundle. The public methods own the lifecycle, the
input checks against the manifest's declared I/O and the timing, so a backend author writes
only `_activate_impl`, `_run_impl` and `_deactivate_impl` and cannot forget any of them.

Outputs named in `keep` stay on the backend ("resident": an ORT `OrtValue`, a device buffer)
and may be passed straight back as inputs to any runner of the same backend. That is how the
KV cache and the prefix context move between graphs without a round trip through numpy
every decode step or every flow step.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from vla_runtime.runtime.manifest import GraphSpec, TensorSpec

logger = logging.getLogger(__name__)

DEVICES = ("tensorrt", "cuda", "cpu")  # best first: the order `--backend auto` tries them in


class BackendError(RuntimeError):
    """A backend cannot load or run a graph; one line naming the graph, the problem and the fix."""


@dataclass(frozen=True)
class BackendOptions:
    """Knobs shared by every backend; one instance for all graphs of a bundle."""

    threads: int = 2  # CPU threads per graph run (intra-op); match the cores not used by drivers/camera
    # Idle ORT workers busy-wait for more work. Each graph has its own pool, so on a small board
    # spinning pools starve each other and the numpy stages (measured ~6x slower ticks on 2 cores).
    spin: bool = False
    device_id: int = 0  # GPU index (cuda / tensorrt)
    # let TensorRT run float layers in fp16 (the onnxruntime TensorRT provider's trt_fp16_enable);
    # norms and softmax of native engines stay fp32 either way (export/tensorrt_build.py)
    gpu_fp16: bool = True
    engine_cache_dir: Path | None = None  # where TensorRT engines are cached; outside the bundle
    # role -> input -> (min, opt, max) shape of each dynamic input, for engine builders
    profiles: Mapping[str, Mapping[str, tuple[tuple[int, ...], ...]]] = field(default_factory=dict)

    def __post_init__(self):
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.device_id < 0:
            raise ValueError(f"device_id must be >= 0, got {self.device_id}")


class Backend(ABC):
    """Runs one component graph; the same object serves every tick."""

    formats: ClassVar[tuple[str, ...]] = ()  # GraphSpec.format values this backend loads
    devices: ClassVar[tuple[str, ...]] = ()  # entries of DEVICES it can run on

    def __init__(self, spec: GraphSpec, path: Path, device: str, options: BackendOptions | None = None):
        if spec.format not in self.formats:
            raise BackendError(
                f"graph {spec.role!r} is a {spec.format!r} file; {type(self).__name__} loads {self.formats}"
            )
        if device not in self.devices:
            raise BackendError(f"{type(self).__name__} cannot run on {device!r}; it supports {self.devices}")
        self.spec = spec
        self.path = Path(path)
        self.device = device
        self.options = options or BackendOptions()
        self.active = False
        self.last_run_s = 0.0  # wall seconds of the most recent run()
        self.total_run_s = 0.0  # wall seconds of all runs since activate()
        self.runs = 0  # run() calls since activate()
        self._inputs = {s.name: s for s in spec.inputs}

    # -- discovery -------------------------------------------------------------------------

    @classmethod
    def probe(cls, device: str) -> str | None:
        """None when this backend can run on `device` here, else a one-line reason with the fix."""
        return None if device in cls.devices else f"{cls.__name__} does not support {device!r}"

    @classmethod
    def check_graph(cls, spec: GraphSpec, device: str) -> str | None:
        """None when this backend can run this graph on `device`, else why not (e.g. its precision)."""
        return None

    # -- lifecycle -------------------------------------------------------------------------

    def activate(self) -> None:
        """Load the graph (session, engine) so the first tick does not pay for it."""
        if self.active:
            return
        self._activate_impl()
        self.active = True
        self.last_run_s, self.total_run_s, self.runs = 0.0, 0.0, 0
        logger.debug("%s: %s active on %s", type(self).__name__, self.spec.role, self.device)

    def deactivate(self) -> None:
        """Release the session and any resident buffers."""
        if not self.active:
            return
        self._deactivate_impl()
        self.active = False

    def __enter__(self) -> Backend:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- running ---------------------------------------------------------------------------

    def run(self, inputs: Mapping[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
        """Run once; outputs are numpy arrays, except those named in `keep`, which stay resident.

        Returned numpy arrays may be buffers the backend reuses on its next run with the same
        input shapes: copy anything that must outlive the next call.
        """
        if not self.active:
            raise BackendError(f"graph {self.spec.role!r}: run() before activate()")
        self._check_inputs(inputs)
        keep = tuple(keep)
        unknown = [k for k in keep if k not in self.spec.output_names]
        if unknown:
            raise BackendError(f"graph {self.spec.role!r} has no output(s) {unknown} to keep")
        start = time.perf_counter()
        outputs = self._run_impl(inputs, keep)
        self.last_run_s = time.perf_counter() - start
        self.total_run_s += self.last_run_s
        self.runs += 1
        return outputs

    def describe(self, value: Any) -> tuple[str, tuple[int, ...]]:
        """(dtype name, shape) of an input value: a numpy array or this backend's resident value."""
        if isinstance(value, np.ndarray):
            return value.dtype.name, value.shape
        raise BackendError(
            f"graph {self.spec.role!r}: {type(value).__name__} is neither a numpy array nor a value "
            f"resident on {type(self).__name__}"
        )

    def fetch(self, value: Any) -> np.ndarray:
        """A host numpy copy of a resident value (for taps and tests, not the hot path)."""
        if isinstance(value, np.ndarray):
            return value.copy()
        raise BackendError(f"{type(self).__name__} cannot fetch a {type(value).__name__}")

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        missing = [n for n in self._inputs if n not in inputs]
        extra = [n for n in inputs if n not in self._inputs]
        if missing or extra:
            raise BackendError(
                f"graph {self.spec.role!r}: inputs do not match the manifest "
                f"(missing {missing}, unexpected {extra})"
            )
        for name, value in inputs.items():
            dtype, shape = self.describe(value)
            _check_tensor(self.spec.role, self._inputs[name], dtype, shape)

    # -- what a backend implements -----------------------------------------------------------

    @abstractmethod
    def _activate_impl(self) -> None:
        """Create the session or deserialize the engine."""

    @abstractmethod
    def _run_impl(self, inputs: Mapping[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
        """Run the graph; every declared output is returned, the `keep` ones resident."""

    @abstractmethod
    def _deactivate_impl(self) -> None:
        """Drop the session and buffers."""


def _check_tensor(role: str, spec: TensorSpec, dtype: str, shape: tuple[int, ...]) -> None:
    """Refuse a wrong dtype, rank or fixed dimension before the backend sees it."""
    if dtype != spec.dtype:
        raise BackendError(f"graph {role!r} input {spec.name!r}: dtype {dtype}, manifest says {spec.dtype}")
    if len(shape) != len(spec.shape):
        raise BackendError(
            f"graph {role!r} input {spec.name!r}: shape {tuple(shape)} has rank {len(shape)}, "
            f"manifest says {list(spec.shape)}"
        )
    for got, want in zip(shape, spec.shape, strict=True):
        if isinstance(want, int) and want >= 0 and got != want:
            raise BackendError(
                f"graph {role!r} input {spec.name!r}: shape {tuple(shape)} does not fit {list(spec.shape)}"
            )
