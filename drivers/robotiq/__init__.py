"""Robotiq 2F-85 / 2F-140 / Hand-E grippers over Modbus RTU: codec, register map, driver, simulator."""
