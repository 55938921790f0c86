"""ONNX Runtime backend: runs the manifest's graphs in order on CPU (or the CUDA provider where present)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import BackendError, ModelError, require
from ..manifest import Manifest
from .base import Backend, check_inputs

log = logging.getLogger(__name__)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, model_dir, manifest: Manifest, providers: list[str] | None = None,
                 threads: int | None = None):
        super().__init__(model_dir, manifest)
        self.providers = providers
        self.threads = threads
        self._sessions: list = []

    def load(self) -> None:
        ort = require("onnxruntime", "cpu", "the ONNX Runtime backend")
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
        # The graphs run one after another, each in its own session with its own thread pool: threads left
        # spinning after one graph's run fight the next graph's for the cores. Measured on 2 cores
        # (docs/performance.md): 65 ms per frame with spinning, 34 ms without.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
        providers = self.providers or [p for p in wanted if p in available]
        self._sessions = []
        for g in self.manifest.graphs:
            path = Path(self.model_dir) / g.file
            try:
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            except Exception as exc:  # onnxruntime raises its own exception types per failure
                raise ModelError(f"{path}: ONNX Runtime cannot load graph '{g.name}': "
                                 f"{str(exc).splitlines()[0]}") from exc
            names = {i.name for i in sess.get_inputs()}
            if names != {t.name for t in g.inputs}:
                raise ModelError(f"{path}: graph inputs {sorted(names)} do not match the manifest")
            self._sessions.append((g, sess, [o.name for o in sess.get_outputs()]))
        log.info("onnxruntime backend: %d graphs, providers %s", len(self._sessions), providers)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._sessions:
            raise BackendError("backend not loaded; use it as a context manager or call load()")
        check_inputs([self.manifest.graphs[0].inputs[0]], inputs, "model input")
        tensors = dict(inputs)
        for g, sess, out_names in self._sessions:
            feed = {t.name: tensors[t.name] for t in g.inputs}
            try:
                outs = sess.run(out_names, feed)
            except Exception as exc:
                raise BackendError(f"graph '{g.name}' failed: {str(exc).splitlines()[0]}") from exc
            tensors.update(zip(out_names, outs, strict=True))
        wanted = [self.manifest.score_output, self.manifest.map_output, *self.manifest.extra_outputs]
        return {k: tensors[k] for k in wanted if k in tensors}

    def close(self) -> None:
        self._sessions = []
