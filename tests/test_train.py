"""Behaviour cloning: demonstrations become tensors the runtime's way, and every head's loss falls."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (pip install vla-runtime[export])")

from vla_runtime.export.checkpoint import from_config  # noqa: E402
from vla_runtime.export.norm_stats import stats_from_actions  # noqa: E402
from vla_runtime.export.presets import preset_config  # noqa: E402
from vla_runtime.export.train import TrainConfig, train  # noqa: E402
from vla_runtime.export.train_data import load_demonstrations  # noqa: E402
from vla_runtime.runtime.conventions import ActionNormalizer  # noqa: E402


def test_statistics_come_from_the_data_and_map_it_onto_the_model_range():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.02, 0.02, (500, 7))
    actions[:, 3:6] = 0.0  # a dimension that never moves still gets a valid range
    stats = stats_from_actions(actions)
    assert all(lo < hi for lo, hi in zip(stats.low, stats.high, strict=True))
    assert np.allclose(stats.low[:3], np.quantile(actions[:, :3], 0.01, axis=0))
    normalized = ActionNormalizer(stats, 7).normalize(actions)
    assert np.mean(np.abs(normalized[:, :3]) <= 1.0) >= 0.97  # q01..q99 land inside [-1, 1]
    with pytest.raises(ValueError):
        stats_from_actions(np.full((10, 7), np.nan))


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    import vla_runtime.runtime.sim  # noqa: F401 - picks the offscreen GL platform before MuJoCo loads

    pytest.importorskip("mujoco", reason="recording demonstrations needs MuJoCo (pip install vla-runtime[sim])")
    from vla_runtime.runtime.cli import main

    root = tmp_path_factory.mktemp("demos") / "rec"
    argv = ["--policy", "scripted", "--episodes", "2", "--seed", "0", "--steps", "40", "--record", str(root),
            "--record-raw"]
    assert main(argv) == 0
    return root


def test_demonstrations_load_through_the_calibration_readers(demos):
    cfg = preset_config("demo", "parallel")
    tok = from_config(cfg).tokenizer
    data = load_demonstrations(demos, tok, cfg.image_size, cfg.horizon, cfg.bins)
    assert data.images.shape == (80, cfg.image_size, cfg.image_size, 3) and data.images.dtype == np.uint8
    assert data.targets.shape == (80, cfg.horizon, 7) and np.abs(data.targets).max() <= 1.0
    assert (data.past[[0, 40]] == 0).all()  # each episode starts from the runtime's zero bins
    assert np.array_equal(data.targets[39, 1], data.targets[39, 0])  # the last action repeats past the end
    assert len(data.tasks) == 2 and data.targets[:20, 0, 2].min() < -0.9  # the expert descends at full speed


def synthetic_demos(cfg, n=48, seed=0):
    """Frames whose bright half decides the action, so there is something to learn in a few steps."""
    from vla_runtime.export.norm_stats import default_norm_stats
    from vla_runtime.export.train_data import Demonstrations

    rng = np.random.default_rng(seed)
    side = rng.integers(0, 2, n)  # [N] which half of the frame is bright
    images = np.zeros((n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    for i, s in enumerate(side):
        images[i, :, s * cfg.image_size // 2 : (s + 1) * cfg.image_size // 2] = 220
    targets = np.where(side[:, None, None] == 1, 0.6, -0.6) * np.ones((1, cfg.horizon, 7))
    prompt = np.array([2, 40, 41, 42, 43], dtype=np.int64)
    return Demonstrations(images=images, prompts=[prompt] * n, targets=targets.astype(np.float32),
                          past=np.zeros((n, 7), dtype=np.int64), episode=np.arange(n) // 8,
                          norm=default_norm_stats(), tasks=("synthetic",))


@pytest.mark.parametrize("head", ["parallel", "tokens", "flow"])
def test_a_few_steps_lower_the_loss(head):
    cfg = dataclasses.replace(preset_config("demo", head), vision_layers=1, text_layers=1)
    source = from_config(cfg, seed=0)
    config = TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=3, val_fraction=0.0)
    result = train(source.model, synthetic_demos(cfg), config, progress=False)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert np.isfinite(result.losses).all() and last < 0.9 * first, (head, first, last)


def test_the_shipped_demo_checkpoint_loads():
    from vla_runtime.export.checkpoint import load_checkpoint
    from vla_runtime.export.demo_checkpoints import shipped_checkpoint

    source = load_checkpoint(shipped_checkpoint("parallel"), head="parallel")
    assert source.cfg.image_size == preset_config("demo", "parallel").image_size
    assert source.norm.kind == "q01_q99" and max(source.norm.high[:3]) < 0.05  # metres per tick, from the data
    # it reads the sim arm's measured joints and gripper, with their range measured on the demonstrations
    assert source.cfg.state_dim == 7 and source.state_norm.names[-1] == "gripper"
    assert source.state_norm.space == "joint_position" and source.state_norm.high[0] < 2.7  # not the joint limit


def test_dimensions_without_a_target_do_not_move_the_loss():
    from vla_runtime.export.train import DemoTensors, head_loss

    cfg = dataclasses.replace(preset_config("demo", "parallel"), vision_layers=1, text_layers=1)
    model = from_config(cfg, seed=0).model
    data = synthetic_demos(cfg, n=8)
    weight = np.ones((8, 7), dtype=np.float32)
    weight[:, 3:6] = 0.0
    other = data.targets.copy()
    other[:, :, 3:6] = -other[:, :, 3:6]  # different targets only where the weight is 0
    losses = []
    for targets in (data.targets, other):
        d = dataclasses.replace(data, targets=targets, dim_weight=weight)
        losses.append(float(head_loss(model, DemoTensors(d, cfg.image_size, cfg.bins).batch(np.arange(8)), 1.5,
                                      torch.Generator().manual_seed(0))))
    assert losses[0] == losses[1]
    plain = float(head_loss(model, DemoTensors(data, cfg.image_size, cfg.bins).batch(np.arange(8)), 1.5,
                            torch.Generator().manual_seed(0)))
    assert plain != losses[0]


def test_the_measured_state_loads_with_a_range_measured_on_the_demonstrations(demos):
    from vla_runtime.export.state_stats import robot_state_stats

    cfg = preset_config("demo", "parallel")
    layout = robot_state_stats("sim")  # names and units; the range is the joint limits
    data = load_demonstrations(demos, from_config(cfg).tokenizer, cfg.image_size, cfg.horizon, cfg.bins, state=layout)
    assert data.states.shape == (80, layout.dim) and data.state_norm.names == layout.names
    assert data.state_norm.space == "joint_position" and data.state_norm.low != layout.low  # measured, not the limits
    assert np.mean(np.abs(data.states) <= 1.0) >= 0.95  # q01..q99 of what the arm did lands in [-1, 1]
    kept = load_demonstrations(demos, from_config(cfg).tokenizer, cfg.image_size, cfg.horizon, cfg.bins,
                               state=data.state_norm, measure_state=False)  # continuing a checkpoint keeps its range
    assert kept.state_norm == data.state_norm and np.allclose(kept.states, data.states)


def state_decided_demos(cfg, n=48, seed=0):
    """Identical frames; only the measured state's sign says which way to move."""
    from vla_runtime.export.state_stats import robot_state_stats

    data = synthetic_demos(cfg, n, seed)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)  # [N]
    states = np.repeat(sign[:, None], cfg.state_dim, axis=1).astype(np.float32) * 0.8  # [N, S]
    return dataclasses.replace(data, images=np.full_like(data.images, 90), states=states,
                               targets=(0.6 * sign[:, None, None] * np.ones((1, cfg.horizon, 7))).astype(np.float32),
                               state_norm=robot_state_stats("sim"))


