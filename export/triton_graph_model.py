"""One bundle graph as a Triton python model running onnxruntime (`vla-export triton --graphs python`).

For a Triton without the onnxruntime backend (the nvidia-pytriton wheel): the repository keeps
NVIDIA's layout, one model per graph called by the `policy` model through BLS, but each graph
model is this adapter around an onnxruntime session. `vla-export triton` copies this file to
`<repo>/<name>_<role>/1/model.py`; the graph file sits beside it under its bundle name.
"""

from __future__ import annotations

import json
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        if params.get("threads"):
            options.intra_op_num_threads = int(params["threads"])
        path = Path(args["model_repository"]) / args["model_version"] / params["graph_file"]
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i["name"] for i in config["input"]]
        self._outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        pb = self._pb
        responses = []
        for request in requests:
            feeds = {name: pb.get_input_tensor_by_name(request, name).as_numpy() for name in self._inputs}
            try:
                values = self._session.run(self._outputs, feeds)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types; the caller gets the text
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc))))
                continue
            tensors = [pb.Tensor(name, value) for name, value in zip(self._outputs, values, strict=True)]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses
