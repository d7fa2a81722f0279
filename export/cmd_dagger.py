"""`vla-export dagger`: roll a trained bundle out in the simulator and label its states with the expert.

The output feeds `vla-export train --relabelled FILE` (export/dagger.py says why and what the
file holds). Seeds must be demonstration seeds: the held-out range stays for `vla-runtime eval`.
"""

from __future__ import annotations

import logging
import time

from vla_runtime.common.errors import UserError

logger = logging.getLogger(__name__)


def register(sub) -> None:
    from vla_runtime.runtime.assemble import add_robot_args

    p = sub.add_parser("dagger", help="learner drives the sim, scripted expert labels its states -> .npz for train")
    p.add_argument("--bundle", required=True, metavar="DIR", help="the trained policy's bundle (the learner)")
    p.add_argument("--episodes", type=int, default=150, help="episodes (default 150)")
    p.add_argument("--seed", type=int, default=1000, help="first demonstration seed (default 1000; < 100000)")
    p.add_argument("--steps", type=int, default=100, help="ticks per episode (default 100, as eval)")
    p.add_argument("--out", required=True, metavar="FILE", help="labelled observations (.npz)")
    add_robot_args(p)
    p.set_defaults(func=cmd_dagger, backend="cpu", allow_failed_gate=False, head=None)


def cmd_dagger(args) -> int:
    from vla_runtime.export.dagger import collect
    from vla_runtime.runtime.assemble import open_policy
    from vla_runtime.runtime.cmd_eval import episode_line, sim_description
    from vla_runtime.runtime.sim.tasks import check_demo_seeds, demo_task

    if args.episodes < 1 or args.steps < 1:
        raise UserError("--episodes and --steps must be at least 1")
    try:
        check_demo_seeds(args.seed, args.episodes)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    desc = sim_description(args)
    learner, _, label = open_policy(args)
    seeds = list(range(args.seed, args.seed + args.episodes))
    start = time.perf_counter()
    try:
        samples, outcomes = collect(learner, desc, seeds, [demo_task(s) for s in seeds], args.steps,
                                    on_episode=lambda i, o: print(episode_line(i, len(seeds), o), flush=True))
    finally:
        learner.close()
    path = samples.save(args.out)
    ok = sum(o.success for o in outcomes)
    print(f"learner: {label} lifted {ok}/{len(outcomes)} on seeds {seeds[0]}..{seeds[-1]}")
    print(f"labelled {len(samples.images)} observations in {time.perf_counter() - start:.0f} s: {path}")
    return 0
