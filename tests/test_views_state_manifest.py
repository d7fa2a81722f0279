"""Camera views and the robot state in the manifest: old manifests load, mistakes are one line.

The doc is a real tiny bundle's manifest, changed one field at a time.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from vla_runtime.runtime.manifest import Manifest, ManifestError, Normalization, StateSpace
from vla_runtime.runtime.state_input import StateInput, unmet_state
from vla_runtime.runtime.types import Frame, RobotState, capture_time, view_frames

SIM_JOINTS = ["base_yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "wrist_yaw"]


@pytest.fixture
def doc(tiny_bundle):
    return json.loads((tiny_bundle("parallel") / "manifest.json").read_text())


def _state(names=(*SIM_JOINTS, "gripper"), **normalization):
    units = ["open" if n == "gripper" else "rad" for n in names]
    return {"names": list(names), "units": units, "normalization": normalization or {"kind": "none"}}


def test_an_old_manifest_without_views_or_state_loads_unchanged(doc):
    old = copy.deepcopy(doc)
    old["preprocess"].pop("view_sizes", None)
    old["preprocess"].pop("camera_views", None)
    old.pop("state", None)
    m = Manifest.from_json(old)
    assert m.preprocess.camera_views == ("front",) and m.preprocess.size_of("front") == m.preprocess.image_size
    assert m.state == StateSpace() and m.state.dim == 0 and m.state.normalization.kind == "none"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["preprocess"].update(view_sizes=[32, 32]), r"view_sizes has 2 sizes for 1 camera_views"),
        (lambda d: d["preprocess"].update(view_sizes=[48]), r"view 'front' is resized to 48 pixels but graphs.vision"),
        (lambda d: d["preprocess"].update(camera_views=["front", "front"]), r"must name distinct views"),
        (lambda d: d["preprocess"].update(camera_views=["front", "wrist"]),
         r"graphs.prefill takes 16 image embeddings but 2 view\(s\) of 16 give 32"),
        (lambda d: d.update(state=_state()), r"state lists 7 values but no graph has an input 'state'"),
        (lambda d: d.update(state=_state(names=("gripper", *SIM_JOINTS))), r'"gripper" must be the last state value'),
        (lambda d: d.update(state={"names": ["elbow"], "units": ["deg"]}), r"state joint 'elbow': unit 'deg'"),
        (lambda d: d.update(state=_state(kind="q01_q99", low=[-1.0] * 6, high=[1.0] * 6)),
         r"state.normalization.low needs 7 values, got 6"),
        (lambda d: d.update(state={**_state(), "order": "robot"}), r"state: unknown field\(s\) \['order'\]"),
    ],
)
def test_view_and_state_mistakes_are_one_line(doc, edit, message):
    bad = copy.deepcopy(doc)
    edit(bad)
    with pytest.raises(ManifestError, match=message) as info:
        Manifest.from_json(bad)
    assert "\n" not in str(info.value)


def test_a_graph_reading_state_needs_the_state_listed(doc):
    bad = copy.deepcopy(doc)
    bad["graphs"]["head"]["inputs"].append({"name": "state", "dtype": "float32", "shape": [1, 7]})
    with pytest.raises(ManifestError, match=r"graphs.head reads the robot state but state.names is empty"):
        Manifest.from_json(bad)
    bad["state"] = _state(names=SIM_JOINTS)  # 6 values for a [1, 7] input
    with pytest.raises(ManifestError, match=r"graphs.head.state has shape \[1, 7\]; state lists 6 values"):
        Manifest.from_json(bad)
    bad["state"] = _state()
    assert Manifest.from_json(bad).state.has_gripper


def test_state_vector_is_the_measured_joints_and_gripper_normalised():
    s = StateSpace(tuple(SIM_JOINTS) + ("gripper",), ("rad",) * 6 + ("open",),
                   Normalization(kind="q01_q99", low=(-2.0,) * 6 + (0.0,), high=(2.0,) * 6 + (1.0,)))
    encode = StateInput(s)
    q = np.array([-2.0, 0.0, 1.0, 2.0, 0.5, -1.0])
    vec = encode(RobotState(q, np.zeros(3), np.zeros(3), 1.0, 0.0))
    assert vec.dtype == np.float32 and vec.shape == (1, 7)
    np.testing.assert_allclose(vec[0], [-1.0, 0.0, 0.5, 1.0, 0.25, -0.5, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match=r"lists 6 joints .* but the robot measured 5"):
        encode(RobotState(q[:5], np.zeros(3), np.zeros(3), 1.0, 0.0))
    with pytest.raises(ValueError, match=r"reads the robot state"):
        encode(None)
    assert unmet_state(s, has_gripper=True) is None
    assert "has no [gripper]" in unmet_state(s, has_gripper=False)


def test_view_frames_orders_views_and_names_a_missing_one():
    a, b = Frame(np.zeros((2, 2, 3), np.uint8), 1.0), Frame(np.ones((2, 2, 3), np.uint8), 0.5)
    assert view_frames({"wrist": b, "front": a}, ("front", "wrist")) == (a, b)
    assert view_frames(a, ("front", "wrist")) == (a, a)  # a still image feeds every view
    assert capture_time({"front": a, "wrist": b}) == 0.5  # a chunk is as old as its oldest frame
    with pytest.raises(ValueError, match=r"no frame for camera view 'wrist'"):
        view_frames({"front": a}, ("front", "wrist"))
