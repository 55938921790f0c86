"""Typed errors of the runtime. Library code raises these; only the CLI turns them into exit codes."""

from __future__ import annotations


class EdgeInspectError(Exception):
    """Base of every error edge-inspect raises on purpose. ``str(err)`` is a one-line user message."""

    exit_code = 1


class ConfigError(EdgeInspectError):
    """A setting, config file or command-line value is invalid."""

    exit_code = 2


class DataError(EdgeInspectError):
    """A data set folder, image or mask is missing, unreadable or inconsistent."""


class ImageError(DataError):
    """One image cannot be read or has an unsupported shape, channel count or bit depth."""


class ModelError(EdgeInspectError):
    """A model folder, manifest, ONNX graph or engine is missing, corrupt or incompatible."""


class ManifestError(ModelError):
    """manifest.json is missing, malformed, or of a schema this runtime cannot read."""


class BackendError(ModelError):
    """An inference backend is unavailable or failed to run."""


class InputShapeError(BackendError):
    """An input array does not match the shape/dtype the graph expects."""


class EngineError(ModelError):
    """A TensorRT engine is missing, stale, foreign (other GPU / TensorRT version) or failed to build."""


class DependencyError(EdgeInspectError):
    """An optional dependency (extra) needed for the requested feature is not installed."""

    exit_code = 3


class CameraError(EdgeInspectError):
    """A camera cannot be opened or stopped delivering frames."""


class ProtocolError(EdgeInspectError):
    """A ZeroMQ message or control request is malformed."""


def require(module: str, extra: str, feature: str):
    """Import ``module`` or raise DependencyError telling which extra to install for ``feature``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via tests with a fake name
        raise DependencyError(
            f"{feature} needs the Python package '{module}' ({exc}); install it with: "
            f"pip install 'edge-inspect[{extra}]'"
        ) from exc
