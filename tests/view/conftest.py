"""A real pipeline (synthetic camera, tiny model, ONNX Runtime) with the live view attached."""

from __future__ import annotations

import contextlib

import pytest

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.camera.uri import open_source
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.runner import Pipeline
from edge_inspect.settings import Settings
from edge_inspect.view.live import ViewObserver
from edge_inspect.view.server import ViewServer
from tests.pipeline.fakes import RecordingPublisher


@contextlib.contextmanager
def running_view(model_dir, token: str | None = None, fps: float = 10.0, camera="synthetic://?fps=25&size=96&defect_rate=0.4"):
    """(pipeline, view observer, server) running until the block ends."""
    settings = Settings(camera={"uri": camera}, pipeline={"warmup_runs": 0, "mode": "free-run"},
                        view={"enabled": True, "bind": "127.0.0.1:0", "token": token, "fps": fps, "trend_parts": 50})
    view = ViewObserver(settings.view)
    server = ViewServer(settings.view, view.live)
    pipeline = Pipeline(open_source(settings.camera), OnnxRuntimeBackend(model_dir, load_manifest(model_dir)),
                        RecordingPublisher(), settings, observers=[view])
    view.attach_status(pipeline.status)
    view.start()
    server.start()
    pipeline.start()
    try:
        yield pipeline, view, server
    finally:
        pipeline.stop()
        view.close()
        server.close()


@pytest.fixture
def view_line(tiny_model_dir):
    with running_view(tiny_model_dir, token="s3cret") as parts:
        yield parts
