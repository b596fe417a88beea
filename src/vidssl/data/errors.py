"""Errors of the data layer; all are `VidsslError`, so the CLI prints them as one line."""

from __future__ import annotations

from vidssl.errors import VidsslError


class VideoError(VidsslError):
    """A video file that is missing, empty, not a video, too short, or that no backend opens."""


class StoreError(VidsslError):
    """A frame store that is missing, unfinished, or modified/truncated after ingest."""


class DecodeLimitError(VidsslError):
    """More clips failed to decode during training than `data.max_decode_errors` allows."""
