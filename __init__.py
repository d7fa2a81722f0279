"""vla-runtime: export, flash, run and profile VLA robot policies on edge computers."""

__version__ = "0.1.0"
