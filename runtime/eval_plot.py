"""Success rates as a picture: one bar per variant, its 95 % Wilson interval, and one dot per colour.

A table of "34/50 (54-79 %)" against "33/50 (52-78 %)" hides how much two intervals overlap;
drawn side by side it is obvious whether INT8 or an export changed anything. The input is the
`summarize` dict of runtime/evaluation.py, so `vla-runtime eval --plot` and the behaviour
benchmark draw the same figure. matplotlib is optional (the `viz` extra); callers check for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vla_runtime.runtime.sim.tasks import COLOURS

logger = logging.getLogger(__name__)

_COLOUR_DOTS = {"red": "tab:red", "green": "tab:green", "blue": "tab:blue"}


def colour_rates(summary: dict) -> dict[str, tuple[int, int]]:
    """colour -> (successes, episodes) over every instruction that names it."""
    out: dict[str, tuple[int, int]] = {}
    for task, entry in summary["per_task"].items():
        words = set(task.lower().split())
        for colour in COLOURS:
            if colour in words:
                k, n = out.get(colour, (0, 0))
                out[colour] = (k + entry["successes"], n + entry["episodes"])
    return out


def plot_success(rows: list[tuple[str, dict]], path: str | Path, title: str) -> Path:
    """Bars of success rate with Wilson 95 % intervals, per-colour dots; rows are (label, summary)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(rows) + 2.5), 4.2), dpi=110)
    for i, (_, s) in enumerate(rows):
        rate, (low, high) = 100 * s["success_rate"], s["wilson95"]
        ax.bar(i, rate, width=0.6, color="0.75", edgecolor="0.3")
        ax.errorbar(i, rate, yerr=[[rate - 100 * low], [100 * high - rate]], color="black", capsize=4, lw=1.2)
        ax.text(i, 2, f"{s['successes']}/{s['episodes']}", ha="center", va="bottom", fontsize=8)
        for j, (colour, (k, n)) in enumerate(sorted(colour_rates(s).items())):
            ax.plot(i - 0.2 + 0.2 * j, 100 * k / n, "o", color=_COLOUR_DOTS.get(colour, "black"), ms=5,
                    label=colour if i == 0 else None)
    ax.set_xticks(range(len(rows)), [label for label, _ in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success % (bar: 95 % Wilson CI)")
    ax.set_title(title, fontsize=10)
    if any(colour_rates(s) for _, s in rows):
        ax.legend(title="per colour", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
