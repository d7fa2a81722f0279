"""The profiler's table, JSON and trace all come from the same recorded spans."""

import json

import pytest
from vla_runtime.runtime.profiler import Profiler
from vla_runtime.runtime.trace import write_trace


def fill(profiler: Profiler, ticks: int = 10):
    period = profiler.period
    profiler.start(0.0)
    for k in range(ticks):
        start = k * period + 0.0001
        profiler.begin_tick(k, k * period, start)
        profiler.record("capture", start, 0.002)
        if k % 2 == 0:
            profiler.record("infer", start + 0.002, 0.010)
            profiler.record_stages({"preprocess": 0.001, "vision": 0.006, "head": 0.003}, start + 0.002)
        profiler.record("command", start + 0.012, 0.001)
        missed = k == 7
        end = start + (0.15 if missed else 0.013)
        profiler.end_tick(end, (k + 1) * period - end, missed)


def test_stage_statistics_and_table():
    p = Profiler(0.1)
    fill(p)
    stats = p.stage_stats()
    assert list(stats)[:4] == ["capture", "infer", "preprocess", "vision"]  # display order
    assert stats["infer"]["n"] == 5 and stats["capture"]["n"] == 10
    assert stats["vision"]["p50"] == pytest.approx(6.0)
    table = p.table()
    for word in ("capture", "  vision", "p99 ms", "deadline misses 1", "period error", "drift"):
        assert word in table
    assert p.pacing()["lateness_p50_ms"] == pytest.approx(0.1)


def test_json_holds_the_same_numbers(tmp_path):
    p = Profiler(0.1)
    fill(p)
    out = p.save_json(tmp_path / "profile.json", {"robot": "sim"})
    doc = json.loads(out.read_text())
    assert doc["robot"] == "sim"
    assert doc["stages_ms"]["head"]["max"] == pytest.approx(3.0)
    assert doc["pacing"]["deadline_misses"] == 1
    assert doc["pacing"]["ticks"] == 10


def test_trace_is_valid_chrome_trace_json(tmp_path):
    p = Profiler(0.1)
    fill(p)
    p.record("infer", 0.05, 0.02, track="inference")
    doc = json.loads(write_trace(p, tmp_path / "trace.json").read_text())
    events = doc["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["tid"] for e in spans} == {1, 2}  # loop and inference tracks
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
    vision = [e for e in spans if e["name"] == "vision"]
    assert vision[0]["ts"] == pytest.approx((0.0001 + 0.002 + 0.001) * 1e6)  # laid after preprocess
    assert [e["args"]["tick"] for e in events if e["ph"] == "i"] == [7]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"loop", "inference"}
