"""Closed-loop evaluation: Wilson intervals, held-out seeds, the expert's ceiling, the shipped policy."""

import json
import math

import pytest
import vla_runtime.runtime.sim  # noqa: E402,F401 - picks the offscreen GL platform before MuJoCo loads
from vla_runtime.runtime.evaluation import summarize, wilson_interval
from vla_runtime.runtime.sim.tasks import (
    HELD_OUT_SEED_START,
    UnknownTaskError,
    check_demo_seeds,
    check_eval_seeds,
    demo_task,
    task_block,
)

pytest.importorskip("mujoco", reason="closed-loop episodes need MuJoCo (pip install vla-runtime[sim])")

from vla_runtime.runtime.cli import main  # noqa: E402
from vla_runtime.runtime.sim.episode import EpisodeOutcome  # noqa: E402


def test_wilson_interval_matches_the_closed_form():
    low, high = wilson_interval(40, 50)
    assert math.isclose(low, 0.6696, abs_tol=1e-4) and math.isclose(high, 0.8876, abs_tol=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and math.isclose(wilson_interval(0, 10)[1], 0.2775, abs_tol=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and math.isclose(wilson_interval(10, 10)[0], 0.7225, abs_tol=1e-4)
    for k in range(0, 21):  # symmetric in successes <-> failures, and always contains the estimate
        lo, hi = wilson_interval(k, 20)
        assert math.isclose(lo, 1 - wilson_interval(20 - k, 20)[1], abs_tol=1e-12)
        assert lo <= k / 20 <= hi
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_summary_counts_per_instruction():
    def outcome(task, ok, seed):
        return EpisodeOutcome(seed, task, task_block(task), ok, 0.15 if ok else 0.0, 3.0 if ok else None,
                              "completed", 100, 50, 1, {"workspace": 2} if not ok else {})

    s = summarize([outcome("pick up the red block", True, 1), outcome("pick up the red block", False, 2),
                   outcome("lift the blue block", True, 3)])
    assert (s["episodes"], s["successes"]) == (3, 2)
    assert s["per_task"]["pick up the red block"]["successes"] == 1
    assert s["per_task"]["lift the blue block"]["median_time_to_success_s"] == 3.0
    assert s["safety_interventions"] == {"workspace": 2} and s["deadline_misses"] == 3


def test_tasks_name_exactly_one_block_and_demo_seeds_stay_out_of_the_held_out_range():
    assert task_block("Pick up the GREEN cube") == "green_block"
    assert {task_block(demo_task(s)) for s in range(3)} == {"red_block", "green_block", "blue_block"}
    for bad in ("pick up the block", "put the red block on the blue block"):
        with pytest.raises(UnknownTaskError):
            task_block(bad)
    check_demo_seeds(0, HELD_OUT_SEED_START)
    with pytest.raises(ValueError):
        check_demo_seeds(HELD_OUT_SEED_START - 1, 2)
    with pytest.raises(ValueError):
        check_eval_seeds(HELD_OUT_SEED_START - 1, 1)


def test_eval_refuses_demonstration_seeds(capsys):
    assert main(["eval", "--policy", "scripted", "--episodes", "2", "--seed", "7"]) == 2
    assert "held-out" in capsys.readouterr().err
    assert main(["--policy", "scripted", "--episodes", "2", "--seed", str(HELD_OUT_SEED_START)]) == 2
    assert "held out" in capsys.readouterr().err


def test_scripted_expert_lifts_every_colour_and_reports_json(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--policy", "scripted", "--episodes", "3", "--steps", "60", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["summary"]["successes"] == 3 and len(doc["summary"]["per_task"]) == 3
    assert {e["block"] for e in doc["episodes"]} == {"red_block", "green_block", "blue_block"}
    assert all(e["lifted_m"] > 0.1 and 1.0 < e["time_to_success_s"] < 6.0 for e in doc["episodes"])
    assert "success: 3/3 = 100.0 %" in capsys.readouterr().out


def test_scripted_demonstrations_record_many_episodes(tmp_path):
    from vla_runtime.runtime.recording import Recording

    rec = tmp_path / "demos"
    argv = ["--policy", "scripted", "--episodes", "3", "--seed", "10", "--steps", "20", "--record", str(rec),
            "--record-raw"]
    assert main(argv) == 0
    files = sorted(rec.glob("episode_*.mcap"))
    assert [Recording(f).run.task for f in files] == [demo_task(s) for s in (10, 11, 12)]
    ticks = list(Recording(files[0]).ticks())
    assert len(ticks) == 20 and ticks[5].sent.shape == (7,) and ticks[5].images


def test_the_shipped_demo_policy_lifts_a_block(demo_bundle, tmp_path):
    out = tmp_path / "eval.json"
    rc = main(["eval", "--bundle", str(demo_bundle), "--episodes", "3", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert rc == 0 and doc["summary"]["successes"] >= 1, doc["summary"]


def test_a_run_of_the_shipped_policy_ends_with_the_block_it_was_told_to_lift(demo_bundle, capsys):
    """The default scene (seed 0), paced like a robot: the last line is the simulator's verdict."""
    rc = main(["--task", "pick up the blue block", "--bundle", str(demo_bundle), "--steps", "50"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0 and last.startswith("sim: blue_block moved") and last.endswith(": picked up"), last


def test_eval_plot_draws_this_run_beside_earlier_results(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (pip install vla-runtime[viz])")
    from vla_runtime.runtime.eval_plot import colour_rates

    first = tmp_path / "expert.json"
    assert main(["eval", "--policy", "scripted", "--episodes", "2", "--steps", "60", "--json", str(first)]) == 0
    assert colour_rates(json.loads(first.read_text())["summary"]) == {"red": (1, 1), "green": (1, 1)}
    png = tmp_path / "success.png"
    argv = ["eval", "--policy", "scripted", "--episodes", "1", "--steps", "60", "--plot", str(png),
            "--compare", str(first)]
    assert main(argv) == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {png}" in capsys.readouterr().out
    assert main(["eval", "--policy", "scripted", "--episodes", "1", "--compare", str(first)]) == 2  # no --plot
    assert main(["eval", "--policy", "scripted", "--plot", str(png), "--compare", str(png)]) == 2  # not JSON
    assert "--compare" in capsys.readouterr().err
