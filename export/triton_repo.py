"""A Triton model repository for a bundle: robots send one request per inference, get one chunk.

Layout written (model names must equal their folder names):

    REPO/<name>/config.pbtxt          python model `policy`: the whole inference server-side
    REPO/<name>/1/model.py            export/triton_policy_model.py (a thin adapter)
    REPO/<name>/1/bundle/...          the bundle (manifest, tokenizer, and the graphs when inprocess)
    REPO/<name>_<role>/config.pbtxt   graphs=triton: one onnxruntime / TensorRT-plan model per graph;
                                      graphs=python: the same as a python model running onnxruntime
    REPO/<name>_<role>/1/<file>       the bundle's graph file and its external data, names unchanged
    REPO/<name>_<role>/1/model.py     graphs=python: export/triton_graph_model.py
    REPO/README.txt                   how to start a server on this repository

Two places for the graphs, because the pip-installable `tritonserver` (nvidia-pytriton) ships
only the python backend: `inprocess` runs them with onnxruntime inside the python model (any
Triton, CPU or GPU through onnxruntime-gpu); `triton` (NVIDIA's container) makes each graph a
Triton model on the onnxruntime or TensorRT backend, which the policy model calls through BLS.
The python model cannot keep a KV cache in Triton's implicit state, and a decode or flow loop
split between robot and server pays one round trip per step, so the loop always runs inside
the policy model. Dynamic batching gathers concurrent robots' requests into one `execute`.
`python` keeps the `triton` layout (graph models called through BLS) on a Triton that has only
the python backend: each graph model runs onnxruntime itself.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from vla_runtime.runtime.bundle import Bundle, check_destination, open_bundle
from vla_runtime.runtime.manifest import HEAD_GRAPHS, GraphSpec
from vla_runtime.runtime.serving import GRAPH_PLACES, SEAL_PARAMETER, PolicyWire, WireTensor

logger = logging.getLogger(__name__)

TRITON_TYPES = {"float32": "TYPE_FP32", "float64": "TYPE_FP64", "float16": "TYPE_FP16", "int64": "TYPE_INT64",
                "int32": "TYPE_INT32", "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8"}
MODEL_FILE = Path(__file__).with_name("triton_policy_model.py")
GRAPH_MODEL_FILE = Path(__file__).with_name("triton_graph_model.py")


@dataclass(frozen=True)
class RepoConfig:
    name: str = "policy"  # the policy model's name; graph models are <name>_<role>
    graphs: str = "triton"  # "triton" (NVIDIA container: graph models + BLS), "python" (graph models as
    # python models + BLS) or "inprocess" (the policy model runs the graphs itself)
    gpu: bool = False  # instance groups on the GPU (KIND_GPU) instead of the CPU
    tensorrt: bool = False  # graphs=triton on GPU: onnxruntime's TensorRT execution accelerator, fp16
    max_batch_size: int = 8  # robots' requests one execute() may receive
    batching: bool = True  # dynamic batching across robots (off: one request per execute)
    queue_delay_us: int = 2000  # how long the batcher waits for more robots (microseconds; well under a tick)
    instances: int = 1  # policy model instances (each holds its own sessions)
    threads: int | None = None  # onnxruntime intra-op threads per graph (inprocess); None = all cores

    def __post_init__(self):
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"--name {self.name!r}: use letters, digits, '-' and '_' only")
        if self.graphs not in GRAPH_PLACES:
            raise ValueError(f"--graphs {self.graphs!r} is not one of {GRAPH_PLACES}")
        if self.tensorrt and not (self.gpu and self.graphs == "triton"):
            raise ValueError("--tensorrt needs --gpu and --graphs triton (the onnxruntime backend's TensorRT EP)")
        if self.max_batch_size < 1:
            raise ValueError("--max-batch must be at least 1")
        if not (0 <= self.queue_delay_us <= 100_000):
            raise ValueError("--queue-delay-us must be between 0 and 100000 (0.1 s)")
        if self.instances < 1:
            raise ValueError("--instances must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("--threads must be at least 1")


def write_repository(bundle_dir: str | Path, out: str | Path, config: RepoConfig, force: bool = False) -> Path:
    """Verify the bundle, then write the repository under `out` (replaced whole when forced)."""
    bundle = open_bundle(bundle_dir)  # every hash: the BLS variant's policy model trusts these graphs
    out = Path(out)
    check_destination(out, force, ValueError)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _policy_model(bundle, out / config.name, config)
    if config.graphs != "inprocess":
        for role in HEAD_GRAPHS[bundle.manifest.head]:
            _graph_model(bundle, bundle.manifest.graphs[role], out / f"{config.name}_{role}", config)
    (out / "README.txt").write_text(_readme(bundle, config))
    logger.info("wrote Triton repository %s (%s graphs)", out, config.graphs)
    return out


def _policy_model(bundle: Bundle, folder: Path, config: RepoConfig) -> None:
    version = folder / "1"
    graph_files = {spec.file for spec in bundle.manifest.graphs.values()}
    graph_files |= {f for spec in bundle.manifest.graphs.values() for f in spec.data_files}
    skip = graph_files if config.graphs != "inprocess" else set()  # served by the graph models
    for rel in sorted(bundle.manifest.files):
        if rel not in skip:
            _copy(bundle.path(rel), version / "bundle" / rel)
    shutil.copy2(bundle.root / "manifest.json", version / "bundle" / "manifest.json")
    shutil.copy2(MODEL_FILE, version / "model.py")
    wire = PolicyWire.of(bundle.manifest)
    params = {"graphs": config.graphs, "device": "auto" if config.gpu else "cpu", SEAL_PARAMETER: bundle.seal}
    if config.threads is not None:
        params["threads"] = str(config.threads)
    lines = [
        f'name: "{folder.name}"',
        'backend: "python"',
        f"max_batch_size: {config.max_batch_size}",
        _tensors("input", wire.inputs),
        _tensors("output", wire.outputs),
        _instances(config),
    ]
    if config.batching:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {config.queue_delay_us} }}")
    lines += [f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()]
    (folder / "config.pbtxt").write_text("\n".join(lines) + "\n")


def _graph_model(bundle: Bundle, spec: GraphSpec, folder: Path, config: RepoConfig) -> None:
    """One graph as an onnxruntime or TensorRT-plan model; batch 1, variable axes as -1."""
    version = folder / "1"
    for rel in (spec.file, *spec.data_files):  # external data keeps its relative name beside the graph
        _copy(bundle.path(rel), version / rel)
    engine = spec.format == "tensorrt"
    python = config.graphs == "python"
    if python and engine:
        raise ValueError(f"graph {spec.role!r} is a TensorRT engine; --graphs python runs ONNX graphs only")
    if python:
        shutil.copy2(GRAPH_MODEL_FILE, version / "model.py")
    backend = 'backend: "python"' if python else 'platform: "tensorrt_plan"' if engine else 'backend: "onnxruntime"'
    inputs = tuple(WireTensor(t.name, t.dtype, _dims(t.shape)) for t in spec.inputs)
    outputs = tuple(WireTensor(t.name, t.dtype, _dims(t.shape)) for t in spec.outputs)
    lines = [
        f'name: "{folder.name}"',
        backend,
        "max_batch_size: 0",  # the bundle's graphs have a fixed batch of 1 and variable sequence axes
        # the python backend names its model.py here; the graph file goes in a parameter instead
        f'parameters {{ key: "graph_file" value: {{ string_value: "{spec.file}" }} }}' if python
        else f'default_model_filename: "{spec.file}"',
        _tensors("input", inputs),
        _tensors("output", outputs),
        _instances(config),
    ]
    if config.tensorrt and not engine:
        lines.append(
            "optimization { execution_accelerators { gpu_execution_accelerator: [ { name: \"tensorrt\"\n"
            '  parameters { key: "precision_mode" value: "FP16" }\n'
            '  parameters { key: "trt_engine_cache_enable" value: "1" }\n'
            '  parameters { key: "trt_engine_cache_path" value: "/tmp/vla-runtime-trt" } } ] } }'
        )
    if config.threads is not None and not engine:
        key = "threads" if python else "intra_op_thread_count"
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{config.threads}" }} }}')
    (folder / "config.pbtxt").write_text("\n".join(lines) + "\n")


def _dims(shape) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _tensors(kind: str, tensors: tuple[WireTensor, ...]) -> str:
    rows = []
    for t in tensors:
        optional = " optional: true" if t.optional else ""
        dims = ", ".join(str(d) for d in t.dims)
        rows.append(f'  {{ name: "{t.name}" data_type: {TRITON_TYPES[t.dtype]} dims: [ {dims} ]{optional} }}')
    return f"{kind} [\n" + ",\n".join(rows) + "\n]"


def _instances(config: RepoConfig) -> str:
    kind = "KIND_GPU" if config.gpu else "KIND_CPU"
    return f"instance_group [ {{ kind: {kind} count: {config.instances} }} ]"


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def _readme(bundle: Bundle, config: RepoConfig) -> str:
    name = bundle.manifest.model.get("name", bundle.root.name)
    where = ("onnxruntime inside the python model" if config.graphs == "inprocess"
             else f"Triton's own models {config.name}_<role>, called through BLS")
    return (
        f"Triton model repository for bundle {name!r} ({bundle.manifest.head} head); graphs run on {where}.\n"
        "The server's Python environment needs vla-runtime and numpy<2 (the python backend).\n"
        "Start: tritonserver --model-repository <this folder>\n"
        f"Robot: vla-runtime --bundle <the same bundle> --backend remote --server grpc://HOST:8001"
        f"{'' if config.name == 'policy' else f' --remote-model {config.name}'}\n"
    )


__all__ = ["RepoConfig", "write_repository"]
