"""Packaging: ONNX export, operator coverage, ORT/TensorRT engines, equivalence and latency."""
