"""The `policy` model of a Triton repository: one request per robot inference, one chunk back.

`vla-export triton` copies this file to `<repo>/<name>/1/model.py`; Triton's python backend
loads it. It is a thin adapter: the server side of the wire contract and all decoding live in
`vla_runtime.runtime.serving`, which the server's Python environment imports (install
`vla-runtime` there, with numpy<2 for the python backend). The bundle sits beside this file in
`bundle/`; the config's parameters say where the graphs run (`inprocess` on onnxruntime, or
`triton`: the repository's own graph models through BLS).

With dynamic batching Triton hands `execute` the requests of several robots at once; each gets
its own response or its own error, so one robot's bad request never fails another's.
"""

from __future__ import annotations

import json
from pathlib import Path


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils
        from vla_runtime.runtime.serving import open_served

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        here = Path(args["model_repository"]) / args["model_version"]
        threads = int(params["threads"]) if params.get("threads") else None
        self._served = open_served(here / "bundle", params.get("graphs", "inprocess"), params.get("device", "auto"),
                                   threads, config["name"], pb_utils)
        self._names = [t.name for t in self._served.wire.inputs]

    def execute(self, requests):
        from vla_runtime.runtime.backends.base import BackendError
        from vla_runtime.runtime.manifest import ManifestError
        from vla_runtime.runtime.serving import RequestError

        pb = self._pb
        responses = []
        for request in requests:
            inputs = {}
            for name in self._names:
                tensor = pb.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    inputs[name] = tensor.as_numpy()
            try:
                outputs = self._served.serve(inputs)
            except (RequestError, BackendError, ManifestError, ValueError) as exc:
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc))))
                continue
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(k, v) for k, v in outputs.items()]))
        return responses

    def finalize(self):
        self._served.policy.close()
