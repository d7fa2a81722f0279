"""GPU paths on a CPU-only machine: device fallback, precision recipes and the native TensorRT runner.

The fallback chain runs real onnxruntime sessions: onnxruntime here lacks the GPU providers, so
a provider it is told to use quietly becomes CPU, exactly what a robot with a broken TensorRT or
CUDA install sees. Only TensorRT and CUDA themselves are faked (no GPU here): a fake engine
computing y = 2 x on host memory behind cuda-python-shaped calls, enough to show that the
runner allocates once, checks every call, keeps resident outputs from aliasing and replays
CUDA graphs.
"""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
import types

import numpy as np
import pytest
from vla_runtime.export.tensorrt_build import (
    BuildRecipe,
    EngineConfig,
    EngineError,
    build_engine,
    build_recipe,
    fp32_layers,
    graph_precision,
)
from vla_runtime.runtime.backends import BackendError, BackendOptions, candidates
from vla_runtime.runtime.backends import onnxrt as onnxrt_module
from vla_runtime.runtime.backends import tensorrt as trt_module
from vla_runtime.runtime.backends.device import DeviceFacts
from vla_runtime.runtime.manifest import GraphSpec, TensorSpec, load_manifest

# -- device choice and fallback -------------------------------------------------------------------


def _pretend_gpu_providers(monkeypatch, gpu=("Fake GPU", "8.7"), libnvinfer="libnvinfer.so.10"):
    """onnxruntime-gpu's view of a machine: every provider listed, whatever is really there."""
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxrt_module.ort, "get_available_providers", lambda: listed)
    monkeypatch.setattr(onnxrt_module, "gpu_info", lambda device_id=0: gpu)
    monkeypatch.setattr(onnxrt_module, "tensorrt_library", lambda: libnvinfer)


def test_auto_does_not_pick_a_listed_tensorrt_provider_without_libnvinfer(monkeypatch, tiny_bundle):
    specs = list(load_manifest(tiny_bundle("tokens")).graphs.values())
    _pretend_gpu_providers(monkeypatch, libnvinfer=None)
    assert [s.device for s in candidates("auto", specs)] == ["cuda", "cpu"]
    with pytest.raises(BackendError, match="libnvinfer.*--backend cuda"):
        candidates("tensorrt", specs)
    _pretend_gpu_providers(monkeypatch, gpu="no NVIDIA driver (libcuda) on this machine")
    assert [s.device for s in candidates("auto", specs)] == ["cpu"]


def test_auto_falls_back_tensorrt_then_cuda_then_cpu_saying_why(monkeypatch, tiny_bundle, caplog):
    from vla_runtime.runtime.policy import load_policy

    _pretend_gpu_providers(monkeypatch)  # probes pass; onnxruntime then cannot start either GPU provider
    bundle = tiny_bundle("parallel")
    with caplog.at_level(logging.WARNING, logger="vla_runtime.runtime.policy"):
        with load_policy(bundle, backend="auto", threads=1) as policy:
            assert policy.backend_name == "cpu"
    failed = [r.getMessage() for r in caplog.records if "failed to activate" in r.getMessage()]
    assert [m.split(":")[1].split()[0] for m in failed] == ["tensorrt", "cuda"]
    assert all("fell back" in m for m in failed)
    with pytest.raises(BackendError, match="fell back"):  # an explicit device never falls through
        load_policy(bundle, backend="cuda", threads=1)


# -- engine build recipes ---------------------------------------------------------------------------


def test_build_recipe_per_tensorrt_version():
    weak = build_recipe("fp16", "10.3.0")
    assert not weak.strongly_typed and weak.pin_fp32 and "FP16" in weak.flags and "INT8" not in weak.flags
    assert set(build_recipe("int8", "10.12.0").flags) == {"FP16", "INT8", "PREFER_PRECISION_CONSTRAINTS"}
    strong = build_recipe("int8", "11.0.0")
    assert strong.strongly_typed and strong.flags == () and not strong.pin_fp32  # flags removed in 11
    assert build_recipe("int8", "10.3.0", strongly_typed=True).strongly_typed
    with pytest.raises(EngineError, match="modelopt.onnx.autocast"):
        build_recipe("fp16", "11.1.0")
    with pytest.raises(EngineError, match="TensorRT 10.x or 11.x"):
        build_recipe("fp16", "8.6.1")


