"""Thin helpers that make real media for the tests and read back what a player would see.

Clips come from :mod:`farm.media.synth`; everything is encoded and decoded with PyAV, never
mocked. Defaults are small (320x240, 1 s) so the suite stays fast.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.stream import Disposition

from farm.media.codecs import codec_name
from farm.media.profiles import VideoProfile
from farm.media.synth import make_segment, make_stream

__all__ = [
    "Probe",
    "audio_only_ts",
    "clip",
    "mp4_clip",
    "probe",
    "profile",
    "stream",
    "ts_packets",
    "unsupported_video",
]


def clip(
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    seconds: float = 1.0,
    **kwargs: Any,
) -> bytes:
    """A small synthetic MPEG-TS segment (H.264 + AAC unless ``audio=False``)."""
    return make_segment(width, height, fps, seconds, **kwargs)


def stream(directory: Path, segments: int = 2, seconds: float = 1.0, **kwargs: Any) -> Path:
    """A small HLS stream of consecutive synthetic segments; returns the playlist path."""
    kwargs.setdefault("width", 320)
    kwargs.setdefault("height", 240)
    return make_stream(directory, segments, seconds, **kwargs)


def _remux(data: bytes, fmt: str, options: dict[str, str]) -> bytes:
    # A file, not a buffer: the MP4 faststart pass rewrites the file after writing it.
    fd, name = tempfile.mkstemp(suffix=f".{fmt}", prefix="farm-test-")
    os.close(fd)
    try:
        with (
            av.open(io.BytesIO(data), "r") as src,
            av.open(name, "w", format=fmt, options=options) as dst,
        ):
            streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is None:
                    continue
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
        return Path(name).read_bytes()
    finally:
        Path(name).unlink(missing_ok=True)


def mp4_clip(**kwargs: Any) -> bytes:
    """A faststart MP4 segment: encoded to Matroska by synth, then remuxed into MP4.

    (``make_segment(fmt="mp4")`` cannot be used directly: see test_synth_makes_mp4.)
    """
    return _remux(clip(fmt="matroska", **kwargs), "mp4", {"movflags": "faststart"})


def turned_clip(
    degrees: int, width: int = 320, height: int = 180, fmt: str = "mp4", codec: str = "libx264"
) -> bytes:
    """1 s of black with a white top-left quarter, coded ``width`` x ``height`` in MP4,
    Matroska or WebM with a display matrix that turns it ``degrees`` counterclockwise to be
    shown, as a phone records portrait video (PyAV's and FFmpeg's sign)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        video = cast(av.VideoStream, out.add_stream(codec, rate=30))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if codec.startswith("libvpx"):
            video.options = {"deadline": "realtime", "cpu-used": "8"}
        video.set_display_rotation(degrees)
        picture = np.zeros((height, width, 3), np.uint8)
        picture[: height // 2, : width // 2] = 255
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return buf.getvalue()


def clip_with_audio(codec: str, fmt: str, seconds: float = 1.0, rate: int = 44100) -> bytes:
    """``seconds`` of 320x240 H.264 at 30 fps with a 440 Hz stereo tone in ``codec``, muxed
    into ``fmt`` (any format PyAV writes)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        video = cast(av.VideoStream, out.add_stream("libx264", rate=30))
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        sound = cast(av.AudioStream, out.add_stream(codec, rate=rate))
        sound.layout = "stereo"
        frames = round(seconds * 30)
        for i in range(frames):
            picture = np.full((240, 320, 3), (i * 8) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        _tone(out, sound, seconds)
        for packet in video.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _tone(out: av.container.OutputContainer, sound: av.AudioStream, seconds: float) -> None:
    """``seconds`` of a 440 Hz stereo tone, encoded by ``sound`` into ``out`` and flushed."""
    rate = sound.codec_context.sample_rate
    size = sound.codec_context.frame_size or 1024
    fmt_name = sound.codec_context.format.name
    t = np.arange(round(seconds * rate)) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 0.3).astype(np.float32)
    for start in range(0, len(tone), size):
        part = np.tile(tone[start : start + size], (2, 1))
        planar = fmt_name.endswith("p")
        data = part if planar else part.T.reshape(1, -1)
        if fmt_name.startswith("s16"):
            data = (data * 32767).astype(np.int16)
        elif fmt_name.startswith("s32"):
            data = (data * 2**31 - 1).astype(np.int32)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(data), format=fmt_name, layout="stereo"
        )
        frame.sample_rate = rate
        frame.pts = start
        for packet in sound.encode(frame):
            out.mux(packet)
    for packet in sound.encode(None):
        out.mux(packet)


def coded_clip(
    codec: str,
    fmt: str,
    *,
    pix_fmt: str = "yuv420p",
    seconds: float = 2.0,
    fps: int = 25,
    gop: int = 12,
    bframes: int = 0,
    size: tuple[int, int] = (320, 240),
    audio: str | None = None,
    options: dict[str, str] | None = None,
) -> bytes:
    """``seconds`` of a moving gradient in a video ``codec`` (any encoder PyAV has, e.g. the
    camera, editing and legacy codecs uploads carry), a keyframe every ``gop`` frames and up
    to ``bframes`` B-frames between anchors (FFmpeg's MPEG-1/2/4 encoders then make open
    GOPs), with a tone in ``audio`` when given, muxed into ``fmt``."""
    width, height = size
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        video = cast(av.VideoStream, out.add_stream(codec, rate=fps))
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = Fraction(1, fps)
        video.gop_size = gop
        video.codec_context.max_b_frames = bframes
        video.bit_rate = 1_000_000
        video.options = options or {}
        sound = None
        if audio is not None:
            sound = cast(av.AudioStream, out.add_stream(audio, rate=48000))
            sound.layout = "stereo"
        yy, xx = np.mgrid[0:height, 0:width]
        for n in range(round(seconds * fps)):
            luma = (((xx + 4 * n) % 256 + yy // 2) % 220 + 16).astype(np.uint8)
            u = np.full((height // 2, width // 2), 96 + n % 64, np.uint8)
            planes = np.concatenate([luma.ravel(), u.ravel(), (255 - u).ravel()])
            frame = av.VideoFrame.from_ndarray(
                planes.reshape(height * 3 // 2, width), format="yuv420p"
            )
            if pix_fmt != "yuv420p":
                frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = n, Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            _tone(out, sound, seconds)
    return buf.getvalue()


def bright_quarter(data: bytes) -> tuple[str, int, int]:
    """Which quarter of a video's first frame is brightest ("top-left" ...), and the frame's
    size as a player shows it (FFmpeg's decoders do not turn pictures themselves)."""
    with av.open(io.BytesIO(data)) as c:
        frame = next(c.decode(video=0))
        y = frame.to_ndarray(format="gray").astype(float)
    h, w = y.shape
    quarters = {
        "top-left": y[: h // 2, : w // 2].mean(),
        "top-right": y[: h // 2, w // 2 :].mean(),
        "bottom-left": y[h // 2 :, : w // 2].mean(),
        "bottom-right": y[h // 2 :, w // 2 :].mean(),
    }
    return max(quarters, key=quarters.__getitem__), w, h


def audio_only_ts(seconds: float = 0.5) -> bytes:
    """An MPEG-TS file with one MP2 audio stream and no video."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        sound = cast(av.AudioStream, out.add_stream("mp2", rate=48000))
        sound.layout = "stereo"
        n = 1152
        for i in range(round(seconds * 48000 / n)):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 2 * n), np.int16), format="s16", layout="stereo"
            )
            frame.sample_rate = 48000
            frame.pts = i * n
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode(None):
            out.mux(packet)
    return buf.getvalue()


def unsupported_video(codec: str = "ffv1", fmt: str = "matroska", frames: int = 10) -> bytes:
    """A short video in a codec the engine does not take as input (FFV1 by default)."""
    pix_fmt = {"mjpeg": "yuvj420p", "png": "rgb24", "huffyuv": "yuv422p"}.get(codec, "yuv420p")
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        video = cast(av.VideoStream, out.add_stream(codec, rate=30))
        video.width, video.height, video.pix_fmt = 320, 240, pix_fmt
        for i in range(frames):
            rgb = np.full((240, 320, 3), (i * 20) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            frame.time_base = Fraction(1, 30)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return buf.getvalue()


def profile(
    name: str = "r", width: int = 320, height: int = 240, bitrate: int = 300_000, **kwargs: Any
) -> VideoProfile:
    """A custom profile with small defaults."""
    return VideoProfile(name=name, width=width, height=height, bitrate=bitrate, **kwargs)


@dataclass(frozen=True, slots=True)
class TsPacket:
    """A demuxed packet of an MPEG-TS file: its stream type, byte position and size."""

    kind: str
    pos: int
    size: int
    pts: int | None


def ts_packets(data: bytes) -> list[TsPacket]:
    """Every non-empty packet of a container, in file order."""
    with av.open(io.BytesIO(data), "r") as c:
        return [
            TsPacket(p.stream.type, p.pos, p.size, p.pts)
            for p in c.demux()
            if p.size and p.pos is not None
        ]


@dataclass(frozen=True, slots=True)
class Probe:
    """What a player sees in one output, decoded with PyAV."""

    format_name: str
    codec: str
    profile: str | None
    width: int
    height: int
    #: Presentation times (seconds) of the decoded frames, in display order.
    times: list[float]
    key_frames: list[int]
    #: Video packet pts in decode (file) order.
    decode_order_pts: list[int]
    video_bytes: int
    has_audio: bool
    audio_frames: int
    header_frames: int
    average_rate: Fraction | None

    @property
    def frames(self) -> int:
        return len(self.times)

    @property
    def frame_len(self) -> float:
        return (self.times[-1] - self.times[0]) / (self.frames - 1)

    @property
    def start(self) -> float:
        return self.times[0]

    @property
    def end(self) -> float:
        """Where the last frame stops showing: its time plus one frame."""
        return self.times[-1] + self.frame_len

    @property
    def duration(self) -> float:
        return self.end - self.start


def probe(data: bytes) -> Probe:
    """Reopen an output the way a player does and report what it holds."""
    with av.open(io.BytesIO(data), "r") as c:
        v = c.streams.video[0]
        packets = [p for p in c.demux(v) if p.size]
        decode_order_pts = [p.pts for p in packets if p.pts is not None]
        video_bytes = sum(p.size for p in packets)
        header = (
            c.format.name,
            codec_name(v),
            v.codec_context.profile,
            v.codec_context.width,
            v.codec_context.height,
            bool(c.streams.audio),
            v.frames,
            v.average_rate,
        )
    with av.open(io.BytesIO(data), "r") as c:
        frames = [cast(av.VideoFrame, f) for f in c.decode(video=0)]
    audio_frames = 0
    if header[5]:
        with av.open(io.BytesIO(data), "r") as c:
            audio_frames = sum(1 for _ in c.decode(audio=0))
    return Probe(
        format_name=header[0],
        codec=header[1],
        profile=header[2],
        width=header[3],
        height=header[4],
        times=[float(f.time) for f in frames if f.time is not None],
        key_frames=[i for i, f in enumerate(frames) if f.key_frame],
        decode_order_pts=decode_order_pts,
        video_bytes=video_bytes,
        has_audio=header[5],
        audio_frames=audio_frames,
        header_frames=header[6],
        average_rate=Fraction(header[7]) if header[7] else None,
    )


def still_image(width: int = 64, height: int = 48, codec: str = "png") -> bytes:
    """A real still picture (PNG, or JPEG with ``codec="mjpeg"``): a gradient of the size."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="image2pipe") as out:
        stream = out.add_stream(codec, rate=1)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        pixels = np.repeat(np.repeat(ramp[None, :, None], height, 0), 3, 2)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=stream.pix_fmt)
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return buf.getvalue()


def wav_audio(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A real mono 16-bit WAV file of a 440 Hz tone lasting ``seconds``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        t = np.arange(round(seconds * rate)) / rate
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return buf.getvalue()


def mp3_audio(seconds: float, header_frames: int | None = None, rate: int = 44100) -> bytes:
    """A real mono MP3 of silence lasting ``seconds``; ``header_frames`` rewrites the frame
    count of its Info header (what FFmpeg takes the file's duration from), as a file made to
    look shorter than it plays would."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        silence = np.zeros((1, round(seconds * rate)), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    data = buf.getvalue()
    if header_frames is not None:
        at = data.index(b"Info") + 8  # after the tag and its flags: the frame count
        data = data[:at] + header_frames.to_bytes(4, "big") + data[at + 4 :]
    return data


def _still_packet(stream: av.VideoStream, picture: bytes) -> av.Packet[Any]:
    packet = av.Packet(picture)
    packet.stream = stream
    packet.pts = packet.dts = 0
    packet.time_base = Fraction(1, 1000)
    return packet


def picture_track_first(data: bytes) -> bytes:
    """``data``'s streams in Matroska behind a one-picture 64x48 MJPEG video track, which is
    the file's first stream (a thumbnail track some cameras and tools write)."""
    buf = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(buf, "w", format="matroska") as out:
        still = cast(av.VideoStream, out.add_stream("mjpeg", rate=1))
        still.width, still.height, still.pix_fmt = 64, 48, "yuvj420p"
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        out.mux(_still_packet(still, still_image(64, 48, codec="mjpeg")))
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return buf.getvalue()


def mp3_with_cover(seconds: float = 1.0) -> bytes:
    """An MP3 with cover art: FFmpeg shows the art as a video stream marked as an attached
    picture, as it does for M4A artwork and Matroska attachments."""
    buf = io.BytesIO()
    with av.open(io.BytesIO(mp3_audio(seconds))) as src, av.open(buf, "w", format="mp3") as out:
        sound = out.add_stream_from_template(src.streams.audio[0])
        cover = cast(av.VideoStream, out.add_stream("png", rate=1))
        cover.width, cover.height, cover.pix_fmt = 64, 48, "rgb24"
        cover.disposition = Disposition.attached_pic
        out.mux(_still_packet(cover, still_image(64, 48)))
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = sound
                out.mux(packet)
    return buf.getvalue()


def sound_until(
    data: bytes, seconds: float, fmt: str = "mpegts", *, since: float | None = None
) -> bytes:
    """``data`` remuxed with its audio packets after ``seconds`` (and before ``since``) left
    out, the audio stream still declared: a recording whose sound ends before its picture
    (or starts after it; ``seconds=0``: an audio track declared and never filled)."""
    buf = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(buf, "w", format=fmt) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "audio" and (
                seconds <= 0
                or packet.pts is None
                or packet.pts * packet.time_base >= seconds
                or (since is not None and packet.pts * packet.time_base < since)
            ):
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return buf.getvalue()


def trimmed_mp4(data: bytes, seconds: float) -> bytes:
    """MP4 ``data`` remuxed with its first ``seconds`` before time 0: an edit
    list trims them (as a phone trims a video without re-encoding it), so a player shows
    what follows. The demuxer drops the GOPs wholly before the cut and marks the rest of it
    discarded; the header's sample count still counts every sample."""
    buf = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(buf, "w", format="mp4") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None or packet.pts is None or packet.time_base is None:
                continue
            shift = round(seconds / packet.time_base)
            packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return buf.getvalue()


__all__ += [
    "mp3_audio",
    "mp3_with_cover",
    "picture_track_first",
    "sound_until",
    "still_image",
    "trimmed_mp4",
    "wav_audio",
]
