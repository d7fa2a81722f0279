"""Bounds on manifest input: size, depth, encoding, numeric ranges and paths.

A manifest is untrusted text until its seal (and, on robots with a trust store, its signature)
checks out, and even a genuine one must not ask for absurd work: a 10^6-pixel image side is a
10 TiB allocation, a 10^5-deep JSON nesting a crash. Every bound here turns such input into
one line naming the field, before anything is allocated or opened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vla_runtime.runtime.paths import path_problem

MANIFEST_NAME = "manifest.json"
# Input bounds: a manifest is untrusted text until sealed and signed, and even then an absurd
# number (a 10^6-pixel image side, 10^9 tokens) must be a one-line refusal, not an allocation.
MAX_MANIFEST_BYTES = 8 << 20  # the tiny bundles' manifests are ~10 KiB
MAX_JSON_DEPTH = 32  # nesting levels; the schema itself needs 6
MAX_FILES = 10_000  # entries in `files`
MAX_TENSORS = 4096  # inputs or outputs per graph (decode: 2 per layer + 2)
MAX_DIM = 1 << 31  # one fixed tensor dimension


class ManifestError(ValueError):
    """A bundle manifest is malformed; the message names the field and the fix."""


def read_manifest_doc(bundle_dir: str | Path) -> dict:
    """The raw JSON document, bounded in size and depth; one-line errors for bad bytes."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not Path(bundle_dir).is_dir():
        raise ManifestError(f"{bundle_dir}: not a bundle directory (expected a folder with {MANIFEST_NAME})")
    if path.is_symlink() or not path.is_file():
        raise ManifestError(f"{path}: missing or not a regular file; is this a bundle built by `vla-export build`?")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest vla-export wrote")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start}); rebuild the bundle") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); rebuild the bundle") from None
    except (RecursionError, ValueError) as exc:  # ValueError: integers longer than Python parses
        raise ManifestError(f"{path}: unreadable JSON ({type(exc).__name__}); rebuild the bundle") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise ManifestError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels; rebuild the bundle")
    if not isinstance(doc, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def bounded(where: str, value, lo, hi) -> None:
    if not (lo <= value <= hi):  # NaN fails every comparison, so it is refused too
        raise ManifestError(f"{where}: {value!r} is outside the sane range [{lo}, {hi}]")


def text(where: str, value, limit: int) -> None:
    if not isinstance(value, str) or len(value) > limit:
        raise ManifestError(f"{where}: expected a string of at most {limit} characters")


def rel_path(where: str, rel) -> None:
    problem = path_problem(rel)
    if problem:
        raise ManifestError(f"{where}: {problem} ({str(rel)[:60]!r})")


def _depth(doc: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest
