"""The backend interface (Polygraphy-runner style) and the input check every backend applies."""

from __future__ import annotations

import abc

import numpy as np

from ..errors import InputShapeError
from ..manifest import Manifest, TensorSpec


def check_inputs(specs: list[TensorSpec], tensors: dict[str, np.ndarray], where: str) -> None:
    """Raise InputShapeError unless every spec'd input is present with a matching shape and dtype.

    A string axis in the spec (``"batch"``) matches any length; an int axis must match exactly.
    """
    for spec in specs:
        arr = tensors.get(spec.name)
        if arr is None:
            raise InputShapeError(f"{where}: missing input '{spec.name}'")
        if str(arr.dtype) != spec.dtype:
            raise InputShapeError(f"{where}: input '{spec.name}' has dtype {arr.dtype}, "
                                  f"expected {spec.dtype}")
        if arr.ndim != len(spec.shape) or any(
            isinstance(d, int) and d != a for d, a in zip(spec.shape, arr.shape, strict=False)
        ):
            want = tuple(spec.shape)
            raise InputShapeError(f"{where}: input '{spec.name}' has shape {arr.shape}, expected {want}")


class Backend(abc.ABC):
    """Runs a whole exported model.

    ``infer({"image": (B,3,H,W) float32}) -> {"score": (B,), "anomaly_map": (B,1,H,W), ...}``.

    Context-managed: ``__enter__`` loads graphs/engines, ``__exit__`` frees them.
    Implementations validate the model input with ``check_inputs`` and raise InputShapeError.
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
