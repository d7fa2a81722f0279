"""Remote inference on a real Triton server: repository, wire contract, equal actions, lost server.

The server is the pytriton wheel's `tritonserver` (python backend only) on loopback, serving a
`vla-export triton --graphs inprocess` repository of a tiny flow bundle (export/triton_local.py).
The flow head is the strictest case: its actions equal the local run's only if the robot's
seeded noise travels with every request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from vla_runtime.common.errors import UserError
from vla_runtime.export.triton_local import TritonServer, link_project, triton_venv
from vla_runtime.runtime.types import Frame

TASK = "pick up the red block"


def _image(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((48, 64, 3)) * 255).astype(np.uint8)  # uint8 [H, W, 3]


def _export(bundle, out, *extra) -> None:
    from vla_runtime.export.cli import main

    assert main(["triton", str(bundle), "--out", str(out), *extra]) == 0


# -- without a server -------------------------------------------------------------------------------


def test_repository_has_policy_model_and_graph_models(tiny_bundle, tmp_path):
    bundle = tiny_bundle("tokens")
    _export(bundle, tmp_path / "bls", "--gpu", "--tensorrt")
    _export(bundle, tmp_path / "inproc", "--graphs", "inprocess", "--no-batching", "--threads", "1")
    bls = tmp_path / "bls"
    assert sorted(p.name for p in bls.iterdir() if p.is_dir()) == ["policy", "policy_decode", "policy_prefill",
                                                                    "policy_vision"]
    policy = (bls / "policy" / "config.pbtxt").read_text()
    assert 'backend: "python"' in policy and "dynamic_batching" in policy and "KIND_GPU" in policy
    assert '{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }' in policy
    assert '{ name: "pixel_values.front" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] optional: true }' in policy
    decode = (bls / "policy_decode" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in decode and "max_batch_size: 0" in decode and '"tensorrt"' in decode
    assert '{ name: "past_key_values.0.key" data_type: TYPE_FP32 dims: [ 1, 1, -1, 32 ] }' in decode
    assert (bls / "policy_decode" / "1" / "decode.onnx").is_file()
    assert not (bls / "policy" / "1" / "bundle" / "decode.onnx").exists()  # the graph models serve it
    inproc = (tmp_path / "inproc" / "policy" / "config.pbtxt").read_text()
    assert "dynamic_batching" not in inproc and '"inprocess"' in inproc
    assert (tmp_path / "inproc" / "policy" / "1" / "bundle" / "decode.onnx").is_file()
    assert (tmp_path / "inproc" / "policy" / "1" / "model.py").is_file()


def test_repository_refuses_bad_options_in_one_line(tiny_bundle, tmp_path, capsys):
    from vla_runtime.export.cli import main

    assert main(["triton", str(tiny_bundle("tokens")), "--out", str(tmp_path / "r"), "--tensorrt"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --tensorrt needs --gpu and --graphs triton (the onnxruntime backend's TensorRT EP)")


@pytest.mark.parametrize("head", ["flow", "tokens"])
def test_served_policy_decodes_like_the_local_policy(tiny_bundle, head):
    """The server half fed the robot's draws gives the local policy's chunks, inference after inference."""
    from vla_runtime.runtime.decoders import Decoded, make_decoder
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.serving import BINS, IDS, NORMALIZED, ServedPolicy, pixels_name

    bundle = tiny_bundle(head)
    local = load_policy(bundle, backend="cpu", threads=1)
    served = ServedPolicy(load_policy(bundle, backend="cpu", threads=1))
    robot = make_decoder(local.manifest)  # the robot keeps the draw / carry-over
    for seed in range(3):
        image = _image(seed)
        chunk = local.infer(Frame(image, 0.0), TASK)
        request = {pixels_name(v): local.preprocess(image, v).copy() for v in local.views}
        request.update({IDS: local.tokenize(TASK), **robot.request_extras()})
        reply = served.serve(request)
        robot.observe(Decoded(reply[NORMALIZED][0], None if head == "flow" else reply[BINS][0]))
        np.testing.assert_array_equal(reply[NORMALIZED][0], local.last_normalized)
        assert chunk.actions.shape == reply[NORMALIZED][0].shape


def test_server_address_and_auth_header(tmp_path, monkeypatch):
    from vla_runtime.runtime.backends.remote_link import AUTH_ENV, ServerAddress, load_auth_header

    assert str(ServerAddress.parse("grpcs://gpu.lab:9001")) == "grpcs://gpu.lab:9001"
    assert ServerAddress.parse("http://10.0.0.5").port == 8000
    for bad in ("tcp://host:1", "grpc://user:pw@host:1", "http://host:8000/v2", "grpc://host:99999"):
        with pytest.raises(UserError):
            ServerAddress.parse(bad)
    monkeypatch.delenv(AUTH_ENV, raising=False)
    assert load_auth_header(None) == {}
    monkeypatch.setenv(AUTH_ENV, "Authorization: Bearer abc")
    assert load_auth_header(None) == {"Authorization": "Bearer abc"}
    token = tmp_path / "token"
    token.write_text("X-Api-Key: s3cret\n")
    assert load_auth_header(str(token)) == {"X-Api-Key": "s3cret"}
    token.write_text("just-a-token")
    with pytest.raises(UserError, match="Header-Name: value"):
        load_auth_header(str(token))


def test_missing_tritonclient_is_one_line(monkeypatch):
    from vla_runtime.runtime.backends.remote_link import RemoteLink, ServerAddress

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"pip install 'vla-runtime\[remote\]'"):
        RemoteLink(ServerAddress.parse("grpc://127.0.0.1:1"), "policy", 0.1)


# -- against a real tritonserver ---------------------------------------------------------------------


def _serve(bundle, tmp_path, *extra, extra_args=()) -> TritonServer:
    pytest.importorskip("tritonclient.grpc", reason="the remote backend needs tritonclient (vla-runtime[remote])")
    venv, why = triton_venv()
    if venv is None:
        pytest.skip(why)
    repo = tmp_path / "repo"
    _export(bundle, repo, "--graphs", "inprocess", *extra)
    link_project(repo)
    server = TritonServer(venv, repo, tmp_path / "tritonserver.log", extra_args)
    why = server.start()
    if "failed to load" in why:  # the server ran and refused our repository: a bug, not this machine
        pytest.fail(why)
    if why:
        pytest.skip(f"tritonserver cannot start here: {why}")
    return server


@pytest.fixture(scope="module")
def flow_server(tiny_bundle, tmp_path_factory):
    bundle = tiny_bundle("flow")
    server = _serve(bundle, tmp_path_factory.mktemp("triton"))
    yield server, bundle
    server.stop()


def _cli(*args, timeout=240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vla_runtime.runtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_remote_run_on_the_sim_equals_the_local_run(flow_server, tmp_path):
    pytest.importorskip("mujoco", reason="the simulated robot needs mujoco (vla-runtime[sim])")
    pytest.importorskip("mcap", reason="comparing the runs reads their recordings (vla-runtime[record])")
    from vla_runtime.runtime.recording import Recording, find_recordings

    server, bundle = flow_server
    common = ("run", "--bundle", str(bundle), "--steps", "12", "--seed", "3", "--task", TASK)
    local = _cli(*common, "--backend", "cpu", "--record", str(tmp_path / "local"))
    remote = _cli(*common, "--backend", "remote", "--server", server.grpc_url, "--remote-timeout-ms", "2000",
                  "--record", str(tmp_path / "remote"), "--profile", str(tmp_path / "profile.json"))
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert f"remote {server.grpc_url}" in remote.stdout
    ticks = [list(Recording(find_recordings([tmp_path / d])[0]).ticks(images=False)) for d in ("local", "remote")]
    assert len(ticks[0]) == len(ticks[1]) == 12
    for a, b in zip(*ticks, strict=True):
        np.testing.assert_array_equal(a.desired, b.desired)  # the policy's actions, bit for bit
        np.testing.assert_array_equal(a.sent, b.sent)
    stages = json.loads((tmp_path / "profile.json").read_text())["stages_ms"]
    assert stages["network"]["n"] >= 5 and stages["network"]["p50"] > 0
    assert stages["server"]["n"] == stages["network"]["n"]
    assert "network" in remote.stdout and "velocity" not in stages  # the graphs ran on the server


def test_http_with_raw_frames_equals_the_local_policy(flow_server):
    from vla_runtime.runtime.backends.remote import RemoteConfig, open_remote_policy
    from vla_runtime.runtime.policy import load_policy, verified_bundle

    server, bundle = flow_server
    local = load_policy(bundle, backend="cpu")
    remote = open_remote_policy(verified_bundle(bundle), RemoteConfig(server.http_url, 5.0, frame="uint8"))
    try:
        for seed in range(3):
            frame = Frame(_image(seed), 0.0)
            np.testing.assert_array_equal(remote.infer(frame, TASK).actions, local.infer(frame, TASK).actions)
        assert remote.stage_times["network"] > 0 and remote.stage_times["server"] > 0
    finally:
        remote.close()
        local.close()


def test_a_server_serving_another_bundle_is_refused(flow_server, tmp_path):
    from bundle_factory import read_doc, write_manifest
    from vla_runtime.runtime.assemble import open_policy

    server, bundle = flow_server
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    doc = read_doc(other)
    doc["model"]["name"] = "another-build"
    write_manifest(other, doc)  # a new seal over the same graphs
    args = type("Args", (), dict(bundle=str(other), head=None, backend="remote", server=server.grpc_url,
                                 remote_model="policy", remote_timeout_ms=1000.0, remote_frame="pixels",
                                 ca_file=None, auth_file=None, hz=None, allow_failed_gate=False, trusted_keys=None))
    with pytest.raises(UserError, match="regenerate the repository from this bundle") as info:
        open_policy(args)
    assert "\n" not in str(info.value)


def test_a_server_that_always_answers_late_never_activates_the_robot(flow_server):
    """A deadline no server can meet: the first chunk never comes, so the arm never gets torque."""
    pytest.importorskip("mujoco", reason="the simulated robot needs mujoco (vla-runtime[sim])")
    server, bundle = flow_server
    run = _cli("run", "--bundle", str(bundle), "--steps", "40", "--backend", "remote", "--server", server.grpc_url,
               "--remote-timeout-ms", "0.05", "--max-misses", "3")
    assert run.returncode == 1
    assert "after 0 ticks" in run.stdout and "missed inferences 3" in run.stdout
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: episode stopped (inference missed 3 times in a row before the robot was activated"
                           " (grpc://127.0.0.1:")
    assert "Deadline Exceeded" in last and "on_stop = hold" in last


def test_killing_the_server_mid_run_ends_in_a_safe_hold(tiny_bundle, tmp_path):
    pytest.importorskip("mujoco", reason="the simulated robot needs mujoco (vla-runtime[sim])")
    import tritonclient.http as http

    bundle = tiny_bundle("flow")
    server = _serve(bundle, tmp_path)
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        robot = subprocess.Popen(
            [sys.executable, "-m", "vla_runtime.runtime.cli", "run", "--bundle", str(bundle), "--steps", "400",
             "--backend", "remote", "--server", server.grpc_url, "--remote-timeout-ms", "2000", "--max-misses", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        client = http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        deadline = time.monotonic() + 120
        served = 0
        while served < 6 and time.monotonic() < deadline and robot.poll() is None:
            stats = client.get_inference_statistics("policy")["model_stats"][0]["inference_stats"]
            served = int(stats["success"]["count"])
            time.sleep(0.2)
        client.close()
        assert served >= 6, "the robot never got going"
        server.kill()
        out, err = robot.communicate(timeout=120)
    finally:
        server.stop()
    assert robot.returncode == 1, err
    lines = [line for line in err.strip().splitlines() if "trust store" not in line]
    assert len(lines) == 1, lines  # one clear line, nothing else
    assert lines[0].startswith("error: episode stopped (inference missed 3 times in a row (grpc://127.0.0.1:")
    assert "on_stop = hold" in lines[0] and "holding" in lines[0]
    assert "missed inferences 3" in out


def _self_signed(folder) -> tuple:
    """(certificate, key) PEM files for localhost / 127.0.0.1; the certificate is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_and_auth_header_on_a_restricted_server(tiny_bundle, tmp_path, monkeypatch):
    """grpcs:// with the CA file, and an auth header the server requires for inference and config."""
    from vla_runtime.runtime.backends.remote import RemoteConfig, open_remote_policy
    from vla_runtime.runtime.backends.remote_link import AUTH_ENV, RemoteError
    from vla_runtime.runtime.policy import load_policy, verified_bundle

    bundle = tiny_bundle("flow")
    cert, key = _self_signed(tmp_path)
    tls = ("--grpc-use-ssl", "true", "--grpc-server-cert", str(cert), "--grpc-server-key", str(key),
           "--grpc-restricted-protocol", "inference,model-config:x-robot-token=s3cret")
    server = _serve(bundle, tmp_path, extra_args=tls)
    url = f"grpcs://localhost:{server.grpc_port}"
    token = tmp_path / "token"
    token.write_text("triton-grpc-protocol-x-robot-token: s3cret\n")  # Triton's prefix for restricted gRPC keys
    monkeypatch.delenv(AUTH_ENV, raising=False)
    local = load_policy(bundle, backend="cpu")
    try:
        remote = open_remote_policy(verified_bundle(bundle), RemoteConfig(url, 5.0, ca_file=str(cert),
                                                                          auth_file=str(token)))
        frame = Frame(_image(7), 0.0)
        np.testing.assert_array_equal(remote.infer(frame, TASK).actions, local.infer(frame, TASK).actions)
        remote.close()
        with pytest.raises(RemoteError, match="restricted.*x-robot-token"):  # no header: refused, not retried
            open_remote_policy(verified_bundle(bundle), RemoteConfig(url, 5.0, ca_file=str(cert)))
        with pytest.raises(UserError, match="needs a TLS server"):
            open_remote_policy(verified_bundle(bundle), RemoteConfig(server.grpc_url, 5.0, ca_file=str(cert)))
    finally:
        local.close()
        server.stop()


