"""Open a bundle directory and prove every file is the one the exporter wrote.

Nothing is handed to a backend before this passes: a flipped byte in a graph could move an
arm, so a mismatch is an error that names the file, never a warning.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vla_runtime.runtime.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest

_CHUNK = 1 << 20  # bytes read per hashing step


class BundleError(ValueError):
    """A bundle cannot be trusted; the message names the file and the fix."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(bundle_dir: str | Path) -> dict[str, str]:
    """sha256 of every file under the bundle except the manifest, keyed by relative path."""
    root = Path(bundle_dir)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def verify_files(bundle_dir: str | Path, manifest: Manifest) -> None:
    """Raise BundleError naming the first missing, altered or unlisted file."""
    root = Path(bundle_dir)
    for rel, expected in manifest.files.items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{rel}: listed in the manifest but missing from {root}; re-copy the bundle")
        if sha256_file(path) != expected:
            raise BundleError(
                f"{rel}: sha256 does not match the manifest (file altered or corrupted); "
                "re-copy or rebuild the bundle"
            )
    listed = set(manifest.files)
    extra = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and p.relative_to(root).as_posix() not in listed
    ]
    if extra:
        raise BundleError(f"{extra[0]}: file is not listed in the manifest; remove it or rebuild the bundle")


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest

    def path(self, rel: str) -> Path:
        return self.root / rel


def open_bundle(bundle_dir: str | Path, verify: bool = True) -> Bundle:
    """Load and validate the manifest, then (by default) check every file's hash."""
    root = Path(bundle_dir).expanduser().resolve()
    try:
        manifest = load_manifest(root)
    except ManifestError as exc:
        raise BundleError(f"{root / MANIFEST_NAME}: {exc}") from None
    if verify:
        verify_files(root, manifest)
    return Bundle(root=root, manifest=manifest)


def check_destination(out: Path, force: bool, error: type[Exception] = BundleError) -> None:
    """Refuse to write a bundle over a file, or over a non-empty folder unless forced."""
    if out.exists() and not out.is_dir():
        raise error(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise error(f"{out}: directory is not empty; pass --force to replace it or choose another --out")


@contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """A hidden sibling folder that replaces `out` whole on success and vanishes on any error,
    so a robot or a later build never sees a half-written bundle."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
