"""Frame sources named by URI (jetson-inference convention): csi://, v4l2://, rtsp://, file://, dir://, gige://, synthetic://."""

from .base import Frame, FrameSource

__all__ = ["Frame", "FrameSource"]
