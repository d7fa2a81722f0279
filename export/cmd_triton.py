"""`vla-export triton BUNDLE --out REPO`: a Triton model repository serving the bundle to robots.

The repository's `policy` model runs the whole inference (prefill and greedy decode, one head
pass, or prefix and Euler steps) inside the server, so a robot sends one request per chunk
(`vla-runtime --backend remote --server grpc://HOST:8001`). See export/triton_repo.py for the
layout and README "Serve a bundle on a GPU server with Triton" for the container commands.
"""

from __future__ import annotations

import logging

from vla_runtime.common.errors import UserError

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("triton", help="write a Triton model repository that serves a bundle to remote robots")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    p.add_argument("--out", required=True, metavar="REPO", help="repository folder to write")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--name", default="policy", help="policy model name (graph models are NAME_<role>; default policy)")
    p.add_argument("--graphs", choices=("triton", "python", "inprocess"), default="triton",
                   help="triton: each graph is an onnxruntime/TensorRT model called through BLS (NVIDIA's "
                        "container; default); python: the same layout with python graph models running "
                        "onnxruntime; inprocess: the policy model runs them on onnxruntime itself "
                        "(python and inprocess run on any Triton with the python backend, e.g. the "
                        "nvidia-pytriton wheel)")
    p.add_argument("--gpu", action="store_true", help="place model instances on the GPU (KIND_GPU)")
    p.add_argument("--tensorrt", action="store_true",
                   help="with --gpu --graphs triton: run the ONNX graphs through onnxruntime's TensorRT EP (fp16)")
    p.add_argument("--max-batch", type=int, default=8, help="robots' requests per batch (default 8)")
    p.add_argument("--no-batching", action="store_true", help="no dynamic batching: one request per execute")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="how long the batcher waits for more robots, in microseconds (default 2000)")
    p.add_argument("--instances", type=int, default=1, help="policy model instances (default 1)")
    p.add_argument("--threads", type=int, help="onnxruntime threads per graph on the server (default: all cores)")
    p.set_defaults(func=run)


def run(args) -> int:
    from vla_runtime.export.triton_repo import RepoConfig, write_repository
    from vla_runtime.runtime.bundle import BundleError

    try:
        config = RepoConfig(name=args.name, graphs=args.graphs, gpu=args.gpu, tensorrt=args.tensorrt,
                            max_batch_size=args.max_batch, batching=not args.no_batching,
                            queue_delay_us=args.queue_delay_us, instances=args.instances, threads=args.threads)
        repo = write_repository(args.bundle, args.out, config, force=args.force)
    except (BundleError, ValueError) as exc:
        raise UserError(str(exc)) from None
    models = sorted(p.name for p in repo.iterdir() if p.is_dir())
    print(f"repository: {repo} ({', '.join(models)}; graphs {config.graphs})")
    print(f"serve: tritonserver --model-repository {repo}   (its Python needs vla-runtime and numpy<2)")
    print(f"robot: vla-runtime --bundle {args.bundle} --backend remote --server grpc://HOST:8001"
          + ("" if config.name == "policy" else f" --remote-model {config.name}"))
    return 0
