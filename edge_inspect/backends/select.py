"""Pick a backend by name; ``auto`` prefers TensorRT when usable, else ONNX Runtime, and logs why.

Whether TensorRT is usable (and why not) is decided by ``trt_probe``; this module only picks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError
from ..manifest import Manifest, load_manifest
from .base import Backend
from .trt_probe import usable as tensorrt_usable

log = logging.getLogger(__name__)


def open_backend(model_dir: str | Path, name: str = "auto", manifest: Manifest | None = None,
                 threads: int | None = None, diagnostics: bool = False) -> Backend:
    """Return an unloaded Backend for ``model_dir`` (use it as a context manager).

    ``diagnostics``: also return the manifest's ``extra_outputs`` (evaluation, reports). The line leaves it off:
    ONNX Runtime then runs only what the score and the anomaly map need. TensorRT engines return the extras
    either way (they are built per graph, with every output).
    """
    manifest = manifest or load_manifest(model_dir)
    if name == "auto":
        ok, reason = tensorrt_usable(model_dir, manifest)
        if ok:
            name = "tensorrt"
            log.info("backend auto: using TensorRT (%s)", reason)
        else:
            name = "onnxruntime"
            log.info("backend auto: using ONNX Runtime because %s", reason)
    if name == "onnxruntime":
        from .onnxrt import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_dir, manifest, threads=threads, diagnostics=diagnostics)
    if name == "tensorrt":
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(model_dir, manifest)
    raise ConfigError(f"unknown backend '{name}'; choose auto, onnxruntime or tensorrt")
