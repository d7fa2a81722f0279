"""Workstation side: trace a PyTorch/transformers VLA into verified ONNX graphs and a bundle."""
