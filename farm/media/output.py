"""Output containers for renditions: MPEG-TS, MP4 (faststart) and fragmented MP4."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import av

from farm.errors import ProfileInvalid

__all__ = ["EXTENSIONS", "FORMATS", "MIME_TYPES", "OutputFile", "check_format"]

#: Output format name -> libavformat muxer.
FORMATS = {"mpegts": "mpegts", "mp4": "mp4", "fmp4": "mp4"}
MIME_TYPES = {"mpegts": "video/mp2t", "mp4": "video/mp4", "fmp4": "video/mp4"}
EXTENSIONS = {"mpegts": "ts", "mp4": "mp4", "fmp4": "mp4"}
_OPTIONS = {
    # Keep input timestamps exactly: B-frame reordering gives the first frames of a stream
    # that starts at 0 a negative DTS, which MPEG-TS carries (33-bit wrap) and players read.
    "mpegts": {"avoid_negative_ts": "disabled"},
    "mp4": {"movflags": "faststart"},
    "fmp4": {"movflags": "frag_keyframe+empty_moov+default_base_moof"},
}


def check_format(fmt: str) -> str:
    """The canonical output format name, or ProfileInvalid."""
    if fmt not in FORMATS:
        raise ProfileInvalid(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


class OutputFile:
    """One rendition's container, written in memory (or to a temporary file for faststart)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = check_format(fmt)
        self._path: Path | None = None
        self._buffer: io.BytesIO | None = None
        if fmt == "mp4":
            # faststart rewrites the file after the fact, which needs a real file.
            fd, name = tempfile.mkstemp(suffix=".mp4", prefix="farm-")
            os.close(fd)
            self._path = Path(name)
            self.container = av.open(name, "w", format="mp4", options=_OPTIONS[fmt])
        else:
            self._buffer = io.BytesIO()
            self.container = av.open(self._buffer, "w", format=FORMATS[fmt], options=_OPTIONS[fmt])

    def finish(self) -> bytes:
        """Close the container and return its bytes."""
        self.container.close()
        if self._path is not None:
            try:
                return self._path.read_bytes()
            finally:
                self._path.unlink(missing_ok=True)
        assert self._buffer is not None
        return self._buffer.getvalue()

    def abort(self) -> None:
        """Close without keeping anything."""
        with contextlib.suppress(av.FFmpegError):
            self.container.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
