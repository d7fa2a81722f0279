"""Install a bundle on a robot so that a power cut at any moment leaves a runnable policy.

Layout under the install root::

    ROOT/bundles/<name>-<short sha>/   one directory per installed bundle (never edited in place)
    ROOT/current  -> bundles/...       the bundle the robot runs
    ROOT/previous -> bundles/...       the one before it, for `--rollback`

A bundle is copied into a staging directory, verified there (manifest + every sha256), then
moved into `bundles/` and the `current` link is swapped with one atomic rename. Until that
rename, the robot keeps running what it had.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vla_runtime.runtime.bundle import BundleError, open_bundle

logger = logging.getLogger(__name__)

CURRENT = "current"
PREVIOUS = "previous"
KEEP = 3  # installed bundles kept on disk (current, previous and one more)


@dataclass(frozen=True)
class FlashResult:
    installed: Path  # directory the new bundle lives in
    previous: Path | None  # what `current` pointed to before, if anything


def _bundle_id(root: Path) -> str:
    """Stable short id from the manifest bytes (which carry every file's hash)."""
    digest = hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()[:12]
    return digest


def _extract_tar(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    manifests = list(into.rglob("manifest.json"))
    if len(manifests) != 1:
        raise BundleError(f"{archive}: expected exactly one manifest.json in the archive, found {len(manifests)}")
    return manifests[0].parent


def _swap_link(root: Path, name: str, target: Path) -> None:
    """Point ROOT/name at target with an atomic rename (readers never see a missing link)."""
    tmp = root / f".{name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target.relative_to(root))
    os.replace(tmp, root / name)


def flash(bundle: str | Path, root: str | Path) -> FlashResult:
    """Stage, verify and atomically activate a bundle directory or .tar archive."""
    source = Path(bundle).expanduser()
    root = Path(root).expanduser().resolve()
    if not source.exists():
        raise BundleError(f"{source}: no such bundle directory or archive")
    (root / "bundles").mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        if source.is_file():
            staged = _extract_tar(source, staging)
        else:
            staged = staging / "bundle"
            shutil.copytree(source, staged)
        loaded = open_bundle(staged)  # manifest schema + every hash, on the robot's own disk
        name = f"{loaded.manifest.model.get('name', 'bundle')}-{_bundle_id(staged)}"
        final = root / "bundles" / name
        if not final.exists():
            os.replace(staged, final)
        os.utime(final)  # install time orders pruning, not the source's timestamps
        _fsync_dir(root / "bundles")
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    current = root / CURRENT
    previous = current.resolve() if current.is_symlink() else None
    if previous is not None and previous != final:
        _swap_link(root, PREVIOUS, previous)
    _swap_link(root, CURRENT, final)
    _fsync_dir(root)
    _prune(root)
    logger.info("flashed %s (previous: %s)", final, previous)
    return FlashResult(installed=final, previous=previous if previous != final else None)


def rollback(root: str | Path) -> Path:
    """Make `previous` current again; the bundle that was current becomes `previous`."""
    root = Path(root).expanduser().resolve()
    prev_link = root / PREVIOUS
    if not prev_link.is_symlink():
        raise BundleError(f"{root}: no previous bundle to roll back to")
    target = prev_link.resolve()
    open_bundle(target)  # never roll back onto something that no longer verifies
    current = (root / CURRENT).resolve() if (root / CURRENT).is_symlink() else None
    _swap_link(root, CURRENT, target)
    if current is not None:
        _swap_link(root, PREVIOUS, current)
    _fsync_dir(root)
    return target


def pack(bundle: str | Path, archive: str | Path) -> Path:
    """Write a verified bundle as one .tar for transport (flash accepts it directly)."""
    loaded = open_bundle(bundle)
    archive = Path(archive)
    with tarfile.open(archive, "w") as tar:
        tar.add(loaded.root, arcname=loaded.root.name)
    return archive


def _prune(root: Path) -> None:
    keep = {(root / n).resolve() for n in (CURRENT, PREVIOUS) if (root / n).is_symlink()}
    installed = sorted((root / "bundles").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in installed[KEEP:]:
        if path.resolve() not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
