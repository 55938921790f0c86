"""PartResults for archive and view tests, without a pipeline: a grey frame, a verdict, a raw map."""

from __future__ import annotations

import time

import numpy as np

from edge_inspect.camera.base import Frame
from edge_inspect.decision import Thresholds
from edge_inspect.manifest import load_manifest
from edge_inspect.pipeline.observers import PartResult
from edge_inspect.verdict import Region, Verdict


def part(model_dir, seq: int, label: str = "ng", score: float | None = 3.0, t_wall: float | None = None,
         size: int = 64, camera_id: str = "cam1", noise: bool = False) -> PartResult:
    """A judged part: (size, size, 3) uint8 BGR frame (random noise when ``noise``: incompressible PNGs),
    a (16, 16) map with a hot centre, one region for NG."""
    manifest = load_manifest(model_dir)
    t = time.time() if t_wall is None else t_wall
    rng = np.random.default_rng(seq)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if noise else np.full((size, size, 3), 120, np.uint8)
    amap = np.zeros((16, 16), np.float32)
    amap[6:10, 6:10] = 5.0
    regions = [Region(x=size // 4, y=size // 4, w=size // 2, h=size // 2, area=size * size // 4, peak=5.0)]
    verdict = Verdict(camera_id=camera_id, seq=seq, label=label, score=None if label == "unknown" else score,
                      normalised_score=None if label == "unknown" else 0.7, threshold=0.5, t_capture_wall=t,
                      t_decision_wall=t, regions=regions if label == "ng" else [], model_id=manifest.model_id,
                      model_version=manifest.model_version, error="x" if label == "unknown" else None)
    frame = Frame(camera_id, seq, time.monotonic(), t, image)
    return PartResult(camera_id, frame, verdict, label, None if label == "unknown" else amap,
                      Thresholds(0.5, 0.5), manifest.calibration, lambda: {"counters": {}})
