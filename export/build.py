"""Build a bundle: model -> component graphs -> manifest -> parity -> health sample -> seal -> rename.

Everything is written into a hidden staging directory next to the destination and renamed
into place only after parity passed, so a failed or interrupted build never leaves a
half-written bundle where a robot could pick it up. A build whose parity fails keeps its
graphs, with the failed report in the manifest, in `<out>.failed` for inspection.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import shutil
import time
from pathlib import Path

from tqdm import tqdm
from vla_runtime.export.checkpoint import Source, from_preset, load_checkpoint
from vla_runtime.export.manifest_writer import TOKENIZER_NAME, build_manifest
from vla_runtime.export.onnx_export import export_graph, graph_plan, needs_external_data
from vla_runtime.export.parity import ParityError, parity_failure, run_parity
from vla_runtime.export.precision import (
    Tolerance,
    building_in,
    cast_parameters,
    default_tolerance,
    release_weights,
)
from vla_runtime.runtime.bundle import check_destination, staged_directory
from vla_runtime.runtime.health import record_sample
from vla_runtime.runtime.manifest import save_manifest
from vla_runtime.runtime.onnx_refs import EXTERNAL_DATA_BYTES

logger = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """The destination is unusable; the message says how to fix it."""


def load_source(
    head: str, preset: str = "tiny", checkpoint: str | Path | None = None, seed: int = 0, dtype: str = "fp32"
) -> Source:
    """A preset or checkpoint whose parameters are created in `dtype` (never a float32 copy first)."""
    with building_in(dtype):
        if checkpoint is not None:
            return load_checkpoint(checkpoint, head=head, seed=seed)
        return from_preset(preset, head, seed=seed)


def failed_directory(out: Path) -> Path:
    """Where a build whose parity failed leaves its graphs: `<out>.failed`, next to `out`."""
    return out.with_name(out.name + ".failed")


def build_from_source(
    source: Source,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    tolerance: Tolerance | None = None,
    dtype: str = "fp32",
    parity_observations: int = 3,
    release_model: bool = False,
    external_data_bytes: int = EXTERNAL_DATA_BYTES,
) -> Path:
    """Export, verify and install a bundle for an already loaded model; returns the bundle path.

    `dtype` casts the model's parameters in place (fp16/bf16 halve the memory of the one
    PyTorch copy the build holds); graphs are exported and traced one at a time from it.
    `release_model` frees the PyTorch weights once parity has its references, before any
    onnxruntime session loads (the model is unusable afterwards): peak memory is then the larger
    of the PyTorch model and the largest session, not their sum.
    """
    out = Path(out_dir).expanduser().absolute()
    check_destination(out, force, error=BuildError)
    tolerance = tolerance or default_tolerance(dtype)
    cast_parameters(source.model, dtype)
    with staged_directory(out) as staging:
        plan = graph_plan(source.model)
        external = needs_external_data(source.model, external_data_bytes)
        infos = []
        bar = tqdm(list(plan), desc="export", unit="graph", disable=not progress)
        for role in bar:
            bar.set_postfix_str(role)
            logger.info("stage: %s", f"export {role}")
            infos.append(export_graph(role, plan.pop(role), staging, external_data=external))
            gc.collect()  # the traced program and its ONNX IR go before the next graph is traced
        logger.info("stage: %s", "manifest (file hashes)")
        source.tokenizer.save(str(staging / TOKENIZER_NAME))
        manifest = build_manifest(source, infos, staging, seed, parity={})
        save_manifest(manifest, staging)
        start = time.perf_counter()
        reference = source.reference_model()  # a Hugging Face checkpoint: what transformers loads, not our rebuild
        cast_parameters(reference, dtype)  # the same rounded weights, computed in float32 by parity
        freed = (lambda: release_weights(source.model, reference)) if release_model else None
        report = run_parity(reference, staging, manifest, seed=seed, tol=tolerance, progress=progress,
                            count=parity_observations, references_done=freed)
        report["seconds"] = round(time.perf_counter() - start, 2)
        report["reference_model"] = source.reference_label
        manifest = dataclasses.replace(manifest, parity=report)  # the files are unchanged since hashing
        save_manifest(manifest, staging)
        failure = parity_failure(report)
        if failure:
            kept = _keep_failed(staging, out)
            raise ParityError(f"parity failed: {failure}; the graphs are kept in {kept} for inspection")
        logger.info("stage: %s", "health sample")
        record_sample(staging)  # what `flash --check` compares against on the robot
    logger.info("bundle written to %s", out)
    return out


def _keep_failed(staging: Path, out: Path) -> Path:
    """Move the staged graphs aside (replacing an older failed build) before staging is cleaned up."""
    kept = failed_directory(out)
    shutil.rmtree(kept, ignore_errors=True)
    staging.rename(kept)
    return kept


def build_bundle(
    out_dir: str | Path,
    head: str,
    preset: str = "tiny",
    checkpoint: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    dtype: str = "fp32",
) -> Path:
    """Build a verified bundle for one head from a size preset or a local checkpoint directory."""
    source = load_source(head, preset=preset, checkpoint=checkpoint, seed=seed, dtype=dtype)
    return build_from_source(source, out_dir, seed=seed, progress=progress, force=force, dtype=dtype,
                             release_model=True)
