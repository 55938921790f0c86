"""edge-inspect runtime: camera ingest, RSTPM inference through ONNX Runtime or TensorRT, verdicts over ZeroMQ.

This package never imports torch (a test proves it). Heavy optional libraries
(onnxruntime, tensorrt, pycuda, Aravis) are imported inside the code that needs them.
"""

__version__ = "0.1.0"
