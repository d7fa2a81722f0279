"""`vla-runtime run` / `profile` from the command line: outputs, files, errors, and no torch."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import vla_runtime.runtime.sim  # noqa: F401 - picks MuJoCo's offscreen GL before mujoco is imported

pytest.importorskip("mujoco", reason="needs MuJoCo (pip install vla-runtime[sim])")

from vla_runtime.runtime.cli import main  # noqa: E402
from vla_runtime.runtime.default_bundle import default_bundle_dir  # noqa: E402

LENIENT = ["--max-misses", "100000"]  # a busy test machine may overrun; these tests are about outputs


def run_cli(args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "vla_runtime.runtime.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def test_runtime_never_loads_torch_or_transformers(tiny_bundle):
    bundle = tiny_bundle("parallel")
    code = (
        "import sys\n"
        "from vla_runtime.runtime.cli import main\n"
        f"rc = main(['--bundle', {str(bundle)!r}, '--steps', '3', '--hz', '20', *{LENIENT!r}])\n"
        "rc2 = main(['profile', '--bundle', " + repr(str(bundle)) + ", '--iterations', '2', '--hz', '50'])\n"
        "loaded = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "print('LOADED', loaded)\n"
        "sys.exit(rc or rc2 or (3 if loaded else 0))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "LOADED []" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr


def test_run_prints_the_table_and_writes_profile_trace_and_episode(tiny_bundle, tmp_path, capsys):
    profile, trace, record = tmp_path / "p.json", tmp_path / "t.json", tmp_path / "episodes"
    rc = main([
        "--bundle", str(tiny_bundle("parallel")), "--steps", "6", "--hz", "20", *LENIENT,
        "--profile", str(profile), "--trace", str(trace), "--record", str(record), "--set", "sim.block_jitter=0.02",
    ])
    out = capsys.readouterr().out
    assert rc == 0
    for text in ("p50 ms", "capture", "infer", "  vision", "safety", "command", "period error",
                 "safety: 6 commands", "episode: completed after 6 ticks", "20 Hz"):
        assert text in out, text
    doc = json.loads(profile.read_text())
    assert doc["pacing"]["ticks"] == 6 and doc["episode"]["stop_reason"] == "completed"
    assert {"infer", "vision", "prefill", "head", "safety", "command"} <= set(doc["stages_ms"])
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["ph"] == "X" and e["name"] == "head" for e in events)
    pytest.importorskip("mcap", reason="recording needs the record extra (pip install 'vla-runtime[record]')")
    from vla_runtime.runtime.bundle import open_bundle
    from vla_runtime.runtime.recording import Recording

    rec = Recording(record / "episode_000000.mcap")
    assert "recorded: " in out and "dropped ticks 0" in out
    assert rec.complete and rec.run.task == "pick up the red block" and rec.run.rate_hz == 20.0
    assert "manifest.json" in rec.attachments
    assert rec.run.bundle_id == "seal:" + open_bundle(tiny_bundle("parallel")).seal  # which exact bundle drove
    assert rec.attachments["robot/overrides.txt"] == b"sim.block_jitter=0.02\n"  # the robot file as it ran
    ticks = list(rec.ticks())
    assert [t.slot for t in ticks] == sorted(t.slot for t in ticks) and len(ticks) == 6
    frame = ticks[0].images[rec.run.cameras[0]].decode()
    assert frame.dtype == np.uint8 and frame.shape[-1] == 3
    assert all(t.state.shape == (7,) and t.sent.shape == (7,) and np.all(np.isfinite(t.sent)) for t in ticks)
    assert ticks[0].chunk == 0 and ticks[-1].chunk >= 1  # the warm-up chunk, then replanned ones
    assert any(t.inference >= 1 and "infer" in t.stages_ms for t in ticks)


def test_the_readme_command_reuses_the_cached_default_bundle(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = default_bundle_dir("parallel")
    shutil.copytree(tiny_bundle("parallel"), cached)  # what the first run leaves behind
    proc = run_cli(["--task", "pick up the red block", "--steps", "3", *LENIENT],
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "building" not in proc.stderr
    assert "random-weight demo" in proc.stdout and "episode: completed after 3 ticks" in proc.stdout


def test_scripted_policy_and_async_flags(capsys):
    rc = main(["--policy", "scripted", "--steps", "4", "--hz", "20", "--async", *LENIENT])
    out = capsys.readouterr().out
    assert rc == 0 and "async" in out and "scripted" in out


def test_profile_command(tiny_bundle, tmp_path, capsys):
    out_json = tmp_path / "prof.json"
    rc = main(["profile", "--bundle", str(tiny_bundle("tokens")), "--iterations", "3", "--warmup", "1",
               "--hz", "50", "--image-size", "64", "--profile", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0 and "  decode" in out and "3 inferences at 50 Hz" in out
    assert json.loads(out_json.read_text())["stages_ms"]["infer"]["n"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0", "--policy", "scripted"], "--steps 0"),
        (["--hz", "-1", "--policy", "scripted"], "--hz -1"),
        (["--robot", "no-such-robot"], "unknown robot"),
        (["--bundle", "/nonexistent/bundle"], "bundle"),
        (["--policy", "scripted", "--replan-every", "9"], "--replan-every 9"),
        (["profile", "--bundle", "/nonexistent/bundle"], "bundle"),
        (["--policy", "scripted", "--bundle", "some/bundle"], "drop --bundle"),
        (["--policy", "scripted", "--rt-priority", "200"], "--rt-priority 200"),
    ],
)
def test_user_mistakes_get_one_line_and_no_traceback(args, message, capsys):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_action_space_mismatch_is_caught_before_any_port_opens(tiny_bundle, tmp_path, capsys):
    robot = tmp_path / "arm.toml"
    robot.write_text(
        '[robot]\nname = "bench"\n[arm]\ndriver = "dynamixel"\nport = "/nonexistent/ttyUSB9"\n'
        '[[arm.joints]]\nname = "j1"\nmin = -1.0\nmax = 1.0\nmax_velocity = 1.0\n'
        '[cameras.front]\nkind = "v4l2"\n[action]\nmapping = "joint_position"\n'
    )
    rc = main(["--bundle", str(tiny_bundle("parallel")), "--robot", str(robot)])
    err = capsys.readouterr().err
    assert rc == 2 and "emits ee_delta actions" in err and "ttyUSB9" not in err
