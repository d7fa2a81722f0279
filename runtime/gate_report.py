"""The accuracy-gate report of a bundle as a readable table (stdlib only, robot side).

`manifest.gate` is written by `vla-export quantize`; `vla-runtime inspect` and the quantize
command both print it with this function, so what an operator reads on the robot is exactly
what the workstation printed.
"""

from __future__ import annotations

from collections.abc import Mapping


def format_gate(gate: Mapping | None) -> str:
    """Multi-line summary: verdict, action-level checks, per-dimension errors, per-graph losses."""
    if not gate:
        return "accuracy gate: none (an FP32 bundle, or not quantized by vla-export quantize)"
    metrics = gate.get("metrics", {})
    limits = gate.get("thresholds", {})
    verdict = "PASSED" if gate.get("passed") else "FAILED"
    head = f"accuracy gate: {verdict}"
    extras = [f"variant {gate['variant']}"] if gate.get("variant") else []
    if "frames" in metrics:
        extras.append(f"{metrics['frames']} held-out frames")
    lines = [head + (f" ({', '.join(extras)})" if extras else "")]
    if not gate.get("passed") and gate.get("summary"):
        lines.append(f"  why: {gate['summary']}")
    checks = []
    if "token_agreement" in metrics:
        limit = limits.get("min_token_agreement", 0)
        checks.append(f"token agreement {metrics['token_agreement']:.1%} (>= {limit:.0%}),"
                      f" mean bin distance {metrics.get('mean_bin_distance', 0):.3f}")
    if "flow_cosine_min" in metrics:
        checks.append(f"flow cosine min {metrics['flow_cosine_min']:.5f} (>= {limits.get('min_flow_cosine', 0)}),"
                      f" flow max error {metrics.get('flow_max_error', 0):.4g} (<= {limits.get('max_flow_error', 0)})")
    lines.extend(f"  {c}" for c in checks)
    mae = metrics.get("mae", {})
    if mae:
        frac, units, peak = metrics.get("mae_fraction", {}), metrics.get("units", {}), metrics.get("max_abs", {})
        limit = limits.get("max_mae_fraction")
        lines.append(f"  {'dim':<10} {'unit':<6} {'MAE':>10} {'of span':>8} {'max err':>10}"
                     + (f"   (limit {limit:.1%} of span)" if limit is not None else ""))
        for name, value in mae.items():
            mark = "  <- worst" if name == metrics.get("worst_dim") else ""
            lines.append(f"  {name:<10} {units.get(name, ''):<6} {value:>10.3g} {frac.get(name, 0):>8.2%} "
                         f"{peak.get(name, 0):>10.3g}{mark}")
    per_graph = gate.get("per_graph", {})
    if per_graph:
        graphs = gate.get("graphs", {})
        lines.append(f"  {'graph':<10} {'precision':<9} {'cosine':>9} {'max abs':>10}  worst output")
        for role, row in per_graph.items():
            precision = graphs.get(role, {}).get("precision", "")
            mark = "  <- lost most" if role == gate.get("worst_graph") else ""
            lines.append(f"  {role:<10} {precision:<9} {row.get('cosine', 0):>9.5f} {row.get('max_abs', 0):>10.3g}"
                         f"  {row.get('worst_output', '')}{mark}")
    lines.extend(behaviour_lines(gate.get("behaviour")))
    calib = gate.get("calibration")
    if calib:
        counts = ", ".join(f"{r} {c.get('samples')} ({c.get('steps')} step{'s' if c.get('steps') != 1 else ''})"
                           for r, c in calib.get("samples", {}).items())
        lines.append(f"  calibration: {calib.get('source', '?')}; {calib.get('frames')} frames, "
                     f"{calib.get('method')}; inputs per graph: {counts}")
    return "\n".join(lines)


def behaviour_lines(behaviour: Mapping | None) -> list[str]:
    """The closed-loop stage: both success rates with their intervals, the drop and its limit."""
    if not behaviour:
        return []
    seeds = behaviour.get("seeds", [])
    span = f"seeds {seeds[0]}..{seeds[-1]}" if seeds else "no seeds"
    limit = behaviour.get("options", {}).get("max_success_drop")
    lines = [f"  closed loop: {'PASSED' if behaviour.get('passed') else 'FAILED'} ({len(seeds)} paired sim episodes, "
             f"{span}); success drop {behaviour.get('success_drop_points', 0):.1f} points (<= {limit:g})"]
    for name in ("fp32", "quantized"):
        rate = behaviour.get(name, {})
        low, high = rate.get("wilson95", (0.0, 0.0))
        lines.append(f"    {name:<9} {rate.get('successes')}/{rate.get('episodes')} = "
                     f"{100 * rate.get('success_rate', 0):.1f} % (95 % CI {100 * low:.1f}-{100 * high:.1f} %)")
    lines.append(f"    discordant seeds: fp32 only {behaviour.get('only_fp32_succeeded', 0)}, "
                 f"quantized only {behaviour.get('only_quantized_succeeded', 0)}")
    return lines
