"""What ``run`` shows and keeps besides the verdicts: the live web view (``--view``), the defect archive
(``--archive``) and a local window (``--show``), as pipeline observers (pipeline.observers), for one camera
(a Pipeline) or a station of several (a Station offers every camera's parts to the same observers).

Built before the model loads, so a bad setting, a taken view port or a missing GUI is one line and an exit
code before anything is judged; started once the pipeline exists; closed after it has drained (the archive
writes what is still queued).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class LineOutputs:
    def __init__(self, settings, show: bool = False):
        self.observers: list = []
        self._server = None
        try:
            if show:
                from ..view.window import ShowWindow

                self.observers.append(ShowWindow(fps=settings.view.fps, cameras=max(1, len(settings.cameras))))
            if settings.view.enabled:
                from ..view.live import ViewObserver
                from ..view.server import ViewServer

                view = ViewObserver(settings.view)
                self._server = ViewServer(settings.view, view.live)  # binds now: a taken port fails here
                self.observers.append(view)
            if settings.archive.enabled:
                from ..archive.store import ArchiveWriter

                self.observers.append(ArchiveWriter(settings.archive))
        except BaseException:
            self.close()
            raise

    def start(self, status) -> None:
        """Start the observer threads and the web server; ``status``: the pipeline's or the station's status()."""
        for observer in self.observers:
            if hasattr(observer, "attach_status"):
                observer.attach_status(status)
            observer.start()
        if self._server is not None:
            self._server.start()
            print(f"live view: {self._server.url}{'?token=...' if self._server.token else ''}", flush=True)

    def close(self) -> None:
        for observer in self.observers:
            try:
                observer.close()
            except Exception:
                log.warning("closing the %s failed", observer.name, exc_info=True)
        if self._server is not None:
            self._server.close()
