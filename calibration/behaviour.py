"""The behaviour gate: does the quantized bundle still do the task, not only emit similar actions?

Action-level agreement on held-out frames says INT8 stays close to FP32 on frames the FP32
policy saw; it cannot say whether small differences compound once the policy's own actions
choose the next frame. This stage closes the loop in the simulator: the FP32 source and the
quantized bundle each run the same held-out seeds with the same instructions (paired, so a
drop is the policies' difference, not the scenes'), through the runtime's own batch runner and
success statistics. The gate fails when INT8 success falls more than `max_success_drop`
percentage points below FP32. Only bundles whose actions the simulated arm takes (ee_delta)
can be judged this way; others are refused before anything is written.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm
from vla_runtime.runtime.cmd_eval import EPISODE_STEPS, loaded_setup, run_batch
from vla_runtime.runtime.evaluation import summarize
from vla_runtime.runtime.manifest import Manifest
from vla_runtime.runtime.policy import load_policy
from vla_runtime.runtime.robot_description import RobotDescription, load_robot_description
from vla_runtime.runtime.sim.tasks import COLOURS, HELD_OUT_SEED_START, canonical_task

logger = logging.getLogger(__name__)

SIM_ROBOT = "sim"  # the built-in simulated arm the stage runs on


class BehaviourInputError(ValueError):
    """The bundle cannot be judged in closed loop; one line with the fix."""


@dataclass(frozen=True)
class BehaviourOptions:
    episodes: int = 0  # paired episodes per bundle; 0 turns the stage off
    first_seed: int = HELD_OUT_SEED_START  # episode i runs sim seed first_seed + i (held out from training)
    steps: int = EPISODE_STEPS  # control ticks per episode
    max_success_drop: float = 5.0  # percentage points INT8 success may fall below FP32

    def __post_init__(self):
        if self.episodes < 0:
            raise ValueError("--behaviour-episodes must be >= 0")
        if self.steps < 1:
            raise ValueError("--behaviour-steps must be >= 1")
        if not 0 <= self.max_success_drop <= 100:
            raise ValueError("--max-success-drop must be in 0..100 (percentage points)")
        if self.first_seed < HELD_OUT_SEED_START:
            raise ValueError(f"--behaviour-seed {self.first_seed} may be a demonstration scene; "
                             f"use {HELD_OUT_SEED_START} or higher (held-out seeds only)")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.episodes))


def sim_robot_for(manifest: Manifest, bundle_name: str) -> RobotDescription:
    """The simulated robot, or a one-line refusal when the bundle's actions are not the sim's."""
    desc = load_robot_description(SIM_ROBOT)
    if manifest.action.kind != desc.mapping:
        raise BehaviourInputError(
            f"{bundle_name} emits {manifest.action.kind} actions; the closed-loop stage runs only bundles "
            f"for the simulator ({desc.mapping}); drop --behaviour-episodes"
        )
    return desc


def closed_loop(bundle_dir: Path, desc: RobotDescription, seeds: list[int], tasks: list[str], steps: int,
                threads: int | None, label: str, progress: bool) -> list:
    """EpisodeOutcomes of one bundle on the given seeds, in seed order."""
    policy = load_policy(bundle_dir, backend="cpu", threads=threads, allow_failed_gate=True)
    bar = tqdm(total=len(seeds), desc=f"closed loop: {label}", unit="episode", disable=not progress)
    try:
        return run_batch(loaded_setup(policy, label), desc, seeds, tasks, steps,
                         on_episode=lambda i, o: bar.update(1))
    finally:
        bar.close()
        policy.close()


def _rate(summary: dict) -> dict:
    return {k: summary[k] for k in ("episodes", "successes", "success_rate", "wilson95")}


def compare_behaviour(reference_dir: str | Path, candidate_dir: str | Path, opts: BehaviourOptions,
                      threads: int | None = None, progress: bool = False, label: str = "int8") -> dict:
    """Paired closed-loop success of a reference (FP32) and a candidate bundle; the gate section."""
    if opts.episodes < 1:
        raise ValueError("the closed-loop stage needs at least one episode")
    reference_dir, candidate_dir = Path(reference_dir), Path(candidate_dir)
    from vla_runtime.runtime.bundle import open_bundle

    desc = sim_robot_for(open_bundle(candidate_dir).manifest, candidate_dir.name)
    seeds, tasks = opts.seeds, [canonical_task(c) for c in COLOURS]
    ref = closed_loop(reference_dir, desc, seeds, tasks, opts.steps, threads, "fp32", progress)
    got = closed_loop(candidate_dir, desc, seeds, tasks, opts.steps, threads, label, progress)
    ref_rate, got_rate = _rate(summarize(ref)), _rate(summarize(got))
    drop = round(100 * (ref_rate["success_rate"] - got_rate["success_rate"]), 2)
    passed = drop <= opts.max_success_drop
    summary = (f"{label} success {100 * got_rate['success_rate']:.1f} % vs fp32 {100 * ref_rate['success_rate']:.1f} %"
               f" on {len(seeds)} paired seeds: drop {drop:.1f} points "
               f"{'<=' if passed else '>'} {opts.max_success_drop:g}")
    logger.info("behaviour gate %s: %s", "PASSED" if passed else "FAILED", summary)
    return {
        "passed": passed,
        "summary": summary,
        "options": asdict(opts),
        "seeds": seeds,
        "tasks": tasks,
        "fp32": ref_rate,
        "quantized": got_rate,
        "success_drop_points": drop,
        "per_seed": {"fp32": [bool(o.success) for o in ref], "quantized": [bool(o.success) for o in got]},
        "only_fp32_succeeded": sum(a.success and not b.success for a, b in zip(ref, got, strict=True)),
        "only_quantized_succeeded": sum(b.success and not a.success for a, b in zip(ref, got, strict=True)),
    }
