"""The embedded default: the trained demo policy, exported once into the user's cache.

Every head's bundle (`parallel` is the default) is exported from the trained demo checkpoint
shipped with the exporter, so a first run on the simulator picks up the block the task names.
A head without a shipped checkpoint would fall back to the tiny random-weight preset (sizes only).

Building needs torch, which the runtime never imports, so the exporter runs in a subprocess
(its progress bar goes straight to the terminal). It writes into a staging folder that is
renamed into place only when complete, so an interrupted first run leaves nothing half-built
and the next run simply starts over. Later runs find the folder and start in seconds.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from vla_runtime.runtime.manifest import MANIFEST_NAME, ManifestError, load_manifest

logger = logging.getLogger(__name__)

DEFAULT_HEAD = "parallel"  # one graph call per chunk: the quickest first build and the quickest tick
DEFAULT_PRESET = "tiny"  # random weights, for heads without a trained demo checkpoint
TRAINED_HEADS = ("parallel", "tokens", "flow")  # heads whose trained demo checkpoint ships in the package
# Part of the cache key: bump when the shipped checkpoints change, so an older cached bundle
# (random weights, or an earlier training) is never picked up again.
TRAINED_REVISION = "trained-4"


class DefaultBundleError(RuntimeError):
    """The default bundle could not be built; the message says what to do instead."""


def package_version() -> str:
    try:
        return metadata.version("vla-runtime")
    except metadata.PackageNotFoundError:
        return "0"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vla-runtime"


def default_bundle_dir(head: str = DEFAULT_HEAD) -> Path:
    kind = TRAINED_REVISION if head in TRAINED_HEADS else f"random-{DEFAULT_PRESET}"
    return cache_root() / f"default-{package_version()}-{kind}-{head}"


def is_trained(head: str) -> bool:
    """Whether the default bundle for `head` is the trained demo policy (else random weights)."""
    return head in TRAINED_HEADS


def ensure_default_bundle(head: str = DEFAULT_HEAD, announce=None) -> Path:
    """Return the cached default bundle for `head`, building it first if needed."""
    target = default_bundle_dir(head)
    if (target / MANIFEST_NAME).is_file():
        try:
            load_manifest(target)
            return target
        except ManifestError:  # cached by an older version (e.g. before manifests were sealed)
            shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    what = "trained demo" if is_trained(head) else f"random-weight {DEFAULT_PRESET}"
    if announce is not None:
        announce(f"building the default {what} {head} bundle (first run only) into {target}")
    weights = ["--demo-checkpoint"] if is_trained(head) else ["--preset", DEFAULT_PRESET]
    cmd = [sys.executable, "-m", "vla_runtime.export.cli", "build", *weights, "--head", head, "--out", str(staging)]
    proc = subprocess.Popen(cmd, stdout=sys.stderr)  # the exporter's progress bar stays visible
    try:
        code = proc.wait()
    except BaseException:  # Ctrl-C or anything else: stop the build and leave no partial bundle
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if code != 0 or not (staging / MANIFEST_NAME).is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise DefaultBundleError(
            f"building the default bundle failed (exit {code}); install the exporter with "
            "`pip install -e \".[dev]\"` or pass --bundle DIR"
        )
    try:
        os.replace(staging, target)
    except OSError:  # another run finished first; theirs is as good as ours
        shutil.rmtree(staging, ignore_errors=True)
    return target