def test_fp32_recipe_turns_fp16_off_on_10_and_11():
    weak = build_recipe("fp32", "10.3.0")
    assert weak == BuildRecipe(strongly_typed=False, flags=(), pin_fp32=False)  # no FP16 flag at all
    assert build_recipe("fp32", "11.0.0").strongly_typed  # fp32 from the graph's own types
    assert graph_precision("fp32", "fp32") == "fp32"


class _FakeBuilderConfig:
    def __init__(self):
        self.flags, self.profiles, self.builder_optimization_level = [], [], 0

    def set_memory_pool_limit(self, pool, size):
        self.workspace = size

    def set_flag(self, flag):
        self.flags.append(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return 0

    def create_timing_cache(self, data):
        return types.SimpleNamespace(serialize=lambda: b"cache")

    def set_timing_cache(self, cache, ignore_mismatch):
        return True


def _fake_tensorrt_builder(version: str, config: _FakeBuilderConfig):
    """TensorRT's build API as `build_engine` calls it; records the flags and network mode."""
    network = types.SimpleNamespace(num_layers=0, get_layer=lambda i: None)
    created = []

    def create_network(mode):
        created.append(mode)
        return network

    builder = types.SimpleNamespace(
        create_network=create_network,
        create_builder_config=lambda: config,
        create_optimization_profile=lambda: types.SimpleNamespace(set_shape=lambda *a: None),
        build_serialized_network=lambda net, cfg: b"plan",
    )
    trt = types.SimpleNamespace(
        __version__=version,
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=lambda logger: builder,
        OnnxParser=lambda net, logger: types.SimpleNamespace(parse_from_file=lambda path: True, num_errors=0),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
        BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8",
                                          PREFER_PRECISION_CONSTRAINTS="PREFER_PRECISION_CONSTRAINTS"),
    )
    return trt, created


@pytest.mark.parametrize("precision, version, flags, mode", [
    ("fp16", "10.3.0", ["FP16", "PREFER_PRECISION_CONSTRAINTS"], 0),
    ("fp32", "10.3.0", [], 0),  # FP16 off: the builder never hears of fp16
    ("fp32", "11.0.0", [], 1),  # strongly typed: fp32 from the graph
])
def test_engine_build_sets_exactly_the_precision_flags(monkeypatch, tmp_path, precision, version, flags, mode):
    config = _FakeBuilderConfig()
    trt, created = _fake_tensorrt_builder(version, config)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan, cache = build_engine(tmp_path / "vision.onnx", {"x": ((1,), (2,), (4,))}, EngineConfig(precision))
    assert (plan, cache) == (b"plan", b"cache")
    assert config.flags == flags and created == [mode]


def test_cli_precision_fp32_turns_fp16_off_on_the_tensorrt_provider(monkeypatch, tiny_bundle):
    from vla_runtime.runtime.assemble import open_policy
    from vla_runtime.runtime.cli import build_parser

    _pretend_gpu_providers(monkeypatch)  # the TensorRT provider is configured, then fails to start here
    seen = []
    original = onnxrt_module.OrtBackend._tensorrt_options

    def spy(self):
        opts = original(self)
        seen.append(opts["trt_fp16_enable"])
        return opts

    monkeypatch.setattr(onnxrt_module.OrtBackend, "_tensorrt_options", spy)
    for flag, fp16 in ((["--precision", "fp32"], False), ([], True)):
        seen.clear()
        args = build_parser().parse_args(["run", "--bundle", str(tiny_bundle("parallel")), "--backend", "auto", *flag])
        policy, _, _ = open_policy(args)
        policy.close()
        assert seen and set(seen) == {fp16}, (flag, seen)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--precision", "fp8"])


