"""The MCAP flight recorder: viewer-readable channels, crash safety, bounded memory, drop counting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("mcap", reason="recording needs the record extra (pip install 'vla-runtime[record]')")
pytest.importorskip("mcap_protobuf", reason="recording needs the record extra (pip install 'vla-runtime[record]')")

from mcap.reader import make_reader  # noqa: E402
from mcap_protobuf.decoder import DecoderFactory  # noqa: E402
from vla_runtime.runtime import recording_format as fmt  # noqa: E402
from vla_runtime.runtime.recorder import FlightRecorder, RecorderConfig, TickRecord, next_episode_path  # noqa: E402
from vla_runtime.runtime.recording import Recording  # noqa: E402

JOINTS = ("j1", "j2", "j3")


def run_info(**kw):
    base = dict(task="stack the blocks", rate_hz=10.0, bundle="b", bundle_id="sha256:00", robot="test",
                robot_file="test.toml", cameras=("front",), joint_names=JOINTS, action_kind="joint_position",
                action_names=("q1", "q2", "q3", "gripper"), action_units=("rad", "rad", "rad", "open"))
    base.update(kw)
    return fmt.RunInfo(**base)


def tick(k, image, t=None):
    state = np.array([0.1 * k, 0.2, 0.3, 1.0])
    return TickRecord(k, 0.1 * k if t is None else t, {"front": image}, state[:3], state[3], state + 0.01,
                      state + 0.005, state[:3] + 0.005, 0.9, state + 0.004, ("joint_velocity",) if k % 3 == 0 else (),
                      False, k // 4, k % 4, k if k % 4 == 0 else -1, {"state": 0.0002, "infer": 0.0125}, k == 5)


def test_recording_decodes_with_the_published_schemas(tmp_path):
    """What Foxglove does: decode every protobuf channel from the schemas embedded in the file."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32, 0] = 255  # left half red: survives JPEG with its colour order
    rec = FlightRecorder(tmp_path, run_info(), attachments={"manifest.json": ("application/json", b"{}")})
    path = rec.open()
    for k in range(12):
        assert rec.record(tick(k, image))
        if k == 6:
            rec.event(0.65, "tick 6 failed: no reply from servo 3")
    summary = rec.close("completed")
    assert summary.ticks == 12 and summary.dropped_ticks == 0 and summary.path == path
    assert path.name == "episode_000000.mcap" and next_episode_path(tmp_path).name == "episode_000001.mcap"
    topics: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary_section = reader.get_summary()
        assert {s.name for s in summary_section.schemas.values()} == {
            "foxglove.CompressedImage", "foxglove.JointStates", "foxglove.Log", "vla.Tick"}
        for schema, channel, message in reader.iter_messages():
            topics.setdefault(channel.topic, []).append((schema, message))
        proto_topics = [t for t, v in topics.items() if v[0][0].encoding == "protobuf"]
        for schema, _, _, decoded in reader.iter_decoded_messages(topics=proto_topics):
            assert type(decoded).__name__ == schema.name.split(".")[1]
        meta = {m.name: m.metadata for m in reader.iter_metadata()}
        attachments = {a.name: a.data for a in reader.iter_attachments()}
    assert {t: len(v) for t, v in topics.items()} == {
        "/camera/front": 12, fmt.TOPIC_JOINTS: 12, fmt.TOPIC_COMMAND: 12, fmt.TOPIC_TICK: 12, fmt.TOPIC_EVENTS: 2}
    log = fmt.proto_classes()["Log"]
    events = {log.FromString(m.data).message: (log.FromString(m.data).level, m.log_time)
              for _, m in topics[fmt.TOPIC_EVENTS]}
    level, log_time = events.pop("tick 6 failed: no reply from servo 3")
    assert level == fmt.LOG_LEVELS["warning"]
    assert log_time == topics[fmt.TOPIC_TICK][0][1].log_time + 650_000_000  # on the ticks' clock
    assert [m.split(";")[0] for m in events] == ["episode ended: completed"]
    assert meta["run"]["task"] == "stack the blocks" and meta["run"]["format"] == fmt.FORMAT
    assert attachments == {"manifest.json": b"{}"}
    schema, message = topics[fmt.TOPIC_TICK][5]
    assert schema.encoding == "jsonschema" and json.loads(schema.data)["title"] == "vla.Tick"
    doc = json.loads(message.data)
    jsonschema = pytest.importorskip("jsonschema", reason="validates the tick record against its JSON Schema")
    jsonschema.validate(doc, json.loads(schema.data))
    assert doc["deadline_miss"] is True and doc["chunk"] == 1 and doc["chunk_step"] == 1
    assert doc["stages_ms"] == {"state": 0.2, "infer": 12.5} and len(doc["desired"]) == 4

    back = Recording(path)  # the project's own reader joins the channels into ticks
    ticks = list(back.ticks())
    assert [t.slot for t in ticks] == list(range(12))
    assert ticks[3].interventions == ("joint_velocity",) and ticks[3].inference == -1 and ticks[4].inference == 4
    np.testing.assert_allclose(ticks[7].sent, tick(7, image).sent)
    frame = ticks[2].images["front"].decode()
    assert frame.shape == (48, 64, 3) and frame[:, :28, 0].mean() > 240 and frame[:, 36:, 0].mean() < 15
    np.testing.assert_array_equal(back.image(list(back.ticks(images=False))[2], "front"), frame)


