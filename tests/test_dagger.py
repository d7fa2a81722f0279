"""DAgger: the expert relabels states a trained policy visits, and training reads those labels."""

import numpy as np
import pytest
from vla_runtime.runtime.scripted import GraspScript, ScriptedGraspPolicy
from vla_runtime.runtime.types import Frame, RobotState

BLOCK = np.array([0.4, 0.0, 0.02])  # m, base frame


def state(pos, gripper=1.0):
    return RobotState(np.zeros(6), np.asarray(pos, dtype=float), np.zeros(3), gripper, 0.0)


def frame():
    return Frame(np.zeros((8, 8, 3), dtype=np.uint8), 0.0)


def test_the_relabelling_expert_opens_and_goes_back_when_the_grasp_missed():
    expert = ScriptedGraspPolicy(lambda: BLOCK, GraspScript(recover=True))
    expert.phase = "lift"  # as if it had closed, but the fingers are 4 cm beside the block
    chunk = expert.infer(frame(), "pick up the red block", state(BLOCK + [0.04, 0.0, 0.012], gripper=0.0))
    assert expert.phase == "reach" and chunk.actions[0, 6] == 1.0 and chunk.actions[0, 2] > 0  # open, back up
    plain = ScriptedGraspPolicy(lambda: BLOCK, GraspScript())
    plain.phase = "lift"
    assert plain.infer(frame(), "t", state(BLOCK + [0.04, 0.0, 0.012], gripper=0.0)).actions[0, 6] == 0.0


def test_the_relabelling_expert_descends_when_already_lined_up_below_the_approach_point():
    expert = ScriptedGraspPolicy(lambda: BLOCK, GraspScript(recover=True))
    chunk = expert.infer(frame(), "t", state(BLOCK + [0.002, 0.0, 0.06]))
    assert expert.phase == "descend" and chunk.actions[0, 2] < 0


def test_dagger_labels_train_with_the_demonstrations(demo_bundle, tmp_path):
    pytest.importorskip("torch", reason="training needs torch (pip install vla-runtime[export])")
    pytest.importorskip("mujoco", reason="rollouts need MuJoCo (pip install vla-runtime[sim])")
    from vla_runtime.export.checkpoint import load_checkpoint
    from vla_runtime.export.cli import main as export_main
    from vla_runtime.export.demo_checkpoints import shipped_checkpoint
    from vla_runtime.export.train_data import Demonstrations, load_relabelled, merge

    out = tmp_path / "dagger.npz"
    assert export_main(["dagger", "--bundle", str(demo_bundle), "--episodes", "1", "--seed", "500",
                        "--steps", "12", "--out", str(out)]) == 0
    source = load_checkpoint(shipped_checkpoint("parallel"))
    c = source.cfg
    data = load_relabelled(out, source.tokenizer, source.norm, c.image_size, c.horizon, c.bins, source.state_norm)
    assert data.images.shape == (6, c.image_size, c.image_size, 3)  # one per inference: replan every 2 of 12
    assert data.targets.shape == (6, c.horizon, 7) and np.abs(data.targets).max() <= 1.0
    assert (data.past[0] == 0).all()  # the decoder starts from zeros
    if c.condition_on_past_action:
        assert (data.past[1] != 0).any()  # the learner's own carried bins
    if c.state_dim:
        assert data.states.shape == (6, c.state_dim) and len(np.unique(data.states[:, 0])) > 1  # the arm moved
    assert data.targets[0, 0, 6] > 0.9  # the expert starts with the fingers open
    assert data.dim_weight[0].tolist() == [1, 1, 1, 0, 0, 0, 1]  # it never commands rotation: no target there
    both = merge([data, data])
    assert isinstance(both, Demonstrations) and len(both) == 12 and set(both.episode.tolist()) == {0, 1}
    with pytest.raises(Exception, match="px"):
        load_relabelled(out, source.tokenizer, source.norm, 2 * c.image_size, c.horizon, c.bins)
    assert export_main(["dagger", "--bundle", str(demo_bundle), "--seed", "100000", "--out", str(out)]) == 2


def test_the_relabelling_expert_keeps_lifting_a_block_that_rises_in_the_fingers():
    block = BLOCK.copy()
    expert = ScriptedGraspPolicy(lambda: block, GraspScript(recover=True))
    expert.infer(frame(), "t", state(BLOCK + [0.0, 0.0, 0.012]))  # the block's resting height is noted
    block[2] += 0.03  # caught low in the fingers: 5 cm under them, but rising
    chunk = expert.infer(frame(), "t", state(block + [0.02, 0.0, 0.05], gripper=0.0))
    assert expert.phase == "lift" and chunk.actions[0, 6] == 0.0 and chunk.actions[0, 2] > 0
