"""Install a bundle on a robot so that a power cut at any moment leaves a runnable policy.

Layout under the install root::

    ROOT/bundles/<label>-<seal[:16]>/  one directory per installed bundle (never edited in place);
                                       label: the model name sanitised and cut to 40 characters
    ROOT/current  -> bundles/...       the bundle the robot runs
    ROOT/previous -> bundles/...       the one before it, for `--rollback`

Order of work, and what a failure at each step leaves behind:

1. check the source before writing anything: an archive's member headers (`runtime/archive.py`)
   or a directory bundle in place (seal, confinement, hashes);
2. copy or extract into ROOT/.staging-*, every file fsynced; verify the copy on the robot's
   own disk, then its signature against the trust store and its accuracy gate;
3. fsync every staged directory, rename it into bundles/, fsync bundles/;
4. swap `current` with one atomic rename of a new symlink, fsync ROOT.

Any refusal in steps 1-3 removes the staging folder (and ROOT or bundles/ if this call created
them), so the robot is exactly as it was. Until the rename in step 4 the robot keeps running
what it had; after it, the new bundle is complete on disk. With `check`, step 5 loads the new
bundle, runs the stored health sample (`runtime/health.py`) and rolls back when it fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vla_runtime.runtime import archive as tar_archive
from vla_runtime.runtime import trust
from vla_runtime.runtime.archive import ArchiveLimits
from vla_runtime.runtime.bundle import SIGNATURES_NAME, BundleError, open_bundle
from vla_runtime.runtime.manifest import MANIFEST_NAME
from vla_runtime.runtime.paths import safe_label

logger = logging.getLogger(__name__)

CURRENT = "current"
PREVIOUS = "previous"
KEEP = 3  # installed bundles kept on disk (current, previous and one more)
_CHUNK = 1 << 20  # bytes copied per step


class HealthCheckFailed(BundleError):
    """`--check` failed after the switch and the robot was rolled back; the message says to what."""


@dataclass(frozen=True)
class FlashOptions:
    trusted_keys: str | Path | None = None  # trust store; None: $VLA_RUNTIME_TRUSTED_KEYS or /etc default
    allow_failed_gate: bool = False  # install a bundle whose INT8 accuracy gate failed
    limits: ArchiveLimits = ArchiveLimits()  # member count, total size, compression ratio
    check: bool = False  # after the switch: load, infer once, compare, roll back on failure
    backend: str = "auto"  # backend the health check runs on


@dataclass(frozen=True)
class FlashResult:
    installed: Path  # directory the new bundle lives in
    previous: Path | None  # what `current` pointed to before, if anything
    signer: str | None = None  # id of the trusted key that signed it (None: not enforced)
    health: str | None = None  # the health check's one-line verdict, when it ran


def install_name(model: dict, seal: str) -> str:
    """Folder name from the seal plus a sanitised label; never raw manifest text."""
    return f"{safe_label(model.get('name') if isinstance(model, dict) else None)}-{seal[:16]}"


def flash(bundle: str | Path, root: str | Path, options: FlashOptions | None = None) -> FlashResult:
    """Check, stage, verify and atomically activate a bundle directory or tar archive."""
    opts = options or FlashOptions()
    source = Path(bundle).expanduser()
    root = Path(root).expanduser().resolve()
    if source.is_symlink() and source.is_file():
        source = source.resolve()
    if source.is_file():
        inner = tar_archive.scan(source, opts.limits)  # nothing written yet
    elif source.is_dir():
        open_bundle(source)  # in place: a symlink or stray file is refused before any copy
    else:
        raise BundleError(f"{source}: no such bundle directory or archive")
    created = _make_dirs(root, root / "bundles")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        if source.is_file():
            tar_archive.extract(source, staging, opts.limits)
            staged = staging / inner if inner else staging
        else:
            staged = staging / "bundle"
            _copy_bundle(source, staged)
        loaded = open_bundle(staged)  # manifest seal + every hash, on the robot's own disk
        signer = trust.enforce(loaded, opts.trusted_keys)
        _check_gate(loaded, opts.allow_failed_gate)
        final = root / "bundles" / install_name(loaded.manifest.model, loaded.seal)
        _fsync_tree(staged)
        if final.exists():  # same seal installed before: keep it if it still verifies
            try:
                open_bundle(final)
            except BundleError:
                shutil.rmtree(final)
        if not final.exists():
            os.replace(staged, final)
        _fsync_dir(root / "bundles")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for path in reversed(created):
            _rmdir_if_empty(path)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    os.utime(final)  # install time orders pruning, not the source's timestamps

    current = root / CURRENT
    previous = current.resolve() if current.is_symlink() else None
    before = (root / PREVIOUS).resolve() if (root / PREVIOUS).is_symlink() else None
    if previous is not None and previous != final:
        _swap_link(root, PREVIOUS, previous)
    _swap_link(root, CURRENT, final)
    _fsync_dir(root)
    previous = previous if previous != final else None
    health = _health_check(root, final, previous, before, opts) if opts.check else None
    _prune(root)
    logger.info("flashed %s (previous: %s)", final, previous)
    return FlashResult(installed=final, previous=previous, signer=signer, health=health)


def _health_check(root: Path, final: Path, previous: Path | None, before: Path | None, opts: FlashOptions) -> str:
    """Run the stored sample; on failure put `current` and `previous` back as they were."""
    from vla_runtime.runtime import health

    try:
        return health.check(final, backend=opts.backend, trusted_keys=opts.trusted_keys)
    except Exception as exc:  # any failure to load or run is a failed check, never a half state
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if previous is not None:
            _swap_link(root, CURRENT, previous)
            if before is not None and before.exists():
                _swap_link(root, PREVIOUS, before)
            else:
                (root / PREVIOUS).unlink(missing_ok=True)
            back = f"rolled back: current -> {previous.name}"
        else:
            (root / CURRENT).unlink(missing_ok=True)
            back = "no previous bundle, so `current` was removed"
        _fsync_dir(root)
        raise HealthCheckFailed(f"{reason}; {back}") from None


def _check_gate(bundle, allow: bool) -> None:
    gate = bundle.manifest.gate
    if bundle.manifest.gate_failed and not allow:
        summary = gate.get("summary") or gate.get("reason") or "see manifest.gate"
        raise BundleError(
            f"{bundle.root.name}: the INT8 accuracy gate failed ({str(summary)[:120]}); flash the fp32 "
            "bundle, re-quantize, or pass --allow-failed-gate"
        )


def rollback(root: str | Path, trusted_keys: str | Path | None = None) -> Path:
    """Make `previous` current again; the bundle that was current becomes `previous`."""
    root = Path(root).expanduser().resolve()
    prev_link = root / PREVIOUS
    if not prev_link.is_symlink():
        raise BundleError(f"{root}: no previous bundle to roll back to")
    target = prev_link.resolve()
    trust.enforce(open_bundle(target), trusted_keys)  # never roll back onto something untrusted
    current = (root / CURRENT).resolve() if (root / CURRENT).is_symlink() else None
    _swap_link(root, CURRENT, target)
    if current is not None:
        _swap_link(root, PREVIOUS, current)
    _fsync_dir(root)
    return target


def pack(bundle: str | Path, archive: str | Path) -> Path:
    """Write a verified bundle as one .tar for transport (flash accepts it directly)."""
    import tarfile

    loaded = open_bundle(bundle)
    archive = Path(archive)
    names = [MANIFEST_NAME, *sorted(loaded.manifest.files)]
    if (loaded.root / SIGNATURES_NAME).is_file():
        names.append(SIGNATURES_NAME)
    with tarfile.open(archive, "w") as tar:
        for rel in names:
            tar.add(loaded.root / rel, arcname=f"{safe_label(loaded.root.name)}/{rel}", recursive=False)
    return archive


def _copy_bundle(source: Path, dest: Path) -> None:
    """Copy the manifest, signatures and listed files only, each fsynced (never a symlink's target)."""
    loaded = open_bundle(source, verify=False)
    names = [MANIFEST_NAME, *loaded.manifest.files]
    if (source / SIGNATURES_NAME).is_file():
        names.append(SIGNATURES_NAME)
    for rel in names:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(source / rel, flags), "rb") as src, open(target, "xb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())


def _make_dirs(*paths: Path) -> list[Path]:
    """Create the folders that are missing; return those this call created (for clean-up)."""
    created = []
    for path in paths:
        missing = [p for p in (*reversed(path.parents), path) if not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        created += [p for p in missing if p not in created]
    return created


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _swap_link(root: Path, name: str, target: Path) -> None:
    """Point ROOT/name at target with an atomic rename (readers never see a missing link)."""
    tmp = root / f".{name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target.relative_to(root))
    os.replace(tmp, root / name)


def _prune(root: Path) -> None:
    keep = {(root / n).resolve() for n in (CURRENT, PREVIOUS) if (root / n).is_symlink()}
    installed = sorted((root / "bundles").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in installed[KEEP:]:
        if path.resolve() not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(top: Path) -> None:
    """fsync every directory under top, deepest first (file data was fsynced as it was written)."""
    for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
