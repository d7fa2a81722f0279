"""Open a bundle directory and prove every file is the one the exporter wrote.

Nothing is handed to a backend before this passes: a flipped byte in a graph could move an
arm, so a mismatch is an error that names the file, never a warning. In order:

1. the manifest is read within bounds and its seal recomputed (`runtime/seal.py`), so an
   edited safety limit or gate verdict is named before any field is used;
2. every path it names is confined to the bundle (`runtime/paths.py`), and the folder holds
   regular files and directories only: no symlink, device, FIFO or socket anywhere;
3. every listed file's sha256 matches and nothing unlisted is present;
4. every ONNX graph's external-data locations are files the manifest lists for that graph.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vla_runtime.runtime.manifest import MANIFEST_NAME, Manifest, ManifestError, load_sealed
from vla_runtime.runtime.onnx_refs import OnnxRefError, external_locations
from vla_runtime.runtime.paths import path_problem

_CHUNK = 1 << 20  # bytes read per hashing step
SIGNATURES_NAME = "signatures.json"  # detached signatures over the seal (runtime/trust.py)
UNHASHED = (MANIFEST_NAME, SIGNATURES_NAME)  # top-level files the seal itself covers or signs


class BundleError(ValueError):
    """A bundle cannot be trusted; the message names the file and the fix."""


def sha256_file(path: str | Path) -> str:
    """sha256 of a regular file, opened without following a symlink."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise BundleError(f"{path}: not a regular file; bundles hold regular files only")
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def bundle_entries(bundle_dir: str | Path) -> list[str]:
    """Relative paths of every file under the bundle (top-level manifest and signatures excluded).

    Raises BundleError on anything that is not a regular file or directory: a symlink could
    lead out of the bundle and a FIFO or device could hang or feed a reader."""
    root = Path(bundle_dir)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                kind = "a symlink" if stat.S_ISLNK(mode) else "a special file (device, FIFO or socket)"
                raise BundleError(f"{rel}: is {kind}; bundles hold regular files only, rebuild or re-copy it")
            if rel not in UNHASHED:
                found.append(rel)
    return sorted(found)


def hash_tree(bundle_dir: str | Path) -> dict[str, str]:
    """sha256 of every file under the bundle except the manifest and signatures, keyed by relative path."""
    root = Path(bundle_dir)
    return {rel: sha256_file(root / rel) for rel in bundle_entries(root)}


def verify_files(bundle_dir: str | Path, manifest: Manifest) -> None:
    """Raise BundleError naming the first special, missing, altered, unlisted or escaping file."""
    root = Path(bundle_dir)
    present = set(bundle_entries(root))
    for rel, expected in manifest.files.items():
        problem = path_problem(rel)
        if problem:  # the schema refuses these already; never join an unchecked path
            raise BundleError(f"{rel!r}: {problem}")
        if rel not in present:
            raise BundleError(f"{rel}: listed in the manifest but missing from {root}; re-copy the bundle")
        if sha256_file(root / rel) != expected:
            raise BundleError(
                f"{rel}: sha256 does not match the manifest (file altered or corrupted); "
                "re-copy or rebuild the bundle"
            )
    extra = sorted(present - set(manifest.files))
    if extra:
        raise BundleError(f"{extra[0]}: file is not listed in the manifest; remove it or rebuild the bundle")
    verify_graph_refs(root, manifest)


def verify_graph_refs(root: Path, manifest: Manifest) -> None:
    """Every ONNX external-data location must be a file this graph lists in data_files."""
    for role, spec in manifest.graphs.items():
        if spec.format != "onnx":
            continue
        try:
            locations = external_locations(root / spec.file)
        except (OnnxRefError, OSError) as exc:
            raise BundleError(f"{spec.file}: not a readable ONNX graph ({exc}); rebuild the bundle") from None
        base = Path(spec.file).parent.as_posix()
        for loc in sorted(set(locations)):
            rel = loc if base == "." else f"{base}/{loc}"
            problem = path_problem(loc)
            if problem or rel not in spec.data_files:
                why = problem or f"not one of graphs.{role}.data_files"
                raise BundleError(
                    f"{spec.file}: external data location {loc[:80]!r} is refused ({why}); "
                    "graphs may only read weight files inside the bundle"
                )


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest
    seal: str = ""  # sha256 hex over the canonical manifest (what a signature signs)

    def path(self, rel: str) -> Path:
        return self.root / rel


def open_bundle(bundle_dir: str | Path, verify: bool = True) -> Bundle:
    """Check the seal and the schema, then (by default) confinement, every hash and graph refs."""
    root = Path(bundle_dir).expanduser().resolve()
    try:
        manifest, seal = load_sealed(root)
    except ManifestError as exc:
        raise BundleError(f"{root / MANIFEST_NAME}: {exc}") from None
    if verify:
        verify_files(root, manifest)
    return Bundle(root=root, manifest=manifest, seal=seal)


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
        open_bundle(staging)  # a writer never commits a bundle that is unsealed or inconsistent
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
