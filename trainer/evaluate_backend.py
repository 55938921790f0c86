"""Torch backend for ``edge-inspect eval --backend torch``: the trained model straight from model.pt.

It reads the run folder that the model folder's manifest came from (provenance cannot hold weights),
so ``model_dir`` here may be either a run folder (with model.pt) or a model folder whose
``training_run`` sits beside it; it implements the runtime's Backend interface.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edge_inspect.backends.base import Backend
from edge_inspect.errors import ModelError
from edge_inspect.manifest import load_manifest

from .train import FINAL, load_trained


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model_dir, run_dir=None, manifest=None):
        model_dir = Path(model_dir)
        manifest = manifest or load_manifest(model_dir, verify_files=False)
        super().__init__(model_dir, manifest)
        self.run_dir = Path(run_dir) if run_dir else self._find_run(model_dir)
        self.model = None

    @staticmethod
    def _find_run(model_dir: Path) -> Path:
        for cand in (model_dir, model_dir / "run"):
            if (cand / FINAL).is_file():
                return cand
        raise ModelError(f"torch backend needs the training run's {FINAL}: put it in {model_dir} or pass run_dir")

    def load(self) -> None:
        self.model, _, _ = load_trained(self.run_dir)

    @torch.no_grad()
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.model(torch.from_numpy(np.ascontiguousarray(inputs["image"])))
        return {k: v.numpy() for k, v in out.items()}
