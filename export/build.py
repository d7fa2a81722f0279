"""Build a bundle: model -> component graphs -> manifest -> parity -> health sample -> seal -> rename.

Everything is written into a hidden staging directory next to the destination and renamed
into place only after parity passed, so a failed or interrupted build never leaves a
half-written bundle where a robot could pick it up.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tqdm import tqdm
from vla_runtime.export.checkpoint import Source, from_preset, load_checkpoint
from vla_runtime.export.manifest_writer import TOKENIZER_NAME, build_manifest
from vla_runtime.export.onnx_export import export_graph, graph_plan, needs_external_data
from vla_runtime.export.parity import ParityError, Tolerance, parity_failure, run_parity
from vla_runtime.runtime.bundle import check_destination, staged_directory
from vla_runtime.runtime.health import record_sample
from vla_runtime.runtime.manifest import save_manifest

logger = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """The destination is unusable; the message says how to fix it."""


def load_source(head: str, preset: str = "tiny", checkpoint: str | Path | None = None, seed: int = 0) -> Source:
    if checkpoint is not None:
        return load_checkpoint(checkpoint, head=head, seed=seed)
    return from_preset(preset, head, seed=seed)


def build_from_source(
    source: Source,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    tolerance: Tolerance | None = None,
) -> Path:
    """Export, verify and install a bundle for an already loaded model; returns the bundle path."""
    out = Path(out_dir).expanduser().absolute()
    check_destination(out, force, error=BuildError)
    with staged_directory(out) as staging:
        plan = graph_plan(source.model)
        external = needs_external_data(source.model)
        infos = []
        bar = tqdm(plan.items(), total=len(plan), desc="export", unit="graph", disable=not progress)
        for role, entry in bar:
            bar.set_postfix_str(role)
            infos.append(export_graph(role, entry, staging, external_data=external))
        source.tokenizer.save(str(staging / TOKENIZER_NAME))
        manifest = build_manifest(source, infos, staging, seed, parity={})
        save_manifest(manifest, staging)
        start = time.perf_counter()
        reference = source.reference_model()  # a Hugging Face checkpoint: what transformers loads, not our rebuild
        report = run_parity(reference, staging, manifest, seed=seed, tol=tolerance, progress=progress)
        report["seconds"] = round(time.perf_counter() - start, 2)
        report["reference_model"] = source.reference_label
        failure = parity_failure(report)
        if failure:
            raise ParityError(f"parity failed: {failure}; the exported graphs do not reproduce the model")
        manifest = build_manifest(source, infos, staging, seed, parity=report)
        save_manifest(manifest, staging)
        record_sample(staging)  # what `flash --check` compares against on the robot
    logger.info("bundle written to %s", out)
    return out


def build_bundle(
    out_dir: str | Path,
    head: str,
    preset: str = "tiny",
    checkpoint: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Build a verified bundle for one head from a size preset or a local checkpoint directory."""
    source = load_source(head, preset=preset, checkpoint=checkpoint, seed=seed)
    return build_from_source(source, out_dir, seed=seed, progress=progress, force=force)
