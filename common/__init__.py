"""The bottom layer: what `drivers/`, `runtime/`, `export/` and `calibration/` all share.

Nothing here imports any other part of the project, so every layer can import it without
creating a circle (export/calibration -> runtime -> drivers -> common).
"""
