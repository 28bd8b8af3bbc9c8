"""Encoders kept open between the segments of one stream.

go-livepeer keeps a stream's transcode session open across its segments: opening an encoder
costs milliseconds on libx264 and tens of milliseconds on NVENC, whose sessions are also
limited per GPU. The engine does the same, for the encoders only, where it can do so without
ever giving a different answer than a fresh encoder would:

- **Zero delay.** An FFmpeg encoder that is flushed cannot encode again, so a kept encoder is
  never flushed: it must give each frame's packet back as soon as it has the frame. libx264
  and libx265 run with ``tune=zerolatency`` (no B-frames, no lookahead, no frame threads),
  NVENC with ``zerolatency``, ``delay=0`` and no B-frames. A profile that asks for B-frames
  (Livepeer's ``h264main``/``h264high`` set 3), AV1 and VP9 encoders, and MP4 outputs (whose
  header needs the encoder's global extradata) open a fresh encoder per segment as before.
- **Every segment stands alone.** Each segment's first frame is forced to an IDR frame, which
  carries its SPS/PPS in band (MPEG-TS), so a player can start at any segment; the engine
  checks the first packet is such a keyframe and that no packet is held back at the end.
- **Anything odd drops it.** A key that differs (another input size, pixel format, frame
  rate or time base; another profile or GPU), timestamps that do not move forward, an
  exception, a failed check: the encoder is dropped and a fresh one opened. A stream's
  encoders are lent to one segment at a time; a second segment of the same stream running
  at once opens its own.

The decoder is not kept: each segment from a gateway starts with its own headers.

Each worker process has one :class:`EncoderCache` (in its farm.context.WorkerContext), small
(a few streams) and with an idle expiry, since an idle NVENC session still counts against
the GPU's limit. In a prefork worker each pool child has its own cache, so a stream's
encoders are reused when its next segment reaches the same child.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from farm.media.profiles import VideoProfile

__all__ = [
    "EncoderCache",
    "EncoderKey",
    "StaleEncoder",
    "StreamEncoder",
    "StreamSession",
    "zero_delay_options",
]

log = logging.getLogger(__name__)

#: Encoder -> the options that make it give every frame's packet back at once and turn a
#: forced I frame into an IDR frame; encoders not listed cannot keep state.
_ZERO_DELAY: dict[str, dict[str, str]] = {
    "libx264": {"tune": "zerolatency", "forced-idr": "1"},
    "libx265": {"tune": "zerolatency", "forced-idr": "1"},
    "h264_nvenc": {"zerolatency": "1", "delay": "0", "bf": "0", "forced-idr": "1"},
    "hevc_nvenc": {"zerolatency": "1", "delay": "0", "bf": "0", "forced-idr": "1"},
}
#: First NAL unit types of a packet that starts a decodable H.264 or HEVC stream: an SPS
#: (7) or access unit delimiter (9) in H.264, a VPS (32) or delimiter (35) in HEVC.
_H264_STARTS = frozenset({7, 9})
_HEVC_STARTS = frozenset({32, 35})


class StaleEncoder(Exception):
    """Raised when a kept encoder's output failed a check; the segment is redone fresh."""

    def __init__(self, codec: str, message: str) -> None:
        super().__init__(f"{codec}: {message}")
        self.codec = codec


def zero_delay_options(codec: str, profile: VideoProfile, fmt: str) -> dict[str, str] | None:
    """The options that let ``codec`` keep its state between segments of ``profile`` in
    ``fmt``, or None when it cannot (the module's docstring says which)."""
    if fmt != "mpegts" or profile.intra_only:
        return None
    if profile.b_frames:
        return None
    options = _ZERO_DELAY.get(codec)
    return dict(options) if options is not None else None


@dataclass(frozen=True, slots=True)
class EncoderKey:
    """What a kept encoder was opened for: a segment with another key opens a fresh one."""

    stream: str
    profile: VideoProfile
    codec: str
    width: int
    height: int
    in_width: int
    in_height: int
    in_pix_fmt: str
    #: The input's frame rate (None when unknown) and the encoder's time base.
    in_rate: Fraction | None
    time_base: Fraction
    preset: str
    gpu: int | None


class StreamEncoder:
    """One open encoder of one stream's rendition, lent to one segment at a time."""

    def __init__(self, key: EncoderKey, ctx: av.VideoCodecContext) -> None:
        self.key = key
        self.ctx = ctx
        #: The last presentation timestamp encoded (encoder time base), None before any.
        self.last_pts: int | None = None
        #: Segments this encoder has finished.
        self.segments = 0
        self._sent = 0
        self._received = 0
        self._first: bool | None = None

    def takes(self, pts: int) -> bool:
        """Whether a segment whose first frame is at ``pts`` may go on with this encoder:
        timestamps must move forward from the last segment's."""
        return self.last_pts is None or pts > self.last_pts

    def encode(self, frame: av.VideoFrame) -> list[av.Packet[Any]]:
        """Encode one frame (its pts in the encoder's time base); its packets."""
        packets = self.ctx.encode(frame)
        self._sent += 1
        self._received += len(packets)
        if packets and self._first is None:
            self._first = packets[0].is_keyframe and _starts_stream(packets[0], self.key.codec)
        if frame.pts is not None:
            self.last_pts = frame.pts
        return packets

    def end_segment(self) -> None:
        """Check the segment that just ended: it started with a self-contained keyframe and
        nothing is held back. Raises StaleEncoder otherwise (the output is not to be used)."""
        sent, received, first = self._sent, self._received, self._first
        self._sent = self._received = 0
        self._first = None
        if sent and not first:
            raise StaleEncoder(self.key.codec, "a segment did not start with an IDR frame")
        if received != sent:
            raise StaleEncoder(self.key.codec, f"{sent - received} frame(s) held back")
        self.segments += 1


