"""Feetech STS/SMS serial servos (SO-100/SO-101, LeKiwi): codec, memory table, bus and a pty simulator."""
