"""TensorRT backend: runs the engines recorded in the manifest, chained, through one ``TensorRTRunner``.

The backend knows the model folder: it refuses stale or foreign engines before touching the device
(``trt_probe.check_runnable``), hands the recorded engine files to the runner in manifest order, and
checks the model input against the manifest. Running engines (contexts, buffers, stream,
``execute_async_v3``) is the runner's job (``tensorrt_runner``); "is TensorRT usable here, and why
not" is the probe's (``trt_probe``). tensorrt and pycuda are imported lazily; importing this module
needs neither.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import BackendError, InputShapeError
from ..manifest import Manifest
from .base import Backend, check_inputs
from .tensorrt_runner import EngineFile, TensorRTRunner
from .trt_probe import build_hint, check_runnable, engine_for_graph

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    """Runs the recorded engines in manifest order on one CUDA stream (calls are serialised by the runner)."""

    name = "tensorrt"

    def __init__(self, model_dir, manifest: Manifest, device_index: int = 0):
        super().__init__(model_dir, manifest)
        self.device_index = device_index
        self._runner: TensorRTRunner | None = None

    def load(self) -> None:
        if self._runner is not None:
            return
        check_runnable(self.model_dir, self.manifest, "the TensorRT backend")
        m = self.manifest
        engines = []
        for g in m.graphs:
            rec = engine_for_graph(m, g.name)  # present: check_runnable refuses a graph without one
            engines.append(EngineFile(g.name, Path(self.model_dir) / rec.file, rec.dla_core))
        runner = TensorRTRunner(
            engines,
            outputs=(m.score_output, m.map_output, *m.extra_outputs),
            required_outputs=(m.score_output, m.map_output),
            device_index=self.device_index,
            hint=build_hint(self.model_dir),
        )
        runner.activate()
        self._runner = runner
        log.info("tensorrt backend: %d engines, max batch %d, outputs %s", len(engines), runner.max_batch,
                 runner.output_names)

    @property
    def max_batch(self) -> int:
        """Largest batch the engines accept (0 before ``load``)."""
        return self._runner.max_batch if self._runner is not None else 0

    def _require_runner(self) -> TensorRTRunner:
        if self._runner is None:
            raise BackendError("backend not loaded; use it as a context manager or call load()")
        return self._runner

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"image": (B,3,H,W) float32}`` → ``{"score": (B,), "anomaly_map": (B,1,H,W), ...}`` copies."""
        runner = self._require_runner()
        spec = self.manifest.graphs[0].inputs[0]
        check_inputs([spec], inputs, "model input")
        batch = int(inputs[spec.name].shape[0])
        if not 1 <= batch <= runner.max_batch:
            raise InputShapeError(f"batch {batch} is outside the engines' range 1..{runner.max_batch}; "
                                  f"rebuild with 'edge-inspect build --model {self.model_dir} "
                                  f"--max-batch {batch}'")
        try:
            outputs = runner.infer(inputs)
        except InputShapeError as exc:
            raise InputShapeError(f"model input: {exc}") from exc
        return {name: out.astype(np.float32, copy=False) for name, out in outputs.items()}

    def time_engines(self, runs: int = 200, warmup: int = 20) -> dict[str, list[float]]:
        """Per-engine GPU time in ms (``TensorRTRunner.time_engines``). For benchmarks, not for the line."""
        return self._require_runner().time_engines(runs=runs, warmup=warmup)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None
