"""Error types every layer raises and every command line prints the same way."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; printed as one line, never as a traceback."""
