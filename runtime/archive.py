"""Unpack a bundle archive only after every member has been checked, and write it durably.

An archive arriving on a robot is untrusted until its bundle verifies, so it is read twice:
`scan` walks the member headers and refuses, before a byte is written, anything that is not
a plain file or folder with a confined name (`runtime/paths.py`), more members than
`max_members`, more bytes than `max_total_bytes`, or a declared size out of proportion to the
archive's size (a decompression bomb is refused at its first header, not after inflating it).
`extract` walks again with the same checks, creating files with O_EXCL | O_NOFOLLOW and
fsyncing each one, so what it leaves is exactly what was checked, on disk for real.
"""

from __future__ import annotations

import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vla_runtime.runtime.bundle import BundleError
from vla_runtime.runtime.manifest import MANIFEST_NAME
from vla_runtime.runtime.paths import path_problem

_CHUNK = 1 << 20  # bytes copied per step
_RATIO_FLOOR = 64 << 20  # archives that unpack to less than this are never called bombs


class ArchiveError(BundleError):
    """An archive was refused before extraction; the message names the member."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 10_000  # files + folders; a bundle has about ten
    max_total_bytes: int = 64 << 30  # uncompressed bytes, all members together (64 GiB)
    max_ratio: float = 200.0  # uncompressed / archive bytes; gzip of real weights is ~1.1

    def __post_init__(self):
        if self.max_members < 1 or self.max_total_bytes < 1 or not self.max_ratio >= 1:
            raise ValueError("archive limits must be positive (ratio >= 1)")


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symlink"
    if member.islnk():
        return "a hard link"
    if member.isfifo():
        return "a FIFO"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.issparse():
        return "a sparse file"
    return f"an unsupported member type {member.type!r}"


def _checked(archive: Path, limits: ArchiveLimits) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str]]:
    """Yield (tar, member, name) for every member, refusing the archive at the first bad one."""
    size = archive.stat().st_size
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError):
        raise ArchiveError(f"{archive}: not a tar archive (plain, .tar.gz, .tar.bz2 or .tar.xz)") from None
    count = total = 0
    seen: set[str] = set()
    plain = isinstance(tar.fileobj, io.BufferedReader)  # uncompressed: sizes can be checked against the file
    try:
        with tar:
            while (member := tar.next()) is not None:
                count += 1
                if count > limits.max_members:
                    raise ArchiveError(f"{archive}: more than {limits.max_members} members; not a bundle archive")
                name = member.name.rstrip("/") if member.isdir() else member.name
                while name.startswith("./"):  # `tar -C bundle .` writes ./manifest.json
                    name = name[2:]
                label = name[:80]
                if member.isdir() and name in ("", "."):
                    continue
                if not (member.isreg() or member.isdir()) or member.issparse():
                    raise ArchiveError(f"{archive}: member {label!r} is {_kind(member)}; bundles hold plain files")
                problem = path_problem(name)
                if problem:
                    raise ArchiveError(f"{archive}: member {label!r} refused: {problem}")
                if name in seen:
                    raise ArchiveError(f"{archive}: member {label!r} appears twice")
                seen.add(name)
                total += member.size
                if total > limits.max_total_bytes:
                    raise ArchiveError(
                        f"{archive}: unpacks to more than {limits.max_total_bytes} bytes (the --max-size cap)"
                    )
                if total > max(_RATIO_FLOOR, limits.max_ratio * size):
                    raise ArchiveError(
                        f"{archive}: declares {total} bytes from a {size}-byte archive (ratio above "
                        f"{limits.max_ratio:g}); refused as a decompression bomb"
                    )
                if plain and member.offset_data + member.size > size:
                    raise EOFError("member data runs past the end of the file")
                yield tar, member, name
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise ArchiveError(f"{archive}: truncated or corrupt archive ({type(exc).__name__}); copy it again") from None


def scan(archive: Path, limits: ArchiveLimits) -> str:
    """Check every member header; return the bundle folder inside the archive ('' = top level)."""
    manifests = [name for _, _, name in _checked(archive, limits) if name.split("/")[-1] == MANIFEST_NAME]
    tops = [m for m in manifests if m.count("/") <= 1]
    if len(manifests) != 1 or len(tops) != 1:
        raise ArchiveError(
            f"{archive}: expected one {MANIFEST_NAME} at the top or in one top folder, found {len(manifests)}"
        )
    return tops[0].rpartition("/")[0]


def extract(archive: Path, into: Path, limits: ArchiveLimits) -> None:
    """Write every member under `into` (checked again as it is read), each file fsynced."""
    for tar, member, name in _checked(archive, limits):
        dest = into / name
        try:
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            written = 0
            with source, os.fdopen(os.open(dest, flags, 0o644), "wb") as out:
                while block := source.read(_CHUNK):
                    written += out.write(block)
                out.flush()
                os.fsync(out.fileno())
            if written != member.size:
                raise ArchiveError(f"{archive}: member {name[:80]!r} is truncated; copy the archive again")
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise ArchiveError(f"{archive}: member {name[:80]!r} clashes with another ({type(exc).__name__})") from None
