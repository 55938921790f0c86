"""The backend interface (Polygraphy-runner style)."""

from __future__ import annotations

import abc

import numpy as np

from ..manifest import Manifest


class Backend(abc.ABC):
    """Runs a whole exported model: ``infer({"image": (B,3,H,W) float32}) -> {"score": (B,), "anomaly_map": (B,1,H,W), ...}``.

    Context-managed: ``__enter__`` loads graphs/engines, ``__exit__`` frees them.
    Implementations validate input names, shapes and dtypes and raise InputShapeError.
    """

    name: str = "base"

    def __init__(self, model_dir, manifest: Manifest):
        self.model_dir = model_dir
        self.manifest = manifest

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Backend:
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