@pytest.mark.parametrize("head", ["parallel", "flow"])
def test_a_head_that_reads_the_state_learns_from_it(head):
    base = dataclasses.replace(preset_config("demo", head), vision_layers=1, text_layers=1, state_dim=7)
    cfg = dataclasses.replace(base, pooling="attention") if head == "parallel" else base
    model = from_config(cfg, seed=0, state_norm=state_decided_demos(cfg).state_norm).model
    config = TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup=3, val_fraction=0.0)
    result = train(model, state_decided_demos(cfg), config, progress=False)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert np.isfinite(result.losses).all() and last < 0.8 * first, (head, first, last)  # images cannot tell
    # the falling loss alone would also come from predicting both directions at once; the model
    # has used the state only if the same samples with the state flipped now cost clearly more
    from vla_runtime.export.train import DemoTensors, head_loss

    data, idx = state_decided_demos(cfg), np.arange(16)
    flipped = dataclasses.replace(data, states=-data.states)
    with torch.no_grad():
        own, other = (float(head_loss(model, DemoTensors(d, cfg.image_size, cfg.bins).batch(idx), 1.5,
                                      torch.Generator().manual_seed(0))) for d in (data, flipped))
    assert own < 0.8 * other, (head, own, other)
    with pytest.raises(ValueError, match="state values"):
        train(model, synthetic_demos(cfg), config, progress=False)  # demonstrations without the state


