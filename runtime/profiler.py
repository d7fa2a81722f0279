"""Per-stage timing of every tick, summarised as one table, a JSON file and a trace.

Everything is recorded as spans on the same monotonic clock the scheduler paces with, so the
table (percentiles per stage), the JSON (the same numbers plus the pacing figures) and the
Chrome/Perfetto trace (every span in place) can never disagree. Inference running in its own
thread records on its own track; the lock keeps the two writers apart.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Display order of the table; stages not listed here follow in the order first seen.
STAGE_ORDER = (
    "state",
    "capture",
    "infer",
    "preprocess",
    "tokenize",
    "vision",
    "prefill",
    "decode",
    "head",
    "velocity",
    "network",  # remote backend: transfer, (de)serialisation and the server's queue
    "server",  # remote backend: the server's graphs and decode loop
    "decode_actions",
    "safety",
    "command",
    "record",
    "work",
    "slack",
)
# Stages that run inside "infer"; shown indented under it.
INFER_STAGES = ("preprocess", "tokenize", "vision", "prefill", "decode", "head", "velocity", "network", "server",
                "decode_actions")


def _display_rank(stage: str) -> int:
    """Table position; a per-view stage such as preprocess[wrist] sits with its stage."""
    base = stage.split("[")[0]
    return STAGE_ORDER.index(base) if base in STAGE_ORDER else len(STAGE_ORDER)


MAX_SPANS = 2_000_000  # spans kept for the trace; beyond this only the statistics continue


@dataclass(frozen=True)
class Span:
    name: str  # stage name
    track: str  # "loop" or "inference" (the async worker thread)
    t_start: float  # seconds, scheduler clock
    duration: float  # seconds
    tick: int  # slot index the span belongs to (-1 outside ticks)


class Profiler:
    """Collects stage spans and per-tick pacing; summarises at the end."""

    def __init__(self, period: float):
        self.period = period  # seconds
        self.t0: float | None = None
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = {}
        self._spans: list[Span] = []
        self._truncated = False
        self._tick = -1
        self._tick_start = 0.0
        self._tick_stages: dict[str, float] = {}  # seconds per loop stage of the current tick
        self.slots: list[int] = []  # slot index of each tick run
        self.starts: list[float] = []  # seconds, when each tick actually started
        self.lateness: list[float] = []  # seconds, start minus absolute deadline
        self.missed: list[int] = []  # slot indices of ticks that overran the next deadline

    def start(self, t0: float) -> None:
        self.t0 = t0

    # -- recording -----------------------------------------------------------------------------
    def begin_tick(self, k: int, deadline: float, t_start: float) -> None:
        self._tick = k
        self._tick_start = t_start
        self._tick_stages = {}
        self.slots.append(k)
        self.starts.append(t_start)
        self.lateness.append(t_start - deadline)

    def record(self, name: str, t_start: float, seconds: float, track: str = "loop") -> None:
        """Add one span; `track` separates the loop thread from the inference thread."""
        tick = self._tick if track == "loop" else -1
        if track == "loop":
            self._tick_stages[name] = self._tick_stages.get(name, 0.0) + seconds
        with self._lock:
            self._samples.setdefault(name, []).append(seconds)
            if len(self._spans) < MAX_SPANS:
                self._spans.append(Span(name, track, t_start, seconds, tick))
            elif not self._truncated:
                self._truncated = True
                logger.warning("profiler: trace truncated at %d spans; statistics continue", MAX_SPANS)

    def record_stages(self, stage_times: dict[str, float], t_start: float, track: str = "loop") -> None:
        """Fold a policy's per-stage seconds in, laid end to end from `t_start` for the trace."""
        t = t_start
        for name, seconds in stage_times.items():
            self.record(name, t, float(seconds), track)
            t += float(seconds)

    def tick_stages(self) -> dict[str, float]:
        """A copy of the current tick's loop stages so far, in seconds (what the recorder stores)."""
        return dict(self._tick_stages)

    def end_tick(self, t_end: float, slack: float, missed: bool) -> None:
        self.record("work", self._tick_start, t_end - self._tick_start)
        self.record("slack", t_end, max(slack, 0.0))
        if missed:
            self.missed.append(self._tick)

    # -- results -------------------------------------------------------------------------------
    @property
    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def stage_stats(self) -> dict[str, dict[str, float]]:
        """Per stage: count and p50/p95/p99/max in milliseconds."""
        with self._lock:
            samples = {k: list(v) for k, v in self._samples.items()}
        names = sorted(samples, key=_display_rank)  # stable: unlisted stages keep the order first seen
        out = {}
        for name in names:
            ms = np.asarray(samples[name]) * 1e3
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            out[name] = {"n": int(ms.size), "p50": p50, "p95": p95, "p99": p99, "max": float(ms.max())}
        return out

    def pacing(self) -> dict[str, float]:
        """Period error (interval minus its scheduled length), lateness, drift and misses."""
        starts = np.asarray(self.starts)
        slots = np.asarray(self.slots)
        late = np.abs(np.asarray(self.lateness)) * 1e3  # ms
        out = {
            "ticks": int(starts.size),
            "deadline_misses": len(self.missed),
            "skipped_slots": int(slots[-1] - slots[0] + 1 - slots.size) if slots.size else 0,
            "rate_hz": 1.0 / self.period,
        }
        if starts.size >= 2:
            err = np.abs(np.diff(starts) - np.diff(slots) * self.period) * 1e3  # ms
            out.update(
                period_error_p50_ms=float(np.percentile(err, 50)),
                period_error_p99_ms=float(np.percentile(err, 99)),
                period_error_max_ms=float(err.max()),
                # accumulated: where the last tick started versus where the grid says it should
                drift_ms=float((starts[-1] - starts[0] - (slots[-1] - slots[0]) * self.period) * 1e3),
                achieved_hz=float((starts.size - 1) / (starts[-1] - starts[0])),
            )
        if late.size:
            out.update(lateness_p50_ms=float(np.percentile(late, 50)), lateness_max_ms=float(late.max()))
        return out

    def summary(self) -> dict:
        return {"stages_ms": self.stage_stats(), "pacing": self.pacing()}

    def table(self) -> str:
        """The one compact per-stage table printed at the end of a run."""
        lines = [f"{'stage':<20}{'n':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}"]
        for name, s in self.stage_stats().items():
            label = f"  {name}" if name.split("[")[0] in INFER_STAGES else name  # preprocess[wrist]: one view
            lines.append(
                f"{label:<20}{s['n']:>7}{s['p50']:>10.2f}{s['p95']:>10.2f}{s['p99']:>10.2f}{s['max']:>10.2f}"
            )
        p = self.pacing()
        lines.append(
            f"ticks {p['ticks']} at {p['rate_hz']:g} Hz | deadline misses {p['deadline_misses']}"
            f" (skipped slots {p['skipped_slots']})"
        )
        if "period_error_p50_ms" in p:
            lines.append(
                f"period error p50 {p['period_error_p50_ms']:.3f} / p99 {p['period_error_p99_ms']:.3f}"
                f" / max {p['period_error_max_ms']:.3f} ms | drift {p['drift_ms']:+.3f} ms"
                f" | achieved {p['achieved_hz']:.2f} Hz"
            )
        return "\n".join(lines)

    def save_json(self, path: str | Path, extra: dict | None = None) -> Path:
        path = Path(path)
        doc = {**self.summary(), **(extra or {})}
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return path
