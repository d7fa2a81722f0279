"""`vla-runtime inspect BUNDLE`: what a bundle holds, and proof that every file is intact.

Runs on the robot (no torch): reads the manifest through the same validation the loader
uses, prints a summary an operator can check against the build log, then proves the bundle:
the seal over the manifest, confinement, every file's hash, graph external-data references and,
when a trust store is given (or present on this machine), the signature. Any problem is one
line naming the file or field, and a non-zero exit.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vla_runtime.common.errors import UserError
from vla_runtime.runtime.bundle import Bundle, BundleError, verify_files
from vla_runtime.runtime.manifest import MANIFEST_NAME, Manifest, ManifestError, load_sealed

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="summarise a bundle and verify every file's sha256")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory (as written by `vla-export build`)")
    p.add_argument("--trusted-keys", metavar="DIR", help="check the signature against this trust store "
                   "(default: $VLA_RUNTIME_TRUSTED_KEYS or /etc/vla-runtime/trusted-keys when it exists)")
    p.set_defaults(func=run)


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return str(nbytes)


def _shape(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def parity_lines(parity: dict) -> list[str]:
    """Per-graph max abs error and the action-level verdict, one line each (also used by vla-export)."""
    if not parity:
        return ["parity: not recorded"]
    lines = [f"parity: {'PASSED' if parity.get('passed') else 'FAILED'}  (runner: {parity.get('runner', '?')})"]
    tol = parity.get("graph_tolerance", float("nan"))
    rel = parity.get("tolerance", {}).get("rtol")
    bound = f"tol {tol:.0e}" if rel is None else f"atol {tol:.0e} + rtol {rel:.0e} x |ref|"
    if parity.get("dtype"):
        lines[0] += f"  dtype {parity['dtype']}"
    for role, g in parity.get("graphs", {}).items():
        mark = "ok" if g.get("passed") else "FAIL"
        lines.append(f"  {role:<9} max abs err {g.get('max_abs_err', float('nan')):.2e}  ({bound})  {mark}")
    resize = parity.get("resize")  # vla-export resize-graph: the graph against PIL, in uint8 levels
    if resize:
        lines.append(f"  resize    max {resize.get('max_levels', float('nan')):.2f} / mean "
                     f"{resize.get('mean_levels', float('nan')):.3f} uint8 levels against PIL")
    act = parity.get("action", {})
    if "bins_total" in act:
        verdict = "identical" if act.get("identical_bins") else "DIFFERENT"
        tie = act.get("bins_within_tolerance")
        ties = "" if tie is None or act.get("identical_bins") else f" ({tie} within tolerance of the best)"
        lines.append(
            f"  actions   {act['bins_matched']}/{act['bins_total']} bins {verdict}{ties} "
            f"over {act.get('observations', '?')} observations"
        )
    elif act:
        lines.append(
            f"  actions   flow chunk max abs err {act.get('max_abs_err', float('nan')):.2e} "
            f"(tol {act.get('tolerance', float('nan')):.0e}) over {act.get('observations', '?')} observations"
        )
    return lines


def gate_lines(gate: dict | None) -> list[str]:
    """The INT8 accuracy gate as a table: one row per metric, whatever the gate recorded."""
    if not gate:
        return ["gate: none (fp32 bundle)"]
    if "metrics" in gate:  # written by `vla-export quantize`: its own table
        from vla_runtime.runtime.gate_report import format_gate

        return format_gate(gate).splitlines()
    lines = [f"gate: {'PASSED' if gate.get('passed') else 'FAILED'}"]
    rows = [(k, v) for k, v in gate.items() if k != "passed"]
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
            lines.append(f"  {key:<{width}}  {inner}")
        else:
            lines.append(f"  {key:<{width}}  {_fmt(value)}")
    return lines


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def summary_lines(root: Path, m: Manifest) -> list[str]:
    model = m.model
    params = model.get("parameters")
    lines = [
        f"bundle: {root}",
        f"schema: {m.schema_version}",
        f"model: {model.get('name', '?')}  ({model.get('architecture', '?')}"
        + (f", {params / 1e6:.2f}M parameters" if isinstance(params, (int, float)) else "")
        + f", source: {model.get('source', '?')})",
        f"head: {m.head}" + _head_detail(m),
        "graphs:",
    ]
    for role, g in m.graphs.items():
        files = [g.file, *g.data_files]
        size = sum((root / f).stat().st_size for f in files if (root / f).is_file())
        lines.append(f"  {role:<9} {g.file}  {g.format}/{g.precision}  {_size(size)}")
        ins = ", ".join(f"{t.name} {t.dtype}{_shape(t.shape)}" for t in g.inputs)
        outs = ", ".join(f"{t.name} {t.dtype}{_shape(t.shape)}" for t in g.outputs)
        lines.append(f"    in:  {ins}")
        lines.append(f"    out: {outs}")
    p, a, n = m.preprocess, m.action, m.action.normalization
    lines += [
        f"preprocess: {p.image_size}x{p.image_size} {p.resample}, rescale {p.rescale_factor:.6g}, "
        f"mean {list(p.image_mean)}, std {list(p.image_std)}",
        "cameras: " + ", ".join(f"{v} ({p.size_of(v)} px)" for v in p.camera_views) + " (the robot's [cameras.NAME])",
        "state: " + (", ".join(f"{name} [{unit}]" for name, unit in zip(m.state.names, m.state.units, strict=True))
                     + f", normalisation {m.state.normalization.kind}" if m.state.names else "none read"),
        f"prompt: {m.prompt.template!r}  tokenizer {m.prompt.tokenizer_file}, bos {m.prompt.bos_token_id}, "
        f"max {m.prompt.max_tokens} tokens",
        f"action: {a.kind}, D={a.dim}, horizon {a.horizon}, {a.bins} bins "
        f"(action ids from {a.action_token_offset}, {a.action_token_order})",
        "  " + ", ".join(f"{name} [{unit}]" for name, unit in zip(a.names, a.units, strict=True)),
        f"normalisation: {n.kind}",
    ]
    stats = {"q01_q99": (("q01", n.low), ("q99", n.high)), "mean_std": (("mean", n.mean), ("std", n.std))}
    for label, values in stats.get(n.kind, ()):
        lines.append(f"  {label:<4} " + " ".join(f"{v:+.4g}" for v in values))
    if n.mask:
        lines.append("  mask " + " ".join("y" if v else "n" for v in n.mask))
    s = m.safety
    lines += [
        f"control: {m.control.rate_hz:g} Hz, replan every {m.control.replan_every} tick(s)",
        f"safety: step <= {s.max_translation_step} m / {s.max_rotation_step} rad, workspace "
        f"{list(s.workspace_min)}..{list(s.workspace_max)} m, gripper {s.gripper_min}..{s.gripper_max}",
    ]
    t = m.target
    target = t.kind
    if t.kind != "cpu":
        target = f"{t.kind} on {t.gpu_name} (sm {t.compute_capability}, TensorRT {t.tensorrt_version})"
    lines.append(f"target: {target}")
    lines += parity_lines(m.parity)
    lines += gate_lines(m.gate)
    if m.versions:
        lines.append("built with: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    return lines


def _head_detail(m: Manifest) -> str:
    d = m.decode
    if m.head == "tokens":
        kv = f"{d.num_layers} layers x {d.num_kv_heads} heads x {d.head_dim}"
        return f" ({m.action.dim} greedy steps over {m.action.bins} action ids, KV cache: {kv})"
    if m.head == "flow":
        return f" ({d.flow_steps} Euler steps, noise seed {d.noise_seed})"
    return " (one pass" + (", conditioned on the previous action)" if d.condition_on_past_action else ")")


def run(args) -> int:
    from vla_runtime.runtime import trust

    root = Path(args.bundle).expanduser()
    try:
        manifest, seal = load_sealed(root)
    except ManifestError as exc:
        where = root / MANIFEST_NAME
        raise UserError(str(exc) if str(exc).startswith(str(root)) else f"{where}: {exc}") from None
    for line in summary_lines(root, manifest):
        print(line)
    try:
        verify_files(root, manifest)
        bundle = Bundle(root=root.resolve(), manifest=manifest, seal=seal)
        signer = trust.enforce(bundle, getattr(args, "trusted_keys", None))
        _, signatures = trust.read_signatures(bundle.root)
    except BundleError as exc:
        raise UserError(str(exc)) from None
    total = sum((root / rel).stat().st_size for rel in manifest.files)
    print(f"files: {len(manifest.files)} verified (sha256), {_size(total)}")
    print(f"seal: {seal} verified (manifest + every file hash)")
    if signer:
        print(f"signature: verified, trusted key {signer}")
    else:
        ids = ", ".join(str(e.get("key_id", "?")) for e in signatures) or "unsigned"
        print(f"signature: not checked (no trust store); signed by: {ids}")
    return 0
