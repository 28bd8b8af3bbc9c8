"""Output containers for renditions: MPEG-TS, MP4 (faststart) and fragmented MP4."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from pathlib import Path

import av

from farm.errors import ProfileInvalid

__all__ = [
    "EXTENSIONS",
    "FORMATS",
    "MIME_TYPES",
    "STREAMABLE",
    "GrowingBuffer",
    "OutputFile",
    "check_format",
]

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


#: Formats whose muxer only appends, so a reader may follow the bytes while they are written
#: (MP4 with faststart moves its index to the front when it finishes).
STREAMABLE = frozenset({"mpegts", "fmp4"})


class GrowingBuffer:
    """An append-only byte buffer that readers may follow while it is being written.

    The muxer writes into it; a reader gets the same bytes in order, blocking until more
    are written or the buffer is closed (then it reads the end). Writing never blocks, so a
    slow or failed reader cannot hold up the encoder.
    """

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._closed = False
        self._changed = threading.Condition()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(data)
        with self._changed:
            if self._closed:
                raise ValueError("write to a closed GrowingBuffer")
            self._chunks.append(chunk)
            self._changed.notify_all()
        return len(chunk)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def getvalue(self) -> bytes:
        with self._changed:
            return b"".join(self._chunks)

    def reader(self) -> BufferReader:
        return BufferReader(self)

    def _read(self, chunk: int, offset: int, n: int) -> tuple[bytes, int, int]:
        """Up to ``n`` bytes at (chunk, offset), waiting for them; and the next position."""
        with self._changed:
            while chunk >= len(self._chunks) and not self._closed:
                self._changed.wait()
            if chunk >= len(self._chunks):
                return b"", chunk, offset
            data = self._chunks[chunk]
            piece = data[offset : offset + n]
            offset += len(piece)
            if offset >= len(data):
                chunk, offset = chunk + 1, 0
            return piece, chunk, offset


class BufferReader:
    """A reader of a GrowingBuffer, as a file object for ``av.open``."""

    def __init__(self, buffer: GrowingBuffer) -> None:
        self._buffer = buffer
        self._chunk = 0
        self._offset = 0
        #: Bytes read so far.
        self.position = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 30
        piece, self._chunk, self._offset = self._buffer._read(self._chunk, self._offset, n)
        self.position += len(piece)
        return piece


def check_format(fmt: str) -> str:
    """The canonical output format name, or ProfileInvalid."""
    if fmt not in FORMATS:
        raise ProfileInvalid(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


class OutputFile:
    """One rendition's container, written in memory (or to a temporary file for faststart).

    With ``follow`` (formats in STREAMABLE only) it is written into a GrowingBuffer,
    ``followed``, whose readers read the container while it is being written.
    """

    def __init__(self, fmt: str, follow: bool = False) -> None:
        self.fmt = check_format(fmt)
        self._path: Path | None = None
        self._buffer: io.BytesIO | GrowingBuffer | None = None
        if follow and fmt not in STREAMABLE:
            raise ValueError(f"{fmt} output cannot be read while it is written")
        if fmt == "mp4":
            # faststart rewrites the file after the fact, which needs a real file.
            fd, name = tempfile.mkstemp(suffix=".mp4", prefix="farm-")
            os.close(fd)
            self._path = Path(name)
            self.container = av.open(name, "w", format="mp4", options=_OPTIONS[fmt])
        else:
            self._buffer = GrowingBuffer() if follow else io.BytesIO()
            self.container = av.open(self._buffer, "w", format=FORMATS[fmt], options=_OPTIONS[fmt])

    @property
    def followed(self) -> GrowingBuffer:
        """The buffer that readers may follow as the container is written (``follow`` only)."""
        if not isinstance(self._buffer, GrowingBuffer):
            raise ValueError("this output was not opened to be followed")
        return self._buffer

    def finish(self) -> bytes:
        """Close the container and return its bytes."""
        try:
            self.container.close()
        finally:
            if isinstance(self._buffer, GrowingBuffer):
                self._buffer.close()
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
        if isinstance(self._buffer, GrowingBuffer):
            self._buffer.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