def test_two_views_and_the_state_travel_and_equal_the_local_policy(tmp_path):
    """A flow bundle reading front + wrist and the measured state: per-view tensors and `state` on the wire."""
    pytest.importorskip("torch", reason="building the two-view bundle needs torch (pip install vla-runtime[export])")
    import dataclasses

    from vla_runtime.export.build import build_from_source
    from vla_runtime.export.checkpoint import from_config
    from vla_runtime.export.presets import preset_config
    from vla_runtime.export.state_stats import robot_state_stats
    from vla_runtime.runtime.backends.remote import RemoteConfig, open_remote_policy
    from vla_runtime.runtime.policy import load_policy, verified_bundle
    from vla_runtime.runtime.types import RobotState

    state_stats = robot_state_stats("sim")
    cfg = dataclasses.replace(preset_config("tiny", "flow"), views=("front", "wrist"), state_dim=state_stats.dim)
    bundle = build_from_source(from_config(cfg, state_norm=state_stats), tmp_path / "bundle", progress=False)
    server = _serve(bundle, tmp_path)
    local = load_policy(bundle, backend="cpu")
    try:
        remote = open_remote_policy(verified_bundle(bundle), RemoteConfig(server.grpc_url, 5.0))
        for seed in range(2):
            frames = {"front": Frame(_image(seed), 0.0), "wrist": Frame(_image(seed + 10), 0.0)}
            q = np.linspace(-0.3, 0.4, state_stats.dim - 1) * (seed + 1)  # [J] radians
            state = RobotState(q, np.zeros(3), np.zeros(3), 0.5, 0.0)
            expected = local.infer(frames, TASK, state).actions
            np.testing.assert_array_equal(remote.infer(frames, TASK, state).actions, expected)
        remote.close()
    finally:
        local.close()
        server.stop()


