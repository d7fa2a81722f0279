"""Bundle-relative paths: the one rule for every path a manifest or an archive names.

A path that a bundle names is data from whoever wrote the bundle. It must stay inside the
bundle whatever the file system does with it, so it is checked as text before it is ever
joined to a directory: relative, POSIX separators, already normalised (no ``.``, ``..`` or
empty parts), printable, and short. The file-system half (no symlinks, regular files only)
lives where files are opened, in `runtime/bundle.py`.
"""

from __future__ import annotations

import re

MAX_PATH_CHARS = 255  # per bundle-relative path; a bundle has a handful of short names
MAX_PART_CHARS = 128  # per path component
_PART = re.compile(r"[A-Za-z0-9._+@=-]+")  # portable file-name characters (no spaces, no control)


def path_problem(rel: object) -> str | None:
    """Why `rel` is not a safe bundle-relative path, or None when it is."""
    if not isinstance(rel, str):
        return f"expected a path string, got {type(rel).__name__}"
    if not rel:
        return "empty path"
    if len(rel) > MAX_PATH_CHARS:
        return f"path longer than {MAX_PATH_CHARS} characters"
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return "absolute path; bundle paths are relative to the bundle folder"
    if "\\" in rel:
        return "backslash in path; use '/' separators"
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            return "path is not normalised (empty, '.' or '..' part); it must stay inside the bundle"
        if len(part) > MAX_PART_CHARS:
            return f"path component longer than {MAX_PART_CHARS} characters"
        if not _PART.fullmatch(part):
            return "path has characters outside A-Z a-z 0-9 . _ + @ = -"
    return None


def safe_label(text: object, limit: int = 40) -> str:
    """A file-name-safe, length-limited label from untrusted text (never used alone as a path)."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text) if isinstance(text, str) else "")
    label = label.strip(".-_")[:limit].strip(".-_")
    return label or "bundle"
