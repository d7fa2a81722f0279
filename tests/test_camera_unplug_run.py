"""A camera that stops delivering during a run holds the arm, and the run resumes when frames return;
a bundle's camera view that the robot file lacks is refused before anything opens."""

from __future__ import annotations

import re

import numpy as np
import pytest
import vla_runtime.runtime.sim  # noqa: F401 - picks MuJoCo's offscreen GL before mujoco is imported
from vla_runtime.runtime.cli import main

cv2 = pytest.importorskip("cv2", reason="the video camera needs opencv-python-headless")
pytest.importorskip("mujoco", reason="the simulated arm needs MuJoCo")
pytestmark = pytest.mark.timeout(120)


def episode_line(out: str) -> dict:
    line = next(x for x in out.splitlines() if x.startswith("episode:"))
    numbers = {
        "ticks": r"after (\d+) ticks", "inferences": r"\| (\d+) inferences", "starved": r"starved ticks (\d+)",
        "stale": r"stale camera frames (\d+)",
    }
    found = {k: re.search(p, line) for k, p in numbers.items()}
    return {"line": line, **{k: int(m.group(1)) if m else 0 for k, m in found.items()}}


def test_a_video_camera_that_stops_delivering_holds_the_arm_then_resumes(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(10):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((48, 64, 3), 20 * i, np.uint8))
    camera = [f"cameras.front.{kv}" for kv in (
        "kind=video", f"path={folder}", "fps=20.0", "stop_after=1.0", "resume_after=0.5", "max_age=0.3")]
    args = ["--policy", "scripted", "--steps", "40", "--max-misses", "1000"]
    rc = main(args + [a for kv in camera for a in ("--set", kv)])
    out = capsys.readouterr().out
    episode = episode_line(out)
    assert rc == 0 and episode["ticks"] == 40, out
    # ~1.0 s in, frames stop; 0.3 s later they are stale and the arm holds (no inference) until the
    # source is reopened ~0.7 s after the loss; without the resume it would hold for the remaining ~27 ticks
    assert 2 <= episode["stale"] <= 15, episode["line"]
    assert episode["starved"] >= episode["stale"]  # every stale tick held the arm
    assert episode["inferences"] >= 12, episode["line"]  # replanning every 2 ticks resumed after the gap


def test_a_camera_view_the_robot_lacks_is_refused_before_anything_opens(tiny_bundle, tmp_path, capsys):
    robot = tmp_path / "wrist_only.toml"
    robot.write_text(
        '[robot]\nname = "bench"\n[arm]\ndriver = "dynamixel"\nport = "/nonexistent/ttyUSB9"\n'
        '[[arm.joints]]\nname = "j1"\nmin = -1.0\nmax = 1.0\nmax_velocity = 1.0\n'
        '[cameras.wrist]\nkind = "v4l2"\ndevice = "/nonexistent/video9"\n'
    )
    rc = main(["--bundle", str(tiny_bundle("parallel")), "--robot", str(robot)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "needs camera view 'front'" in err and "[cameras.wrist]" in err
    assert "ttyUSB9" not in err and "video9" not in err  # neither the bus nor the camera was opened