@pytest.mark.parametrize("head", ["tokens", "flow"])
def test_graph_models_called_through_bls_equal_the_local_policy(tiny_bundle, tmp_path, head):
    """NVIDIA's layout (one Triton model per graph, the policy model calling them through BLS), with
    python graph models here: the KV cache and the flow context cross Triton between graph calls."""
    from vla_runtime.runtime.backends.remote import RemoteConfig, open_remote_policy
    from vla_runtime.runtime.policy import load_policy, verified_bundle

    bundle = tiny_bundle(head)
    server = _serve(bundle, tmp_path, "--graphs", "python", "--threads", "1")
    local = load_policy(bundle, backend="cpu")
    try:
        assert (server.repo / f"policy_{ 'decode' if head == 'tokens' else 'velocity'}" / "1" / "model.py").is_file()
        remote = open_remote_policy(verified_bundle(bundle), RemoteConfig(server.http_url, 5.0))
        for seed in range(3):
            frame = Frame(_image(seed), 0.0)
            np.testing.assert_array_equal(remote.infer(frame, TASK).actions, local.infer(frame, TASK).actions)
        remote.close()
    finally:
        local.close()
        server.stop()


def test_a_conditioned_parallel_head_carries_the_robots_last_action(tmp_path):
    """The executed action a conditioned head sees lives on the robot and travels as `past_action`."""
    pytest.importorskip("torch", reason="building the conditioned bundle needs torch (pip install vla-runtime[export])")
    import dataclasses

    from vla_runtime.export.build import build_from_source
    from vla_runtime.export.checkpoint import from_config
    from vla_runtime.export.presets import preset_config
    from vla_runtime.runtime.decoders import Decoded, make_decoder
    from vla_runtime.runtime.policy import load_policy
    from vla_runtime.runtime.serving import BINS, IDS, NORMALIZED, ServedPolicy, pixels_name

    cfg = dataclasses.replace(preset_config("tiny", "parallel"), condition_on_past_action=True)
    bundle = build_from_source(from_config(cfg), tmp_path / "bundle", progress=False)
    local = load_policy(bundle, backend="cpu", threads=1)
    served = ServedPolicy(load_policy(bundle, backend="cpu", threads=1))  # one server, decoding for this robot
    robot = make_decoder(local.manifest)
    assert "past_action" in served.wire.extra_names
    carried = set()
    for seed in range(4):
        image = _image(seed)
        local.infer(Frame(image, 0.0), TASK)
        extras = robot.request_extras()
        carried.add(extras["past_action"].tobytes())
        request = {pixels_name(v): local.preprocess(image, v).copy() for v in local.views}
        reply = served.serve({**request, IDS: local.tokenize(TASK), **extras})
        robot.observe(Decoded(reply[NORMALIZED][0], reply[BINS][0]))
        np.testing.assert_array_equal(reply[BINS][0], local.last_bins)
    assert len(carried) > 1  # the carry-over really changed between inferences