def test_norms_softmax_and_rmsnorm_chain_stay_fp32():
    layers = [  # (LayerType name, inputs, outputs): an RMSNorm, a matmul and an attention softmax
        ("ELEMENTWISE", ("x", "two"), ("sq",)),  # 0 x ** 2
        ("REDUCE", ("sq",), ("ms",)),  # 1 mean
        ("ELEMENTWISE", ("ms", "eps"), ("mse",)),  # 2 + eps
        ("UNARY", ("mse",), ("rms",)),  # 3 sqrt
        ("ELEMENTWISE", ("x", "rms"), ("xn",)),  # 4 x / rms
        ("MATRIX_MULTIPLY", ("xn", "w"), ("h",)),  # 5 stays fp16
        ("SOFTMAX", ("h",), ("p",)),  # 6
        ("ACTIVATION", ("p",), ("g",)),  # 7 not near a reduction: fp16
        ("NORMALIZATION", ("g",), ("n",)),  # 8 LayerNorm
    ]
    assert fp32_layers(layers) == [0, 1, 2, 3, 4, 6, 8]


def test_engine_command_does_not_import_tqdm_or_torch():
    code = ("import sys; from vla_runtime.export import cmd_engine, tensorrt_build; "
            "from vla_runtime.runtime.backends import tensorrt, profiles; "
            "print(sorted(m for m in ('tqdm', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_gpu_check_stops_in_one_line_without_a_gpu():
    from pathlib import Path

    from vla_runtime.runtime.backends.tensorrt import TensorrtBackend

    if TensorrtBackend.probe("tensorrt") is None:
        pytest.skip("a GPU with TensorRT is present: gpu_check would build and run everything")
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 77, out.stderr
    assert out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("gpu_check: no usable GPU here (") and "nothing was built" in out.stderr


# -- the native runner on a fake TensorRT -----------------------------------------------------------


class FakeCudart:
    """cuda-python's runtime API shape, on host memory; counts what the runner asks for."""

    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyDeviceToHost=2, cudaMemcpyHostToDevice=1)
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self):
        self.mallocs, self.frees, self.graph_launches, self.capturing = 0, 0, 0, None
        self._memory = {}

    def cudaMalloc(self, n):
        buf = np.zeros(n, np.uint8)
        self._memory[buf.ctypes.data] = buf
        self.mallocs += 1
        return 0, buf.ctypes.data

    def cudaFree(self, ptr):
        self.frees += 1
        self._memory.pop(ptr, None)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        work, self.capturing = self.capturing, None
        return 0, (tuple(work) if work else None)

    def cudaGraphInstantiate(self, graph, flags):
        return 0, graph

    def cudaGraphLaunch(self, graph, stream):
        self.graph_launches += 1
        for step in graph:
            step()
        return (0,)

    def __getattr__(self, name):  # cudaSetDevice, cudaStreamCreate/Synchronize/Destroy, cudaGraph*Destroy
        if name.startswith("cuda"):
            return lambda *a: (0, 1) if name == "cudaStreamCreate" else (0,)
        raise AttributeError(name)


class FakeContext:
    """y = 2 * x over a dynamic axis with profile 1..8; refuses shape (1, 7) like a bad profile."""

    def __init__(self, cudart, capturable=True, fail_execute=False):
        self.cudart, self.capturable, self.fail_execute = cudart, capturable, fail_execute
        self.shape, self.addr, self.executes = {}, {}, 0

    def set_input_shape(self, name, shape):
        self.shape[name] = tuple(shape)
        return shape[1] != 7

    def set_tensor_address(self, name, ptr):
        self.addr[name] = ptr
        return True

    def get_tensor_shape(self, name):
        return self.shape["x"]

    def execute_async_v3(self, stream):
        if self.fail_execute:
            return False
        n, src, dst = int(np.prod(self.shape["x"])), self.addr["x"], self.addr["y"]

        def step():
            x = np.ctypeslib.as_array((ctypes.c_float * n).from_address(src))
            np.ctypeslib.as_array((ctypes.c_float * n).from_address(dst))[:] = 2 * x

        if self.cudart.capturing is not None:
            if not self.capturable:
                return False
            self.cudart.capturing.append(step)
        else:
            self.executes += 1
            step()
        return True


def _fake_tensorrt(context):
    engine = types.SimpleNamespace(
        num_io_tensors=2,
        get_tensor_name=lambda i: ("x", "y")[i],
        get_tensor_mode=lambda n: "in" if n == "x" else "out",
        get_tensor_dtype=lambda n: "float",
        get_tensor_shape=lambda n: (1, -1),
        get_tensor_profile_shape=lambda n, p: [(1, 1), (1, 4), (1, 8)],
        create_execution_context=lambda: context,
    )
    runtime = types.SimpleNamespace(deserialize_cuda_engine=lambda data: engine if data == b"engine" else None)
    return types.SimpleNamespace(
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=lambda logger: runtime,
        TensorIOMode=types.SimpleNamespace(INPUT="in"),
        nptype=lambda dtype: np.float32,
    )


