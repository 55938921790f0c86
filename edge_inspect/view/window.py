"""``run --show``: a local window (OpenCV highgui) with the newest part, heat map and boxes, for a bench with
a monitor. Needs an OpenCV built with a GUI (GTK, Qt, ...); the opencv-python-headless wheel has none, and
then ``run --show`` stops before anything opens with one line saying so (exit code 3) and pointing at
``--view``, the web page, which needs no GUI.
"""

from __future__ import annotations

import logging
import re

from ..errors import DependencyError
from ..pipeline.observers import PartResult
from .slots import PerCameraLatest

log = logging.getLogger(__name__)

WINDOW = "edge-inspect"


def gui_backend() -> str | None:
    """The GUI OpenCV was built with (e.g. "GTK3", "QT5"), or None (headless build, or no OpenCV)."""
    try:
        import cv2
    except ImportError:
        return None
    info = cv2.getBuildInformation()
    section = re.search(r"^\s*GUI:\s*(.*?)\s*$", info, re.MULTILINE)
    if section is None or section.group(1).upper() in ("", "NONE", "NO"):
        return None
    return section.group(1)


def require_gui() -> str:
    backend = gui_backend()
    if backend is None:
        raise DependencyError("run --show needs OpenCV with GUI support, and this OpenCV has none "
                              "(opencv-python-headless); use --view 127.0.0.1:8080 for the live view in a browser, "
                              "or install an OpenCV with GUI (JetPack's, or opencv-python)")
    return backend


class ShowWindow(PerCameraLatest):
    """The newest part in a highgui window, at most ``fps`` times a second, drawn in the window's thread.
    A station of several cameras (``cameras`` > 1) gets one window per camera, titled with its id."""

    name = "show"

    def __init__(self, fps: float = 10.0, width: int = 1280, cameras: int = 1):
        require_gui()
        super().__init__()
        self.fps, self.width, self.cameras = fps, width, cameras

    def handle(self, result: PartResult) -> None:
        import cv2

        from ..overlay import caption, render_overlay, to_rgb

        v = result.verdict
        record = {"label": result.label, "score": v.score, "threshold": v.threshold, "regions": v.regions}
        segments = caption(record) if v.score is not None else [(result.label.upper(), True), (v.error or "", False)]
        rgb = render_overlay(to_rgb(result.frame.image), result.heatmap(), v.regions, segments, result.label)
        h, w = rgb.shape[:2]
        if w > self.width:
            rgb = cv2.resize(rgb, (self.width, round(h * self.width / w)), interpolation=cv2.INTER_AREA)
        title = WINDOW if self.cameras <= 1 else f"{WINDOW}: {result.camera_id}"
        cv2.imshow(title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)  # lets the window draw; the pace (fps per camera) is PerCameraLatest's

    def finish(self) -> None:
        import cv2

        cv2.destroyAllWindows()
