"""A stored observation and the actions the bundle gave for it when it was written.

A bundle can verify byte for byte and still compute the wrong thing on a robot (a graph swapped
for one that loads but was never checked, an onnxruntime build that miscomputes an op). After
`flash --check` switches `current`, it loads every graph, runs one inference on the stored
sample and compares with the stored actions; on a mismatch flash rolls back, as A/B update
systems do. The writer of a bundle (build, quantize) records the sample with the runtime's own
inference path after its parity or gate checks passed.

Layout inside the bundle (listed in manifest.files, so sealed and signed like everything else)::

    health/sample.json   {"task": str, "atol": float, "image": "health/image.npy",
                          "actions": "health/actions.npy"}
    health/image.npy     uint8 [S, S, 3] RGB observation
    health/actions.npy   float32 [H, D] normalised actions (model space, [-1, 1] for binned heads)

The image feeds every camera view the bundle reads; a bundle that reads the robot state gets
`state_input.resting_state`, so nothing more needs storing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
from vla_runtime.runtime.bundle import BundleError, hash_tree, open_bundle
from vla_runtime.runtime.manifest import save_manifest
from vla_runtime.runtime.state_input import resting_state
from vla_runtime.runtime.types import Frame

logger = logging.getLogger(__name__)

HEALTH_DIR = "health"
SAMPLE_NAME = f"{HEALTH_DIR}/sample.json"
TASK = "pick up the red block"
ATOL = 0.02  # normalised units: about 2.5 bins of 256 over [-1, 1]; a wrong graph is off by far more


class HealthError(BundleError):
    """The installed bundle does not compute what it computed when it was written."""


def sample_image(size: int, seed: int = 0) -> np.ndarray:
    """A deterministic textured RGB observation, uint8 [size, size, 3]."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _infer(bundle_dir: Path, image: np.ndarray, task: str, **load) -> np.ndarray:
    """Normalised actions [H, D] from a fresh policy (flow noise and past action start fresh)."""
    from vla_runtime.runtime.policy import load_policy

    with load_policy(bundle_dir, **load) as policy:
        policy.infer(Frame(image=image, t_capture=0.0), task, resting_state(policy.manifest.state))
        return np.asarray(policy.last_normalized, dtype=np.float32)


def record_sample(bundle_dir: str | Path, task: str = TASK, atol: float = ATOL) -> Path:
    """Run the bundle once on the sample, store input and output, and re-seal the manifest.

    For writers, on their own freshly verified staging folder (hence verify=False: the folder
    is not signed yet and this machine's trust store, if any, is no judge of it)."""
    root = Path(bundle_dir)
    manifest = open_bundle(root).manifest
    image = sample_image(manifest.preprocess.image_size)
    actions = _infer(root, image, task, backend="cpu", verify=False, allow_failed_gate=True, threads=1)
    (root / HEALTH_DIR).mkdir(exist_ok=True)
    np.save(root / HEALTH_DIR / "image.npy", image, allow_pickle=False)
    np.save(root / HEALTH_DIR / "actions.npy", actions, allow_pickle=False)
    sample = {"task": task, "atol": atol, "image": f"{HEALTH_DIR}/image.npy", "actions": f"{HEALTH_DIR}/actions.npy"}
    (root / SAMPLE_NAME).write_text(json.dumps(sample, indent=2) + "\n")
    save_manifest(dataclasses.replace(manifest, files=hash_tree(root)), root)
    return root / SAMPLE_NAME


def check(bundle_dir: str | Path, backend: str = "auto", trusted_keys: str | Path | None = None) -> str:
    """Load every graph and compare one inference with the stored actions; one line on success."""
    root = Path(bundle_dir)
    manifest = open_bundle(root).manifest
    load = {"backend": backend, "trusted_keys": trusted_keys, "allow_failed_gate": True}
    if SAMPLE_NAME not in manifest.files:
        actions = _infer(root, sample_image(manifest.preprocess.image_size), TASK, **load)
        if not np.isfinite(actions).all():
            raise HealthError(f"{root.name}: health check failed: the graphs give non-finite actions")
        return "graphs load and give finite actions (the bundle stores no sample to compare with)"
    try:
        sample = json.loads((root / SAMPLE_NAME).read_text())
        task, atol = str(sample["task"]), float(sample["atol"])
        if sample["image"] not in manifest.files or sample["actions"] not in manifest.files:
            raise KeyError("sample files are not listed in the manifest")
        image = np.load(root / sample["image"], allow_pickle=False)
        expected = np.load(root / sample["actions"], allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HealthError(f"{root.name}: stored health sample unreadable ({type(exc).__name__}); rebuild") from None
    actions = _infer(root, image, task, **load)
    if actions.shape != expected.shape:
        raise HealthError(f"{root.name}: health check failed: actions {actions.shape}, stored {expected.shape}")
    err = float(np.max(np.abs(actions - expected))) if actions.size else 0.0
    if not err <= atol:
        raise HealthError(
            f"{root.name}: health check failed: actions differ from the stored ones by {err:.3g} "
            f"(tolerance {atol:g}); the graphs load but do not compute what was verified at build"
        )
    return f"one inference matches the stored sample (max abs err {err:.2e} <= {atol:g})"
