"""`vla-export verify DIR`: re-prove an existing bundle against its source model.

Hashes first (a tampered file is named), then the graphs are run through the runtime's own
policy and backends. When the source model can be rebuilt (a preset with its seed, or
`--checkpoint DIR`), the full parity runs again and must pass; otherwise the policy infers
once and its actions must be finite.
"""

from __future__ import annotations

import logging

import numpy as np
from vla_runtime.common.errors import UserError

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("verify", help="re-check a bundle's hashes and parity against its source model")
    p.add_argument("bundle", metavar="DIR", help="bundle directory")
    p.add_argument("--checkpoint", metavar="DIR", help="the checkpoint the bundle was built from")
    p.set_defaults(func=run)


def _source_for(manifest, checkpoint: str | None):
    """Rebuild the source model, or None when the bundle does not say how."""
    from vla_runtime.export.checkpoint import from_config, from_preset, load_checkpoint
    from vla_runtime.export.presets import VLAConfig
    from vla_runtime.export.state_stats import state_space_stats

    model = manifest.model
    seed = int(model.get("seed", 0))
    if checkpoint:
        return load_checkpoint(checkpoint, head=manifest.head, seed=seed)
    if model.get("preset") in ("tiny", "small") and str(model.get("source", "")).startswith("preset"):
        if isinstance(model.get("config"), dict):  # the preset as built: its views and state too
            return from_config(VLAConfig.from_json(model["config"]), seed, state_norm=state_space_stats(manifest.state))
        return from_preset(model["preset"], manifest.head, seed=seed)
    return None


def run(args) -> int:
    from vla_runtime.export.checkpoint import CheckpointError
    from vla_runtime.export.parity import ParityError, parity_failure, parity_images, run_parity
    from vla_runtime.export.precision import cast_parameters
    from vla_runtime.runtime.bundle import BundleError, open_bundle
    from vla_runtime.runtime.cmd_inspect import gate_lines, parity_lines
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.state_input import resting_state
    from vla_runtime.runtime.types import Frame

    try:
        bundle = open_bundle(args.bundle)
    except BundleError as exc:
        raise UserError(str(exc)) from None
    manifest = bundle.manifest
    print(f"files: {len(manifest.files)} verified (sha256)")
    if any(g.format != "onnx" for g in manifest.graphs.values()):
        print("graphs: TensorRT engines run only on their target GPU; load them there with `vla-runtime`")
        return 0
    if any(g.precision not in ("fp32", "fp16", "bf16") for g in manifest.graphs.values()):
        for line in gate_lines(manifest.gate):
            print(line)
        source = None  # quantized graphs are judged by the accuracy gate, not by fp32 parity
    else:
        try:
            source = _source_for(manifest, args.checkpoint)
        except (CheckpointError, ValueError) as exc:
            raise UserError(str(exc)) from None
    if source is None:
        with load_policy(bundle.root, backend="cpu", allow_failed_gate=True, verify=False) as policy:
            state = resting_state(manifest.state)
            policy.infer(Frame(image=parity_images(1, 0)[0], t_capture=0.0), "pick up the red block", state)
            normalized = policy.last_normalized
        if not np.isfinite(normalized).all():
            raise UserError(f"{args.bundle}: graphs produce non-finite actions; rebuild the bundle")
        print("graphs: ran once, actions finite (no fp32 source model to compare: parity not re-run)")
        return 0
    seed = int(manifest.model.get("seed", 0))
    try:
        reference = cast_parameters(source.reference_model(), manifest.model.get("dtype", "fp32"))  # as exported
        report = run_parity(reference, bundle.root, manifest, seed=seed, progress=True)
    except ParityError as exc:
        raise UserError(str(exc)) from None
    for line in parity_lines(report):
        print(line)
    failure = parity_failure(report)
    if failure:
        raise UserError(f"parity failed: {failure}; rebuild the bundle from the same source")
    return 0