def test_raw_images_are_lossless(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    rec = FlightRecorder(tmp_path, run_info(), RecorderConfig(raw_images=True))
    rec.open()
    rec.record(tick(0, image))
    rec.close()
    (t,) = Recording(rec.path).ticks()
    assert t.images["front"].schema == "foxglove.RawImage"
    np.testing.assert_array_equal(t.images["front"].decode(), image)


def test_a_full_queue_drops_images_first_then_ticks_and_counts_both(tmp_path):
    frame = np.zeros((480, 640, 3), np.uint8)
    rec = FlightRecorder(tmp_path, run_info(), RecorderConfig(raw_images=True, queue_ticks=4))
    rec.open()
    accepted = sum(rec.record(tick(k, frame)) for k in range(60))  # far faster than 640x480 can be written
    summary = rec.close()
    assert summary.dropped_ticks > 0 and summary.dropped_images > 0
    assert accepted == 60 - summary.dropped_ticks == summary.ticks
    ticks = list(Recording(summary.path).ticks())
    assert len(ticks) == summary.ticks and sum(not t.images for t in ticks) == summary.dropped_images
    assert "dropped ticks" in summary.line() and "ticks without images" in summary.line()


def test_a_bad_destination_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        FlightRecorder(tmp_path / "file", run_info())
    with pytest.raises(ValueError, match="at least one camera"):
        run_info(cameras=())


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from vla_runtime.runtime import recording_format as fmt
    from vla_runtime.runtime.recorder import FlightRecorder, RecorderConfig, TickRecord

    run = fmt.RunInfo(task="t", rate_hz=50.0, bundle="b", bundle_id="x", robot="r", robot_file="r.toml",
                      cameras=("front",), joint_names=("j1",), action_kind="joint_position",
                      action_names=("q1", "gripper"))
    rec = FlightRecorder(sys.argv[1], run, RecorderConfig(flush_s=1.0))
    rec.open()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    t0 = time.monotonic()
    for k in range(100000):
        now = time.monotonic()
        s = np.array([k, 1.0])
        rec.record(TickRecord(k, now, {"front": image}, s[:1], 1.0, s, s, s[:1], 1.0, s))
        print(k, flush=True)
        time.sleep(max(0.0, t0 + (k + 1) / 50 - time.monotonic()))
""")


def test_sigkill_mid_run_keeps_all_but_about_the_last_second(tmp_path):
    """A real writer process killed with SIGKILL: the file has no summary but its chunks are readable."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        last = -1
        deadline = time.monotonic() + 60
        while last < 175 and time.monotonic() < deadline:  # 3.5 s of ticks at 50 Hz
            line = proc.stdout.readline()
            if not line:
                break
            last = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert last >= 175, "the child did not get going"
    rec = Recording(tmp_path / "episode_000000.mcap")
    assert not rec.complete and rec.run.task == "t"
    slots = [t.slot for t in rec.ticks()]
    assert slots == list(range(len(slots)))  # nothing garbled, nothing out of order
    lost = last + 1 - len(slots)
    assert 0 <= lost <= 50 * 1.6, f"lost {lost} ticks (= {lost / 50:.2f} s) to the kill"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc (Linux)")
def test_memory_stays_flat_over_many_640x480_ticks(tmp_path):
    """A fresh 640x480 frame per tick, faster than JPEG keeps up: the queue bound caps memory."""
    rec = FlightRecorder(tmp_path, run_info(), RecorderConfig(queue_ticks=16))
    rec.open()
    base = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    samples = []
    for k in range(1000):
        rec.record(tick(k, base.copy(), t=k * 0.001))  # a new array each tick, as a camera delivers
        if k % 100 == 99:
            samples.append(_rss_mb())
        time.sleep(0.0005)
    summary = rec.close()
    growth = max(samples[2:]) - samples[2]
    assert growth < 30, f"RSS grew {growth:.0f} MB after warm-up: {[round(s) for s in samples]}"
    assert summary.ticks + summary.dropped_ticks == 1000


def test_the_control_loop_records_every_tick_and_a_failed_bus_tick_as_an_event(tmp_path):
    """The loop's hook end to end: the scripted policy on the sim, one bus exchange failing mid-run."""
    import vla_runtime.runtime.sim  # noqa: F401 - picks MuJoCo's offscreen GL before mujoco is imported

    pytest.importorskip("mujoco", reason="needs MuJoCo (pip install vla-runtime[sim])")
    from vla_runtime.runtime.loop import ControlLoop, LoopConfig
    from vla_runtime.runtime.manifest import SafetyDefaults
    from vla_runtime.runtime.robot import TransientRobotError
    from vla_runtime.runtime.robot_description import load_robot_description
    from vla_runtime.runtime.safety import ActionSafety, SafetyLimits
    from vla_runtime.runtime.scheduler import Scheduler, SchedulerConfig
    from vla_runtime.runtime.scripted import GraspScript, ScriptedGraspPolicy
    from vla_runtime.runtime.sim.robot import SimCamera, SimRobot
    from vla_runtime.runtime.sim.world import SimConfig, SimWorld

    class FlakyBus(SimRobot):
        calls = 0

        def command(self, joint_targets, gripper, now, period):
            FlakyBus.calls += 1
            if FlakyBus.calls == 4:
                raise TransientRobotError("no reply from servo 3")
            return super().command(joint_targets, gripper, now, period)

    desc = load_robot_description("sim")
    world = SimWorld(SimConfig(seed=0))
    robot, camera = FlakyBus(world), SimCamera(world, 64, 48)
    limits = SafetyLimits.from_sources(SafetyDefaults(), desc.safety, desc.joint_min, desc.joint_max,
                                       desc.joint_max_velocity)
    safety = ActionSafety(limits, "ee_delta", 7, robot.kinematics, 6)
    policy = ScriptedGraspPolicy(lambda: world.body_position("red_block"), GraspScript())
    run = run_info(joint_names=tuple(robot.joint_names), action_kind="ee_delta",
                   action_names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"), action_units=())
    recorder = FlightRecorder(tmp_path, run)
    recorder.open()
    sched = Scheduler(SchedulerConfig(50.0, max_consecutive_misses=1000))
    loop = ControlLoop(LoopConfig(8, replan_every=2), policy, robot, camera, safety, sched, recorder)
    try:
        result = loop.run("pick up the red block")
    finally:
        camera.close()
    summary = recorder.close(result.stop_reason)
    assert result.ticks == 8 and result.failed_ticks == 1 and summary.ticks == 7
    rec = Recording(summary.path)
    ticks = list(rec.ticks())
    assert all(t.images["front"].decode().shape == (48, 64, 3) for t in ticks)
    assert ticks[0].chunk == 0 and [t.chunk for t in ticks] == sorted(t.chunk for t in ticks)
    started = [t for t in ticks if t.inference >= 0]
    assert started and all(t.chunk == t.inference and t.chunk_step == 0 for t in started)  # sync: used at once
    assert all({"state", "capture", "safety", "command"} <= set(t.stages_ms) for t in ticks)
    with open(summary.path, "rb") as f:
        messages = [fmt.proto_classes()["Log"].FromString(m.data).message
                    for _, _, m in make_reader(f).iter_messages(topics=[fmt.TOPIC_EVENTS])]
    failed = int(messages[0].split()[1])
    assert messages[0] == f"tick {failed} failed: no reply from servo 3"
    assert failed not in [t.slot for t in ticks] and ticks[2].slot < failed < ticks[-1].slot
