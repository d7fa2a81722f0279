"""Success statistics of closed-loop episodes: rates with Wilson intervals, per instruction.

A success rate over 50 episodes is an estimate, not a fact: 40/50 is compatible with anything
from about 67 % to 89 %. The Wilson score interval is used because, unlike the normal
approximation, it stays inside [0, 1] and behaves at 0/n and n/n, exactly where a policy that
always or never succeeds puts it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence

from vla_runtime.runtime.sim.episode import EpisodeOutcome

logger = logging.getLogger(__name__)

Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95 % interval


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for a binomial proportion."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    p = successes / trials
    z2 = z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges, not 1 - 1e-16
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def _rate(outcomes: Sequence[EpisodeOutcome]) -> dict:
    n = len(outcomes)
    k = sum(o.success for o in outcomes)
    low, high = wilson_interval(k, n)
    times = sorted(o.time_to_success_s for o in outcomes if o.success and o.time_to_success_s is not None)
    return {
        "episodes": n,
        "successes": k,
        "success_rate": round(k / n, 4),
        "wilson95": [round(low, 4), round(high, 4)],
        "median_time_to_success_s": times[len(times) // 2] if times else None,
    }


def summarize(outcomes: Sequence[EpisodeOutcome]) -> dict:
    """Overall and per-instruction rates, safety interventions and deadline misses."""
    if not outcomes:
        raise ValueError("no episodes to summarize")
    interventions: dict[str, int] = {}
    for o in outcomes:
        for name, count in o.interventions.items():
            interventions[name] = interventions.get(name, 0) + count
    tasks = sorted({o.task for o in outcomes})
    return {
        **_rate(outcomes),
        "per_task": {t: _rate([o for o in outcomes if o.task == t]) for t in tasks},
        "safety_interventions": interventions,
        "safety_held_ticks": sum(o.held for o in outcomes),
        "deadline_misses": sum(o.deadline_misses for o in outcomes),
        "stop_reasons": dict(sorted(Counter(o.stop_reason for o in outcomes).items())),
    }


def format_rate(entry: dict) -> str:
    """'40/50 = 80.0 % (95 % CI 67.0-88.8 %)'."""
    low, high = entry["wilson95"]
    return (f"{entry['successes']}/{entry['episodes']} = {100 * entry['success_rate']:.1f} % "
            f"(95 % CI {100 * low:.1f}-{100 * high:.1f} %)")


def format_summary(summary: dict) -> list[str]:
    """Human lines: overall, one per instruction, then safety and timing."""
    lines = [f"success: {format_rate(summary)}"]
    width = max(len(t) for t in summary["per_task"])
    for task, entry in summary["per_task"].items():
        median = entry["median_time_to_success_s"]
        when = f", median time to success {median:.1f} s" if median is not None else ""
        lines.append(f"  {task:<{width}}  {format_rate(entry)}{when}")
    clamps = ", ".join(f"{k} {v}" for k, v in sorted(summary["safety_interventions"].items())) or "none"
    lines.append(f"safety interventions: {clamps}; held ticks {summary['safety_held_ticks']}")
    lines.append(f"deadline misses: {summary['deadline_misses']}; stops: "
                 + ", ".join(f"{k} {v}" for k, v in summary["stop_reasons"].items()))
    return lines
