"""Inference backends: one interface, ONNX Runtime and TensorRT implementations, same manifest."""
