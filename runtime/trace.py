"""Write profiler spans as a Chrome trace (opens in Perfetto UI and chrome://tracing).

The JSON "trace event" format is the lowest common denominator both viewers read: complete
events (``ph: X``) with microsecond timestamps, one thread row per track, and an instant marker
on every tick that missed its deadline so overruns are visible at a glance.
"""

from __future__ import annotations

import json
from pathlib import Path

from vla_runtime.runtime.profiler import Profiler

_TRACKS = {"loop": 1, "inference": 2}  # track name -> thread id in the trace


def trace_events(profiler: Profiler, process_name: str = "vla-runtime") -> list[dict]:
    t0 = profiler.t0 if profiler.t0 is not None else 0.0
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": process_name}}]
    for track, tid in _TRACKS.items():
        events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": track}})
    for span in profiler.spans:
        events.append(
            {
                "name": span.name,
                "cat": span.track,
                "ph": "X",
                "pid": 1,
                "tid": _TRACKS.get(span.track, 3),
                "ts": round((span.t_start - t0) * 1e6, 3),  # microseconds since tick 0's deadline
                "dur": round(span.duration * 1e6, 3),
                "args": {"tick": span.tick},
            }
        )
    missed = set(profiler.missed)
    for k, start in zip(profiler.slots, profiler.starts, strict=True):
        if k in missed:
            events.append(
                {"name": "deadline miss", "ph": "i", "s": "t", "pid": 1, "tid": 1,
                 "ts": round((start - t0) * 1e6, 3), "args": {"tick": k}}
            )
    return events


def write_trace(profiler: Profiler, path: str | Path, metadata: dict | None = None) -> Path:
    path = Path(path)
    doc = {"traceEvents": trace_events(profiler), "displayTimeUnit": "ms", "metadata": metadata or {}}
    path.write_text(json.dumps(doc) + "\n")
    return path
