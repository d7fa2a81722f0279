"""The action conventions, checked against literal values and against the manifest that carries them."""

from __future__ import annotations

import numpy as np
import pytest
from vla_runtime.runtime.conventions import (
    ActionNormalizer,
    ActionTokens,
    FlowNoise,
    bin_centres,
    bin_edges,
    discretize,
    flow_noise,
    flow_times,
    prompt_ids,
    token_position,
)
from vla_runtime.runtime.manifest import ActionSpace, ManifestError, Normalization


def test_bin_centres_are_the_midpoints_of_uniform_edges():
    c = bin_centres(256)
    np.testing.assert_allclose(c[[0, 127, 128, 255]], [-1 + 1 / 256, -1 / 256, 1 / 256, 1 - 1 / 256])
    edges = bin_edges(256)
    np.testing.assert_allclose(c, (edges[:-1] + edges[1:]) / 2, atol=1e-7)
    assert c.dtype == np.float32


@pytest.mark.parametrize("bins", [256, 255])
def test_discretize_inverts_the_centres(bins):
    np.testing.assert_array_equal(discretize(bin_centres(bins), bins), np.arange(bins))
    assert discretize(np.array([-7.0, 7.0, 1.0, -1.0]), bins).tolist() == [0, bins - 1, bins - 1, 0]


def test_todays_ids_are_the_last_256_of_the_vocabulary():
    tokens = ActionTokens.last_ids(vocab_size=1000, bins=256)
    assert tokens.span == (744, 1000)
    assert [tokens.token_id(j) for j in (0, 1, 255)] == [744, 745, 999]
    assert tokens.bin_of(999) == 255
    np.testing.assert_array_equal(tokens.token_id(np.array([[0, 3]])), [[744, 747]])


def test_openvla_ids_count_down_from_the_end_with_255_centres():
    """OpenVLA: token = vocab_size - (bin + 1), 255 centres between 256 edges over [-1, 1]."""
    tokens = ActionTokens.from_end(vocab_size=32000)
    assert tokens.bins == 255 and tokens.span == (31745, 32000)
    assert [tokens.token_id(j) for j in (0, 1, 254)] == [31999, 31998, 31745]
    assert [tokens.bin_of(t) for t in (31999, 31745)] == [0, 254]
    np.testing.assert_allclose(bin_centres(255)[[0, 254]], [-1 + 1 / 255, 1 - 1 / 255], atol=1e-7)


def test_action_ids_must_fit_the_vocabulary():
    with pytest.raises(ValueError, match="do not fit"):
        ActionTokens(bins=256, offset=900).check_vocabulary(1000)
    with pytest.raises(ValueError, match="order"):
        ActionTokens(bins=256, offset=900, order="sideways")


def space(**kw):
    base = dict(dim=2, horizon=1, names=("x", "g"), units=("m", "open"), kind="ee_delta",
                normalization=Normalization(kind="none"))
    return ActionSpace(**(base | kw))


def test_manifest_carries_the_id_convention_as_data():
    assert ActionTokens.of(space(bins=256, action_token_offset=744)) == ActionTokens(256, 744, "ascending")
    openvla = space(bins=255, action_token_offset=31999, action_token_order="descending")
    assert ActionTokens.of(openvla) == ActionTokens.from_end(32000)
    with pytest.raises(ManifestError, match="action_token_order"):
        space(action_token_order="backwards")


def test_greedy_positions_follow_the_prefix():
    assert [token_position(10, k) for k in (1, 2, 3)] == [10, 11, 12]


def test_flow_noise_is_the_seeded_generators_draws_and_the_grid_runs_from_one():
    noise = FlowNoise(3)
    first, second = noise.draw(4, 2), noise.draw(4, 2)
    np.testing.assert_array_equal(first, flow_noise(3, 4, 2))
    np.testing.assert_array_equal(first, np.random.default_rng(3).standard_normal((4, 2)).astype(np.float32))
    assert not np.array_equal(first, second) and first.dtype == np.float32
    np.testing.assert_allclose(flow_times(4), [1.0, 0.75, 0.5, 0.25])


def test_normalizer_maps_q01_q99_onto_minus_one_one_and_back():
    norm = Normalization(kind="q01_q99", low=(-0.1, 0.0), high=(0.1, 1.0), mask=(True, False))
    n = ActionNormalizer(norm, 2)
    np.testing.assert_allclose(n.unnormalize(np.array([[-1.0, 0.25], [1.0, 0.5]])), [[-0.1, 0.25], [0.1, 0.5]])
    actions = np.array([[0.05, 0.7]])
    np.testing.assert_allclose(n.unnormalize(n.normalize(actions)), actions)
    std = ActionNormalizer(Normalization(kind="mean_std", mean=(1.0, 2.0), std=(2.0, 4.0)), 2)
    np.testing.assert_allclose(std.normalize(np.array([3.0, 2.0])), [1.0, 0.0])


def test_prompt_ids_put_bos_first_and_truncate():
    def encode(text):
        return [len(w) for w in text.split()]

    assert prompt_ids(encode, "do {task} now", "ab c", bos_token_id=1, max_tokens=10) == [1, 2, 2, 1, 3]
    assert prompt_ids(encode, "do {task} now", "ab c", bos_token_id=None, max_tokens=2) == [2, 2]
