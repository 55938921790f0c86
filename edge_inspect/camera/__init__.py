"""Frame sources named by URI (jetson-inference convention): csi://, v4l2://, rtsp://, file://, dir://, gige://, synthetic://.

``open_source(settings.camera)`` gives the unopened, reconnecting source the pipeline runs;
``parse_uri`` validates a URI. Optional libraries (Aravis via PyGObject) load only when a source needs them.
"""

from .base import EndOfStream, Frame, FrameSource
from .uri import ParsedURI, open_source, parse_uri

__all__ = ["EndOfStream", "Frame", "FrameSource", "ParsedURI", "open_source", "parse_uri"]
