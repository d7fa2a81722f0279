"""`vla-export train`: behaviour-clone the reference VLA on recorded demonstrations into a checkpoint.

The result is an ordinary checkpoint directory (export/checkpoint.py), so `vla-export build
--checkpoint DIR` exports it like any user's model. Next to the four checkpoint files it leaves
`train.json` (command, data, config, losses, wall time) and `loss.png` (the loss curve).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path

from vla_runtime.common.cli import missing_dependency
from vla_runtime.common.errors import UserError
from vla_runtime.export.presets import HEADS, PRESETS

logger = logging.getLogger(__name__)

TRAIN_LOG = "train.json"
LOSS_PLOT = "loss.png"


def register(sub) -> None:
    from vla_runtime.export.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="behaviour cloning on recorded demonstrations -> checkpoint directory")
    p.add_argument("--data", required=True, metavar="DIR",  # read through runtime.episodes
                   help="recorded demonstrations (`vla-runtime --policy scripted --episodes N --record DIR`)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint directory to write")
    p.add_argument("--head", choices=HEADS, default="parallel", help="action head (default parallel)")
    p.add_argument("--preset", choices=PRESETS, default="demo", help="size preset (default demo)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"samples per step (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the weights, batches and noise (default 0)")
    p.add_argument("--threads", type=int, default=d.threads, help=f"torch CPU threads (default {d.threads})")
    p.add_argument("--max-episodes", type=int, metavar="N", help="use only the first N episodes")
    p.add_argument("--relabelled", action="append", default=[], metavar="FILE",
                   help="observations the expert labelled (`vla-export dagger`); repeatable, added to --data")
    p.add_argument("--init", metavar="CKPT", help="continue from this checkpoint (its weights and action statistics)"
                   " instead of the preset's seeded random weights")
    p.add_argument("--state", metavar="ROBOT",
                   help="the model also reads the measured joints and gripper of this robot (built-in name such as "
                        "'sim', or a robot TOML); their range is measured on the demonstrations")
    p.add_argument("--pooling", choices=("mean", "attention"), default="mean",
                   help="parallel head: mean of the prefix, or learned queries attending over it (default mean)")
    p.add_argument("--image-size", type=int, metavar="PX",
                   help="camera input side in pixels (default: the preset's); more pixels per centimetre of table")
    p.add_argument("--patch-size", type=int, metavar="PX",
                   help="SigLIP patch side (default: the preset's); image-size / patch-size squared image tokens")
    p.add_argument("--views", metavar="LIST",
                   help="camera views the model reads, in order, e.g. front,wrist (default: the preset's one view); "
                        "record them all with `--record-views`")
    p.add_argument("--past-action", action=argparse.BooleanOptionalAction, default=None,
                   help="parallel head: also read the last executed action's bins (default: as the preset says). "
                        "A smooth expert's next action is nearly its last, so a policy reading it may copy it and "
                        "stop looking; with --state the gripper and arm pose carry the phase instead")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint directory")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from vla_runtime.export.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from vla_runtime.export.train import TrainConfig, train
    from vla_runtime.export.train_data import TrainDataError, load_demonstrations, load_relabelled, merge

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out}: exists and is not empty; pass --force to overwrite or choose another --out")
    try:
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          threads=args.threads)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    shaped = (args.state or args.pooling != "mean" or args.past_action is not None or args.image_size
              or args.patch_size or args.views)
    if args.init and shaped:
        raise UserError("--state / --views / --pooling / --past-action / --image-size / --patch-size shape a fresh "
                        "model; with --init the checkpoint's own config holds them")
    try:
        source = load_checkpoint(args.init, head=args.head) if args.init else _fresh_model(args)
    except CheckpointError as exc:
        raise UserError(f"--init: {exc}") from None
    m = source.cfg
    try:
        data = load_demonstrations(args.data, source.tokenizer, m.image_size, m.horizon, m.bins, args.max_episodes,
                                   norm=source.norm if args.init else None, state=source.state_norm,
                                   measure_state=not args.init, views=m.views)
        extra = [load_relabelled(f, source.tokenizer, data.norm, m.image_size, m.horizon, m.bins, data.state_norm,
                                 views=len(m.views)) for f in args.relabelled]
    except TrainDataError as exc:
        raise UserError(str(exc)) from None
    if extra:
        data = merge([data, *extra])
        print(f"relabelled: {sum(len(x) for x in extra)} observations from {', '.join(args.relabelled)}")
    print(f"data: {len(set(data.episode.tolist()))} episodes, {len(data)} frames, "
          f"{len(data.tasks)} instructions from {args.data}", flush=True)
    result = train(source.model, data, cfg)
    trained = dataclasses.replace(source, norm=data.norm, state_norm=data.state_norm,
                                  origin=f"trained {args.preset}/{args.head}, seed {args.seed}")
    save_checkpoint(trained, out)
    log = {
        "command": "vla-export " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "preset": args.preset,
        "head": args.head,
        "config": dataclasses.asdict(cfg),
        "init": args.init,
        "relabelled": list(args.relabelled),
        "state": args.state,
        "pooling": source.cfg.pooling,
        "views": list(source.cfg.views),
        "past_action": source.cfg.condition_on_past_action,
        "data": {"path": str(args.data), "episodes": len(set(data.episode.tolist())), "frames": len(data),
                 "tasks": list(data.tasks)},
        "seconds": round(result.seconds, 1),
        "final_loss": round(sum(result.losses[-20:]) / len(result.losses[-20:]), 5),
        "val_losses": [[s, round(v, 5)] for s, v in result.val_losses],
        "losses": [round(v, 5) for v in result.losses],
    }
    (out / TRAIN_LOG).write_text(json.dumps(log) + "\n")
    plot = save_loss_plot(result.losses, result.val_losses, out / LOSS_PLOT, f"{args.preset}/{args.head}")
    print(f"trained {cfg.steps} steps in {result.seconds:.0f} s: loss {result.losses[0]:.3f} -> "
          f"{log['final_loss']:.3f}" + (f", validation {result.val_losses[-1][1]:.3f}" if result.val_losses else ""))
    print(f"checkpoint: {out}" + (f" (loss curve {plot})" if plot else ""))
    return 0


def _fresh_model(args):
    """The preset's seeded random weights, reading the --state robot's joints and gripper when asked."""
    from vla_runtime.export.checkpoint import from_config
    from vla_runtime.export.presets import preset_config

    try:
        cfg = dataclasses.replace(preset_config(args.preset, args.head), pooling=args.pooling)
        if args.past_action is not None:
            if args.past_action and args.head != "parallel":
                raise ValueError("only the parallel head reads the last action")
            cfg = dataclasses.replace(cfg, condition_on_past_action=args.past_action)
        views = tuple(v.strip() for v in args.views.split(",")) if args.views else cfg.views
        cfg = dataclasses.replace(cfg, image_size=args.image_size or cfg.image_size,
                                  patch_size=args.patch_size or cfg.patch_size, views=views)
    except ValueError as exc:
        raise UserError(f"--views / --pooling / --past-action / --image-size / --patch-size: {exc}") from None
    if not args.state:
        return from_config(cfg, seed=args.seed)
    from vla_runtime.export.state_stats import robot_state_stats
    from vla_runtime.runtime.robot_description import RobotDescriptionError

    if args.head == "tokens":
        raise UserError("--state: the tokens head reads no robot state; use --head parallel or flow")
    try:
        layout = robot_state_stats(args.state)  # names and units; the range is measured on the data
    except RobotDescriptionError as exc:
        raise UserError(f"--state {args.state}: {exc}") from None
    return from_config(dataclasses.replace(cfg, state_dim=layout.dim), seed=args.seed, state_norm=layout)


def save_loss_plot(losses: list[float], val: list[tuple[int, float]], path: Path, title: str) -> Path | None:
    """Loss curve as a PNG (matplotlib); None, with a note, when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        if missing_dependency(exc) != "matplotlib":
            raise
        logger.warning("matplotlib not installed: no %s (pip install 'vla-runtime[export]')", path.name)
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, lw=0.6, alpha=0.5, label="train (per step)")
    k = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - k) : i + 1]) / len(losses[max(0, i - k) : i + 1]) for i in range(len(losses))]
    ax.plot(range(1, len(losses) + 1), smooth, lw=1.5, label=f"train (mean of {k + 1})")
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", lw=1.2, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(f"behaviour cloning: {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
