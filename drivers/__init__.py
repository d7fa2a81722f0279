"""Transports, protocol codecs, arm/gripper drivers and device simulators. Never imports torch."""
