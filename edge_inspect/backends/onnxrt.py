"""ONNX Runtime backend: the model's graphs as one fused session (the line graph) or as a chain of sessions.

Default, the *line graph*: the manifest's graphs joined in memory into one graph and cut to the outputs
asked for (``backends.line_graph``): score and anomaly map on the line, plus the manifest's
``extra_outputs`` with ``diagnostics=True`` (evaluation, reports). Without the ``onnx`` package, or for
graphs that cannot be joined, it runs the graphs one after another in manifest order (the *chain*).

Session options, chosen for small CPUs (2-4 cores; measured in docs/performance.md):

* one session, so one intra-op thread pool: five pools on two cores fought each other (65-85 ms per
  frame against 29-32 ms fused);
* ``intra_op_num_threads``: ONNX Runtime's default (one per physical core) unless ``threads`` is given;
* thread spinning off (``session.intra_op.allow_spinning=0``): idle workers sleep instead of spinning, so
  the pipeline's capture, preprocess and decide threads get the cores between inferences;
* the CPU memory arena and memory patterns stay on (fixed shapes: the arena is sized on the first run and
  reused); ``ORT_ENABLE_ALL`` graph optimisations (NCHWc layout for the convolutions).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import BackendError, ModelError, require
from ..manifest import Manifest
from .base import Backend, check_inputs
from .line_graph import CannotJoin, line_graph_bytes, line_outputs

log = logging.getLogger(__name__)

# Graph precisions this backend runs: float graphs, and int8 as explicit QuantizeLinear/DequantizeLinear pairs.
RUNNABLE_PRECISIONS = ("fp32", "int8-qdq")


def check_precision(manifest: Manifest, runnable: tuple[str, ...], backend: str) -> None:
    """Raise ModelError (one line) for a graph whose recorded precision ``backend`` cannot run."""
    for g in manifest.graphs:
        if g.precision not in runnable:
            raise ModelError(f"graph '{g.name}' has precision '{g.precision}', which the {backend} backend cannot "
                             f"run (it runs {', '.join(runnable)}); export or quantize the model again")


def session_options(ort, threads: int | None = None):
    """The backend's SessionOptions (see the module doc for why each is set)."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = True
    return opts


class OnnxRuntimeBackend(Backend):
    """``infer({"image": (B,3,H,W) float32}) -> {"score": (B,), "anomaly_map": (B,1,H,W)[, extras]}``.

    ``fuse``: run the line graph (one session); False runs the chain of per-graph sessions.
    ``diagnostics``: also return the manifest's ``extra_outputs``. ``mode`` after ``load``: "fused" or "chain".
    """

    name = "onnxruntime"

    def __init__(self, model_dir, manifest: Manifest, providers: list[str] | None = None,
                 threads: int | None = None, diagnostics: bool = False, fuse: bool = True):
        super().__init__(model_dir, manifest)
        self.providers = providers
        self.threads = threads
        self.diagnostics = diagnostics
        self.fuse = fuse
        self.mode = ""
        self._sessions: list = []
        self._outputs = line_outputs(manifest, diagnostics)

    def load(self) -> None:
        ort = require("onnxruntime", "cpu", "the ONNX Runtime backend")
        check_precision(self.manifest, RUNNABLE_PRECISIONS, "ONNX Runtime")
        opts = session_options(ort, self.threads)
        available = ort.get_available_providers()
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
        providers = self.providers or [p for p in wanted if p in available]
        self._sessions = []
        fused = None
        if self.fuse:
            try:
                fused = line_graph_bytes(self.model_dir, self.manifest, self._outputs)
            except CannotJoin as exc:
                log.warning("onnxruntime backend: running the graphs as a chain: %s", exc)
        if fused is not None:
            sess = self._session(ort, fused, opts, providers, "line graph", Path(self.model_dir))
            self._check_inputs(sess, [self.manifest.graphs[0].inputs[0].name], "line graph")
            self._sessions = [(None, sess, [o.name for o in sess.get_outputs()])]
            self.mode = "fused"
        else:
            for g in self.manifest.graphs:
                path = Path(self.model_dir) / g.file
                sess = self._session(ort, str(path), opts, providers, f"graph '{g.name}'", path)
                self._check_inputs(sess, [t.name for t in g.inputs], str(path))
                self._sessions.append((g, sess, [o.name for o in sess.get_outputs()]))
            self.mode = "chain"
        log.info("onnxruntime backend: %s (%d session%s), outputs %s, providers %s", self.mode,
                 len(self._sessions), "" if len(self._sessions) == 1 else "s", self._outputs, providers)

    @staticmethod
    def _session(ort, model, opts, providers, what: str, where: Path):
        try:
            return ort.InferenceSession(model, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types per failure
            raise ModelError(f"{where}: ONNX Runtime cannot load {what}: {str(exc).splitlines()[0]}") from exc

    @staticmethod
    def _check_inputs(sess, expected: list[str], where: str) -> None:
        names = {i.name for i in sess.get_inputs()}
        if names != set(expected):
            raise ModelError(f"{where}: graph inputs {sorted(names)} do not match the manifest {sorted(expected)}")

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._sessions:
            raise BackendError("backend not loaded; use it as a context manager or call load()")
        check_inputs([self.manifest.graphs[0].inputs[0]], inputs, "model input")
        tensors = dict(inputs)
        for g, sess, out_names in self._sessions:
            feed = {t.name: tensors[t.name] for t in g.inputs} if g is not None else inputs
            try:
                outs = sess.run(out_names, feed)
            except Exception as exc:
                raise BackendError(f"{'graph ' + repr(g.name) if g else 'line graph'} failed: "
                                   f"{str(exc).splitlines()[0]}") from exc
            tensors.update(zip(out_names, outs, strict=True))
        return {k: tensors[k] for k in self._outputs if k in tensors}

    def close(self) -> None:
        self._sessions = []
