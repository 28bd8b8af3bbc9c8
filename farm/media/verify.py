"""Rendition verification: every rendition is reopened and checked before a job is done.

A gateway pays by encoded pixels and a broken rendition costs an operator its reputation,
so each rendition of each segment is checked on the worker:

- it demuxes, and its first and last GOPs decode cleanly (no errors, no corrupt frames);
- its pictures have the profile's size, and its timestamps step at the profile's frame rate;
- it lasts as long as the input, within a frame or two;
- it starts on a keyframe;
- its encoded pixel count, recomputed from the frames it holds, equals what is reported.
"""

from __future__ import annotations

import io
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.codec.hwaccel import HWAccel

from farm.media.output import FORMATS, BufferReader, GrowingBuffer
from farm.media.result import Failure, Rendition, TranscodeResult

log = logging.getLogger(__name__)

__all__ = ["FollowingVerifier", "VerifyReport", "verify_rendition", "verify_result"]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of verifying a segment's renditions."""

    failures: tuple[Failure, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(slots=True)
class _Observed:
    """What reading a rendition found: its stream's size and timing, and how it decoded."""

    width: int
    height: int
    time_base: Fraction
    #: (pts, keyframe) of every non-empty video packet, in decode order.
    packets: list[tuple[int | None, bool]]
    #: Why the first or last GOP did not decode cleanly; None when they did.
    decode_error: str | None


class _EndsDecoder:
    """Decodes a rendition's first GOP as its packets arrive and its last GOP at the end.

    Packets after the first GOP are held only until the next keyframe replaces them, so a
    rendition can be checked while it is being written, without knowing where it ends.
    """

    def __init__(self, ctx: av.VideoCodecContext) -> None:
        # Every slice is parsed and reconstructed; only deblocking, which cannot fail, is
        # skipped: a fifth less work for the same verdict. One thread: each rendition has a
        # verifier of its own already, and on frame threads the error of a truncated
        # rendition's cut last frame is sometimes lost in the final drain, so the verdict
        # would depend on timing.
        ctx.options = {"skip_loop_filter": "all", "threads": "1"}
        self._ctx = ctx
        self._count = 0
        self._keys = 0
        self._in_first = True
        self._got = 0
        self._last: list[av.Packet[Any]] = []
        self._last_start = 0
        self.error: str | None = None

    def feed(self, packet: av.Packet[Any]) -> None:
        index = self._count
        self._count += 1
        if packet.is_keyframe:
            self._keys += 1
        if self.error is not None:
            return
        if self._in_first and packet.is_keyframe and self._keys == 2:
            # The second keyframe ends the first GOP.
            self._end_span(0, index)
            self._in_first = False
        if self._in_first:
            self._decode(packet, "first GOP")
            return
        if packet.is_keyframe:
            self._last, self._last_start = [], index
        self._last.append(packet)

    def finish(self) -> str | None:
        """Decode what is left; the first failure's message, or None."""
        if self._keys == 0:
            return "no keyframe anywhere"
        if self.error is None:
            if self._in_first:
                self._end_span(0, self._count)
            elif self._last:
                self._got = 0
                gop = _gop_name(self._last_start, self._count)
                for packet in self._last:
                    self._decode(packet, gop)
                self._end_span(self._last_start, self._count)
        return self.error

    def _decode(self, packet: av.Packet[Any] | None, gop: str) -> None:
        # The decoder conceals damage it can get past and marks those frames corrupt; what it
        # cannot get past raises. (Its log is off, as PyAV leaves it, so neither needs it.)
        if self.error is not None:
            return
        try:
            for frame in self._ctx.decode(packet):
                self._got += 1
                if frame.is_corrupt:
                    self.error = f"frame {self._got} of the {gop} is corrupt"
                    return
        except av.FFmpegError as e:
            self.error = f"the {gop} does not decode: {e}"

    def _end_span(self, start: int, end: int) -> None:
        gop = _gop_name(start, end)
        self._decode(None, gop)
        if self.error is None and self._got != end - start:
            self.error = f"{self._got} of the {end - start} frames of the {gop} decoded"
        self._ctx.flush_buffers()
        self._got = 0


def _gop_name(start: int, end: int | None) -> str:
    if start == 0:
        return "first GOP" + (f" (frames 0-{end - 1})" if end else "")
    return f"last GOP (frames {start}-{end - 1 if end else '...'})"


def _observe(source: Any, fmt: str, gpu: int | None = None) -> _Observed:
    """Demux a rendition from ``source`` (bytes or a file object) and decode its ends, on
    GPU ``gpu`` with NVDEC when given.

    Raises av.FFmpegError, IndexError or ValueError when it does not demux.
    """
    file = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    hwaccel = (
        HWAccel("cuda", device=str(gpu), allow_software_fallback=True) if gpu is not None else None
    )
    with av.open(file, "r", format=FORMATS[fmt], hwaccel=hwaccel) as container:
        stream = container.streams.video[0]
        if stream.time_base is None:
            raise ValueError("the video stream has no time base")
        decoder = _EndsDecoder(stream.codec_context)
        packets: list[tuple[int | None, bool]] = []
        for p in container.demux(stream):
            if not p.size:
                continue
            packets.append((p.pts, p.is_keyframe))
            decoder.feed(p)
        ctx = stream.codec_context
        return _Observed(
            ctx.width, ctx.height, stream.time_base, packets, decoder.finish() if packets else None
        )


def _judge(
    seen: _Observed, r: Rendition, input_duration: float, tolerance_frames: float
) -> list[Failure]:
    """Every check on what was observed of a rendition; an empty list means it passed."""
    name = r.profile.name
    fail: list[Failure] = []

    def bad(reason: str, message: str) -> None:
        fail.append(Failure(name, reason, message))

    packets = seen.packets
    if not packets:
        bad("empty", "no video packets")
        return fail
    tb = seen.time_base
    if not packets[0][1]:
        bad("no_keyframe", "the first packet is not a keyframe")
    # Frames and pixels from what the rendition holds, not from what was reported.
    frames = len(packets)
    if (seen.width, seen.height) != (r.width, r.height):
        bad("wrong_size", f"{seen.width}x{seen.height} instead of {r.width}x{r.height}")
    if frames * r.width * r.height != r.pixels or frames != r.frames:
        bad(
            "pixel_count",
            f"holds {frames} frames ({frames * r.width * r.height} pixels) "
            f"but reports {r.frames} ({r.pixels})",
        )
    pts = sorted(p for p, _ in packets if p is not None)
    if not pts:
        bad("duration", "no packet has a timestamp")
        return fail
    rate = r.profile.frame_rate
    frame_len = (
        (Fraction(1) / rate)
        if rate
        else ((pts[-1] - pts[0]) * tb / (len(pts) - 1) if len(pts) > 1 else Fraction(1, 30))
    )
    if rate and len(pts) > 1:
        steps = {(b - a) * tb for a, b in itertools.pairwise(pts)}
        off = [s for s in steps if abs(s - frame_len) > Fraction(1, 1000)]
        if off:
            bad(
                "frame_rate",
                f"timestamps step by {float(min(off)):.4f}-{float(max(off)):.4f} s, "
                f"not 1/{float(rate):g}",
            )
    duration = float((pts[-1] - pts[0]) * tb + frame_len)
    slack = tolerance_frames * float(frame_len)
    if abs(duration - input_duration) > slack:
        bad("duration", f"lasts {duration:.3f} s; the input lasts {input_duration:.3f} s")
    if seen.decode_error:
        bad("decode", seen.decode_error)
    return fail


def _observe_on(source: Callable[[], Any], fmt: str, gpu: int | None, name: str) -> _Observed:
    """_observe on the GPU when one is given, and on the CPU when the GPU cannot do it.

    ``source`` makes a new reader from the start each time it is called.
    """
    if gpu is not None:
        try:
            return _observe(source(), fmt, gpu)
        except av.FFmpegError as e:
            log.warning(
                "NVDEC verification failed on GPU %s for %s, verifying on CPU: %s", gpu, name, e
            )
    return _observe(source(), fmt)


def verify_rendition(
    r: Rendition, input_duration: float, tolerance_frames: float = 2.0, gpu: int | None = None
) -> list[Failure]:
    """Every check on one finished rendition; an empty list means it passed.

    With ``gpu``, the rendition is decoded with NVDEC on that GPU (on the CPU if that fails).
    """
    try:
        seen = _observe_on(lambda: r.data, r.fmt, gpu, r.profile.name)
    except (av.FFmpegError, IndexError, ValueError) as e:
        return [Failure(r.profile.name, "unreadable", f"the rendition does not demux: {e}")]
    return _judge(seen, r, input_duration, tolerance_frames)


class FollowingVerifier(threading.Thread):
    """Verifies a rendition while it is being written, following the buffer it is written to.

    The first GOP is decoded as the encoder produces it, on this thread, so the work overlaps
    the encode instead of following it; once the writer closes, only the last GOP (when it
    is not also the first) and the checks are left. Reads exactly the bytes the rendition
    returns, so the verdict is the same as verifying the finished rendition.
    """

    def __init__(self, buffer: GrowingBuffer, fmt: str, name: str, gpu: int | None = None) -> None:
        super().__init__(name=f"verify-{name}", daemon=True)
        self._buffer = buffer
        self._reader: BufferReader | None = None
        self._fmt = fmt
        self._gpu = gpu
        self._label = name
        self._seen: _Observed | None = None
        self._error: str | None = None
        #: CPU seconds spent reading, decoding and checking (waiting for the encoder is free).
        self.busy = 0.0

    def run(self) -> None:
        started = time.thread_time()
        try:
            self._seen = _observe_on(self._new_reader, self._fmt, self._gpu, self._label)
        except (av.FFmpegError, IndexError, ValueError) as e:
            self._error = f"the rendition does not demux: {e}"
        except Exception as e:  # never lost: reported as the rendition's failure
            self._error = f"verification failed: {type(e).__name__}: {e}"
        finally:
            self.busy = time.thread_time() - started

    def _new_reader(self) -> BufferReader:
        self._reader = self._buffer.reader()
        return self._reader

    def verdict(
        self,
        r: Rendition,
        input_duration: float,
        timeout: float = 60.0,
        tolerance_frames: float = 2.0,
    ) -> list[Failure]:
        """The checks on the finished rendition, once its bytes have all been read."""
        self.join(timeout)
        name = r.profile.name
        if self.is_alive():
            return [Failure(name, "timeout", f"verification did not finish in {timeout:g} s")]
        if self._seen is None:
            return [Failure(name, "unreadable", self._error or "the rendition was not read")]
        read = self._reader.position if self._reader is not None else 0
        if read != len(r.data):
            return [
                Failure(name, "unreadable", f"read {read} of the rendition's {len(r.data)} bytes")
            ]
        started = time.perf_counter()
        try:
            return _judge(self._seen, r, input_duration, tolerance_frames)
        finally:
            self.busy += time.perf_counter() - started


def verify_result(result: TranscodeResult, tolerance_frames: float = 2.0) -> VerifyReport:
    """Verify every rendition of a transcode against its input."""
    started = time.perf_counter()
    failures: list[Failure] = []
    for r in result.renditions:
        failures += verify_rendition(r, result.input_duration, tolerance_frames)
    return VerifyReport(tuple(failures), time.perf_counter() - started)