@pytest.fixture
def fake_trt(monkeypatch, tmp_path):
    """A TensorrtBackend for a decode-like engine (kept output fed back as input) on the fakes."""

    def make(**context_kwargs):
        cudart = FakeCudart()
        context = FakeContext(cudart, **context_kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(context))
        monkeypatch.setattr(trt_module, "import_cudart", lambda: cudart)
        monkeypatch.setattr(trt_module, "live_device", lambda device_id=0: DeviceFacts("Fake", "8.7", "10.3.0", "12.6"))
        path = tmp_path / "decode.engine"
        path.write_bytes(b"engine")
        spec = GraphSpec(role="decode", file="decode.engine", format="tensorrt",
                         inputs=(TensorSpec("x", "float32", (1, "past")),),
                         outputs=(TensorSpec("y", "float32", (1, "past")),))
        runner = trt_module.TensorrtBackend(spec, path, "tensorrt", BackendOptions())
        runner.activate()
        return runner, cudart, context

    return make


def test_runner_allocates_once_at_the_profile_maximum(fake_trt):
    runner, cudart, _ = fake_trt()
    assert cudart.mallocs == 3  # one staging buffer for x, a ring of two for y
    for n in (1, 8, 3, 5, 8, 2):
        x = np.arange(n, dtype=np.float32)[None]
        np.testing.assert_array_equal(runner.run({"x": x})["y"], 2 * x)
    assert (cudart.mallocs, cudart.frees) == (3, 0)  # nothing allocated or freed per run


def test_kept_outputs_chain_without_aliasing_and_stale_views_are_refused(fake_trt):
    runner, _, _ = fake_trt()
    x = np.ones((1, 4), np.float32)
    first = runner.run({"x": x}, keep=("y",))["y"]  # ring slot 0
    second = runner.run({"x": first}, keep=("y",))["y"]  # reads slot 0, writes slot 1
    np.testing.assert_array_equal(runner.fetch(second), 4 * x)
    with pytest.raises(BackendError, match="would overwrite its own input"):
        runner.run({"x": first})  # slot 0 again: reading and writing one buffer
    runner.run({"x": x})  # writes slot 0
    with pytest.raises(BackendError, match="overwritten by a later run"):
        runner.run({"x": first})


def test_every_tensorrt_result_is_checked(fake_trt):
    runner, _, _ = fake_trt()
    with pytest.raises(BackendError, match="outside the engine's profile"):
        runner.run({"x": np.ones((1, 7), np.float32)})
    with pytest.raises(BackendError, match="exceeds the engine profile's maximum"):
        runner.run({"x": np.ones((1, 9), np.float32)})
    failing, _, _ = fake_trt(fail_execute=True)
    with pytest.raises(BackendError, match="TensorRT execution failed"):
        failing.run({"x": np.ones((1, 2), np.float32)})


def test_repeated_shapes_replay_a_cuda_graph(fake_trt):
    runner, cudart, context = fake_trt()
    for k in range(6):  # the same shape and addresses each time, as every flow step has
        x = np.full((1, 4), k, np.float32)
        np.testing.assert_array_equal(runner.run({"x": x})["y"], 2 * x)
    # slots alternate, so two signatures: each launched plainly once, then captured and replayed
    assert context.executes == 2 and cudart.graph_launches == 4 and len(runner._graphs) == 2


def test_engines_that_cannot_be_captured_launch_plainly(fake_trt):
    runner, cudart, context = fake_trt(capturable=False)
    for k in range(4):
        x = np.full((1, 3), k, np.float32)
        np.testing.assert_array_equal(runner.run({"x": x})["y"], 2 * x)
    assert cudart.graph_launches == 0 and context.executes == 4 and not runner._graphs_ok


def test_deactivate_frees_everything(fake_trt):
    import gc

    runner, cudart, _ = fake_trt()
    runner.run({"x": np.ones((1, 2), np.float32)})
    runner.deactivate()
    gc.collect()
    assert cudart.frees == cudart.mallocs == 3