def test_a_checkpoint_that_reads_the_state_round_trips(tmp_path):
    from vla_runtime.export.checkpoint import load_checkpoint, save_checkpoint
    from vla_runtime.export.norm_stats import STATE_STATS_FILE
    from vla_runtime.export.source import CheckpointError

    cfg = dataclasses.replace(preset_config("demo", "parallel"), vision_layers=1, text_layers=1, state_dim=7,
                              pooling="attention")
    stats = state_decided_demos(cfg).state_norm
    source = from_config(cfg, seed=3, state_norm=stats)
    with torch.no_grad():
        source.model.pooler.out.weight.normal_()  # the pool's own weights must travel too
    save_checkpoint(source, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck", head="parallel")
    assert loaded.state_norm == stats and loaded.cfg.pooling == "attention"
    pixels, ids = torch.rand(1, 3, cfg.image_size, cfg.image_size), torch.tensor([[2, 40, 41]])
    past, state = torch.zeros(1, 7, dtype=torch.long), torch.full((1, 7), 0.3)
    want = source.model.reference_parallel_logits(pixels, ids, past, state)
    assert torch.equal(loaded.model.reference_parallel_logits(pixels, ids, past, state), want)
    (tmp_path / "ck" / STATE_STATS_FILE).unlink()
    with pytest.raises(CheckpointError, match=STATE_STATS_FILE):
        load_checkpoint(tmp_path / "ck")


def test_train_command_shapes_the_model_it_writes(demos, tmp_path):
    import json

    from vla_runtime.export.checkpoint import load_checkpoint
    from vla_runtime.export.cli import main

    out = tmp_path / "ck"
    argv = ["train", "--data", str(demos), "--out", str(out), "--steps", "2", "--batch-size", "4", "--state", "sim",
            "--pooling", "attention", "--no-past-action"]
    assert main(argv) == 0
    source = load_checkpoint(out, head="parallel")
    assert source.cfg.state_dim == 7 and source.cfg.pooling == "attention" and not source.cfg.condition_on_past_action
    assert source.state_norm.names[-1] == "gripper"
    log = json.loads((out / "train.json").read_text())
    assert log["state"] == "sim" and log["pooling"] == "attention" and log["past_action"] is False
    assert main(["train", "--data", str(demos), "--out", str(tmp_path / "t"), "--head", "tokens", "--state", "sim",
                 "--steps", "1"]) == 2  # the tokens head reads no state: one line, nothing written
    assert main(["train", "--data", str(demos), "--out", str(tmp_path / "c"), "--init", str(out), "--state", "sim",
                 "--steps", "1"]) == 2  # a checkpoint's own config says what it reads


def test_a_model_reading_two_cameras_trains_on_recordings_of_both(tmp_path):
    import vla_runtime.runtime.sim  # noqa: F401 - picks the offscreen GL platform before MuJoCo loads

    pytest.importorskip("mujoco", reason="recording demonstrations needs MuJoCo (pip install vla-runtime[sim])")
    from vla_runtime.export.checkpoint import load_checkpoint
    from vla_runtime.export.cli import main as export_main
    from vla_runtime.export.train import DemoTensors
    from vla_runtime.export.train_data import TrainDataError
    from vla_runtime.runtime.cli import main

    rec = tmp_path / "rec"
    assert main(["--policy", "scripted", "--episodes", "1", "--seed", "3", "--steps", "12", "--record", str(rec),
                 "--record-raw", "--record-views", "front,wrist"]) == 0
    cfg = dataclasses.replace(preset_config("demo", "parallel"), views=("front", "wrist"))
    tok = from_config(cfg).tokenizer
    data = load_demonstrations(rec, tok, cfg.image_size, cfg.horizon, cfg.bins, views=cfg.views)
    assert data.images.shape == (12, 2, cfg.image_size, cfg.image_size, 3)
    assert not np.array_equal(data.images[0, 0], data.images[0, 1])  # two cameras, two pictures
    pixels = DemoTensors(data, cfg.image_size, cfg.bins).batch(np.array([4, 5]))["pixels"]
    assert pixels.shape == (4, 3, cfg.image_size, cfg.image_size)  # view-major within each sample
    with pytest.raises(TrainDataError, match="--record-views front,gripper"):
        load_demonstrations(rec, tok, cfg.image_size, cfg.horizon, cfg.bins, views=("front", "gripper"))
    out = tmp_path / "ck"
    assert export_main(["train", "--data", str(rec), "--out", str(out), "--views", "front,wrist", "--steps", "2",
                        "--batch-size", "4"]) == 0
    assert load_checkpoint(out).cfg.views == ("front", "wrist")
    assert main(["--policy", "scripted", "--episodes", "1", "--record", str(tmp_path / "x"),
                 "--record-views", "front,front"]) == 2  # each view once: one line, nothing recorded
