"""Recorded and collected episodes, one frame at a time, for calibration, training and replay.

Below both `calibration/` and `export/` (which train on the same demonstrations), so neither
imports the other; readers of optional formats import their packages (pyarrow, PyAV) lazily.
"""