def _starts_stream(packet: av.Packet[Any], codec: str) -> bool:
    """Whether an Annex B packet opens with parameter sets (or a delimiter before them), as
    a segment's first packet must for a player starting there."""
    data = bytes(packet)[:64]
    at = data.find(b"\x00\x00\x01")
    if at < 0 or at + 3 >= len(data):
        return False
    header = data[at + 3]
    if "264" in codec:
        return header & 0x1F in _H264_STARTS
    return (header >> 1) & 0x3F in _HEVC_STARTS


@dataclass
class _Stream:
    encoders: dict[EncoderKey, StreamEncoder] = field(default_factory=dict)
    used_at: float = field(default_factory=time.monotonic)


class EncoderCache:
    """One process's kept encoders: at most ``streams`` streams, least recently used first
    out, each dropped ``idle_s`` after its last segment, all dropped by :meth:`close`.

    ``opened`` and ``dropped`` count the encoders it opened and let go (the engine's result
    says which renditions reused one).
    """

    def __init__(self, streams: int = 4, idle_s: float = 30.0) -> None:
        self.streams = streams
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, _Stream] = OrderedDict()
        self._sweeper: threading.Thread | None = None
        self._closed = threading.Event()
        self._refused: set[str] = set()
        self.opened = self.dropped = 0

    def refuse(self, codec: str) -> None:
        """Keep no more encoders of ``codec`` in this process: one failed the checks, which
        test the encoder's own behaviour (an IDR start, no frame held back), not its input;
        every segment would otherwise be encoded twice."""
        with self._lock:
            if codec not in self._refused:
                log.warning("%s cannot keep state between segments here; not kept any more", codec)
            self._refused.add(codec)

    def refuses(self, codec: str) -> bool:
        """Whether :meth:`refuse` ruled ``codec`` out."""
        return codec in self._refused

    def take(self, key: EncoderKey) -> StreamEncoder | None:
        """The kept encoder for ``key``, lent out (no other segment gets it meanwhile);
        None when there is none. A stream's encoders for another key are dropped: its
        input or ladder changed."""
        with self._lock:
            entry = self._kept.get(key.stream)
            if entry is None:
                return None
            encoder = entry.encoders.pop(key, None)
            stale = [k for k in entry.encoders if k.profile.name == key.profile.name and k != key]
            for k in stale:
                del entry.encoders[k]
            self.dropped += len(stale)
            return encoder

    def open(self, key: EncoderKey, opener: Callable[[], av.VideoCodecContext]) -> StreamEncoder:
        """A new encoder for ``key``, opened by ``opener`` (its errors pass through)."""
        encoder = StreamEncoder(key, opener())
        with self._lock:
            self.opened += 1
        return encoder

    def give_back(self, encoder: StreamEncoder) -> None:
        """Keep ``encoder`` for its stream's next segment (it ended its segment cleanly)."""
        key = encoder.key
        with self._lock:
            if self._closed.is_set():
                return
            entry = self._kept.pop(key.stream, None) or _Stream()
            if entry.encoders.get(key, encoder) is not encoder:
                self.dropped += 1  # two segments of the stream ran at once: one set stays
            entry.encoders[key] = encoder
            entry.used_at = time.monotonic()
            self._kept[key.stream] = entry
            while len(self._kept) > self.streams:
                _, evicted = self._kept.popitem(last=False)
                self.dropped += len(evicted.encoders)
            self._start_sweeper()

    def drop(self, encoder: StreamEncoder | None, why: str) -> None:
        """Forget ``encoder`` (lent out, not to come back); its context is freed with it."""
        if encoder is None:
            return
        key = encoder.key
        log.info("dropping the %s encoder of stream %s: %s", key.codec, key.stream, why)
        with self._lock:
            self.dropped += 1

    def kept(self, stream: str) -> int:
        """How many encoders are kept for ``stream`` now."""
        with self._lock:
            entry = self._kept.get(stream)
            return len(entry.encoders) if entry is not None else 0

    def expire(self, now: float | None = None) -> int:
        """Drop the streams idle for ``idle_s``; how many encoders went."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [s for s, e in self._kept.items() if now - e.used_at >= self.idle_s]
            gone = sum(len(self._kept.pop(s).encoders) for s in idle)
            self.dropped += gone
        return gone

    def close(self) -> None:
        """Drop every kept encoder (worker shutdown); the cache keeps nothing afterwards."""
        self._closed.set()
        with self._lock:
            self.dropped += sum(len(e.encoders) for e in self._kept.values())
            self._kept.clear()

    def _start_sweeper(self) -> None:
        # Started on first use, so a prefork pool child runs its own (threads do not fork).
        if self._sweeper is None or not self._sweeper.is_alive():
            self._sweeper = threading.Thread(
                target=self._sweep, name="farm-encoder-expiry", daemon=True
            )
            self._sweeper.start()

    def _sweep(self) -> None:
        while not self._closed.wait(max(0.5, self.idle_s / 4)):
            self.expire()


@dataclass(frozen=True, slots=True)
class StreamSession:
    """A segment's claim on its worker's kept encoders: the stream it belongs to."""

    stream: str
    cache: EncoderCache
