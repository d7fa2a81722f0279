"""One real graph over protobuf's 2 GiB limit through both quantizers, with peak RSS and wall time.

The unit tests reach the external-data path with a lowered threshold; this runs it at the
size that needs it: one MatMul whose float32 weight is 2.2 GB (24,000 x 24,000 minus a bit),
written with external data, quantized by the QDQ recipe (calibrated on a few inputs) and by
the cpu-fast dynamic recipe at the default threshold, each result loaded by onnxruntime and
compared with the float graph.

    nice -n 10 timeout 1h python bench/bench_quantize_2gb.py --work /tmp/q2gb
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def write_graph(path: Path, width: int) -> int:
    """The float graph with its weight written straight to the data file (one protobuf cannot hold it)."""
    import onnx
    from onnx import TensorProto, helper
    from onnx.external_data_helper import set_external_data
    from vla_runtime.calibration.quantize import data_file

    rng = np.random.default_rng(0)
    with open(path.parent / data_file(path), "wb") as f:
        for _ in range(width):  # row by row: never the whole float32 matrix in memory
            (rng.standard_normal(width, dtype=np.float32) * 0.01).tofile(f)  # one row of [K, N]
    init = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[width, width], raw_data=b"")
    set_external_data(init, location=data_file(path), offset=0, length=width * width * 4)
    init.data_location = TensorProto.EXTERNAL
    init.ClearField("raw_data")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["hidden_states"], name="fc")], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [1, width])], [init],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return width * width * 4


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/quantize-2gb", help="scratch folder (replaced, removed after)")
    ap.add_argument("--width", type=int, default=23_500, help="K = N of the weight; 23,500 -> 2.21 GB float32")
    args = ap.parse_args(argv)
    import onnxruntime as ort
    from vla_runtime.calibration.cpu_fast import CpuFastConfig, quantize_cpu_fast
    from vla_runtime.calibration.quantize import QdqConfig, quantize_qdq

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "prefill.onnx"
    t = time.perf_counter()
    nbytes = write_graph(src, args.width)
    print(f"float graph: {nbytes / 1e9:.2f} GB weight (> 2 GiB: {nbytes > 2**31}), written in "
          f"{time.perf_counter() - t:.0f} s, peak RSS {_peak_gb():.2f} GB")
    gc.collect()
    x = np.random.default_rng(1).standard_normal((1, args.width), dtype=np.float32)
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    gc.collect()
    ok = True
    for label in ("cpu-fast dynamic", "qdq"):
        dst = work / f"prefill.{label.split()[0]}.onnx"
        t = time.perf_counter()
        if label == "qdq":
            samples = [{"x": np.random.default_rng(i).standard_normal((1, args.width), dtype=np.float32)}
                       for i in range(4)]
            res = quantize_qdq(src, dst, "prefill", samples, QdqConfig())
        else:
            res = quantize_cpu_fast(src, dst, "prefill", CpuFastConfig(method="dynamic"), QdqConfig())
        seconds = time.perf_counter() - t
        got = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        rel = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        data = [(work / d).stat().st_size / 1e9 for d in res.data_files]
        good = bool(res.quantized and res.data_files and rel < 0.05)
        ok &= good
        print(f"{label:<17} {seconds:>6.0f} s  graph {dst.stat().st_size / 1e6:.2f} MB + data {data} GB  "
              f"max rel err {rel:.3%}  peak RSS so far {_peak_gb():.2f} GB  {'ok' if good else 'FAILED'}")
        gc.collect()
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
