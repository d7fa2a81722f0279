"""Behaviour cloning: demonstrations become tensors the runtime's way, and every head's loss falls."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (pip install vla-runtime[export])")
import vla_runtime.runtime.sim  # noqa: E402,F401 - picks the offscreen GL platform before MuJoCo loads

pytest.importorskip("mujoco", reason="recording demonstrations needs MuJoCo (pip install vla-runtime[sim])")

from vla_runtime.export.checkpoint import from_config  # noqa: E402
from vla_runtime.export.norm_stats import normalize_actions, stats_from_actions  # noqa: E402
from vla_runtime.export.presets import preset_config  # noqa: E402
from vla_runtime.export.train import TrainConfig, train  # noqa: E402
from vla_runtime.export.train_data import load_demonstrations, to_bins  # noqa: E402
from vla_runtime.runtime.cli import main  # noqa: E402
from vla_runtime.runtime.decoders import Unnormalizer, bin_centres  # noqa: E402
from vla_runtime.runtime.manifest import ActionSpace, Normalization  # noqa: E402


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos") / "rec"
    assert main(["--policy", "scripted", "--episodes", "2", "--seed", "0", "--steps", "40", "--record", str(root)]) == 0
    return root


def test_bins_and_statistics_invert_the_runtime_decoding():
    centres = bin_centres(256)
    assert np.array_equal(to_bins(centres, 256), np.arange(256))
    assert to_bins(np.array([-1.0, 1.0]), 256).tolist() == [0, 255]
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.02, 0.02, (500, 7))
    actions[:, 3:6] = 0.0  # a dimension that never moves still gets a valid range
    stats = stats_from_actions(actions)
    assert all(lo < hi for lo, hi in zip(stats.low, stats.high, strict=True))
    space = ActionSpace(dim=7, horizon=1, names=stats.names, units=stats.units, kind="ee_delta", bins=256,
                        normalization=Normalization(kind=stats.kind, low=stats.low, high=stats.high, mask=stats.mask),
                        action_token_offset=0)
    inside = actions[(actions >= stats.low).all(1) & (actions <= stats.high).all(1)]
    back = Unnormalizer(space)(normalize_actions(stats, inside))
    assert np.allclose(back, inside, atol=1e-6)


def test_demonstrations_load_through_the_calibration_readers(demos):
    cfg = preset_config("demo", "parallel")
    tok = from_config(cfg).tokenizer
    data = load_demonstrations(demos, tok, cfg.image_size, cfg.horizon, cfg.bins)
    assert data.images.shape == (80, cfg.image_size, cfg.image_size, 3) and data.images.dtype == np.uint8
    assert data.targets.shape == (80, cfg.horizon, 7) and np.abs(data.targets).max() <= 1.0
    assert (data.past[[0, 40]] == 0).all()  # each episode starts from the runtime's zero bins
    assert np.array_equal(data.targets[39, 1], data.targets[39, 0])  # the last action repeats past the end
    assert len(data.tasks) == 2


@pytest.mark.parametrize("head", ["parallel", "tokens", "flow"])
def test_a_few_steps_lower_the_loss(demos, head):
    cfg = dataclasses.replace(preset_config("demo", head), vision_layers=1, text_layers=1)
    source = from_config(cfg, seed=0)
    data = load_demonstrations(demos, source.tokenizer, cfg.image_size, cfg.horizon, cfg.bins)
    result = train(source.model, data, TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=3, val_fraction=0.0),
                   progress=False)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert np.isfinite(result.losses).all() and last < 0.9 * first, (head, first, last)

