"""Torch backend for ``edge-inspect eval --backend torch``: the trained model straight from model.pt.

It finds the training run through the manifest's ``provenance.run_dir`` (or a model.pt inside the
model folder) and implements the runtime's Backend interface, so eval compares torch and ONNX alike.
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
        self.run_dir = Path(run_dir) if run_dir else self._find_run(model_dir, manifest.provenance.run_dir)
        self.model = None

    @staticmethod
    def _find_run(model_dir: Path, recorded: str | None) -> Path:
        for cand in ([Path(recorded)] if recorded else []) + [model_dir]:
            if (cand / FINAL).is_file():
                return cand
        raise ModelError(
            f"torch backend needs the training run's {FINAL} (recorded run: {recorded or 'none'}); "
            "evaluate on the machine that trained the model, or use --backend onnxruntime"
        )

    def load(self) -> None:
        from .export import HEAD_SETTINGS, with_head_settings

        model, cfg, ckpt = load_trained(self.run_dir)
        # The folder may have been exported with other head settings than it was trained with.
        recorded = (self.manifest.provenance.training_config or {}).get("model", {})
        changed = {k: recorded[k] for k in HEAD_SETTINGS if k in recorded and recorded[k] != getattr(cfg.model, k)}
        self.model, _ = with_head_settings(model, cfg, changed, ckpt)

    @torch.no_grad()
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.model(torch.from_numpy(np.ascontiguousarray(inputs[self.manifest.input.name])))
        return {k: v.numpy() for k, v in out.items()}
