"""TensorRT engine converter: ONNX graphs of a model folder → verified engines recorded in its manifest.

Runs on the target device (engines are tied to the GPU and the TensorRT version). Modules:
``env`` (what the machine has), ``cache`` (cache keys, engine file names, timing cache),
``builder`` (parse + build one engine per graph), ``verify`` (TensorRT vs ONNX Runtime).
May import ``edge_inspect``; ``edge_inspect`` never imports this package.
"""
