"""ROBOTIS Dynamixel Protocol 2.0: codec, control table, bus and a pty simulator."""
