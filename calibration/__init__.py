"""INT8 calibration data, quantization and the accuracy gate."""
