"""The instructions the simulated tabletop understands, and which block each one names.

One home for the task vocabulary: the scripted expert reads the target from here, the
demonstration recorder draws its instructions from here, and closed-loop evaluation scores
the block named here. Seeds are split in two ranges so an evaluation can never be run on a
scene a policy was trained on: demonstrations use seeds below `HELD_OUT_SEED_START`,
evaluation only seeds from it upwards.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

COLOURS = ("red", "green", "blue")  # one block of each colour in tabletop.xml
# Paraphrases a demonstration set mixes; every word is in the reference tokenizer's corpus.
PHRASES = (
    "pick up the {colour} block",
    "lift the {colour} block",
    "grab the {colour} block",
    "pick up the {colour} cube",
)
LIFT_SUCCESS_M = 0.05  # metres the named block must end above its start height for a success
HELD_OUT_SEED_START = 100_000  # seeds [0, this) may be demonstrations; [this, ...) are evaluation only


class UnknownTaskError(ValueError):
    """An instruction names no block (or more than one) the simulated scene has."""


def canonical_task(colour: str) -> str:
    """The plain instruction for one colour ("pick up the red block")."""
    if colour not in COLOURS:
        raise UnknownTaskError(f"no {colour!r} block in the sim; colours are {', '.join(COLOURS)}")
    return PHRASES[0].format(colour=colour)


def task_block(task: str) -> str:
    """The body name of the block an instruction asks for ("red_block"); one colour word exactly."""
    words = set(re.findall(r"[a-z]+", task.lower()))
    named = [c for c in COLOURS if c in words]
    if len(named) != 1:
        raise UnknownTaskError(
            f"task {task!r} must name exactly one of the sim's blocks ({', '.join(COLOURS)}), "
            f"e.g. {canonical_task('red')!r}"
        )
    return f"{named[0]}_block"


def demo_task(seed: int) -> str:
    """The instruction recorded for a demonstration seed: colours and phrasings in equal turns."""
    colour = COLOURS[seed % len(COLOURS)]
    return PHRASES[(seed // len(COLOURS)) % len(PHRASES)].format(colour=colour)


def check_demo_seeds(first: int, count: int) -> None:
    """Refuse demonstration seeds that reach into the held-out evaluation range."""
    if first < 0 or first + count > HELD_OUT_SEED_START:
        raise ValueError(
            f"demonstration seeds {first}..{first + count - 1} must lie in 0..{HELD_OUT_SEED_START - 1}; "
            f"seeds from {HELD_OUT_SEED_START} up are held out for `vla-runtime eval`"
        )


def check_eval_seeds(first: int, count: int) -> None:
    """Refuse evaluation seeds that a demonstration could have used."""
    if first < HELD_OUT_SEED_START:
        raise ValueError(
            f"evaluation seed {first} may be a demonstration scene; use --seed {HELD_OUT_SEED_START} or higher "
            "(held-out seeds only)"
        )
