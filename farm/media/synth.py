"""Synthetic test segments: a moving pattern with noise and a sine tone.

Used by the tests, by ``farm bench`` when no input is given, and by the media benchmark, so
that nobody needs a sample file to try the engine.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np

from farm.media.output import FORMATS, OutputFile

__all__ = ["make_segment", "make_stream"]


def make_segment(
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    seconds: float = 2.0,
    *,
    start: float = 0.0,
    audio: bool = True,
    noise: int = 12,
    bitrate: int | None = None,
    fmt: str = "mpegts",
    codec: str = "libx264",
    gop_seconds: float | None = None,
    seed: int = 0,
    audio_codec: str = "aac",
) -> bytes:
    """Encode one segment of synthetic video (and AAC audio, or ``audio_codec``) starting at
    ``start`` seconds."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * fps)
    first = round(start * fps)
    # The engine's own output files: MP4 gets faststart, MPEG-TS keeps timestamps exact so
    # consecutive segments join up.
    out_file = OutputFile(fmt) if fmt in FORMATS else None
    buf = io.BytesIO()
    out = out_file.container if out_file else av.open(buf, "w", format=fmt)
    try:
        video = cast(av.VideoStream, out.add_stream(codec, rate=fps))
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        video.bit_rate = bitrate or max(200_000, width * height * fps // 10)
        video.gop_size = round((gop_seconds or seconds) * fps)
        video.options = dict(_FAST.get(codec, {}))
        sound: av.AudioStream | None = None
        if audio:
            sound = cast(av.AudioStream, out.add_stream(audio_codec, rate=48000))
            sound.layout = "stereo"
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            n = first + i
            luma = ((xx + 4 * n) % 256 + (yy // 2)) % 256
            if noise:
                luma = luma + rng.integers(-noise, noise + 1, size=luma.shape)
            y = np.clip(luma, 16, 235).astype(np.uint8)
            u = np.full((height // 2, width // 2), 128 + (n % 64) - 32, np.uint8)
            v = np.full((height // 2, width // 2), 128 - (n % 64) + 32, np.uint8)
            frame = av.VideoFrame.from_ndarray(
                np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(height * 3 // 2, width),
                format="yuv420p",
            )
            frame.pts = n
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            _encode_tone(out, sound, start, seconds)
    except BaseException:
        if out_file:
            out_file.abort()
        raise
    if out_file:
        return out_file.finish()
    out.close()
    return buf.getvalue()


#: The quickest settings of the encoders the tests use.
_FAST = {
    "libx264": {"preset": "ultrafast", "bf": "0"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libsvtav1": {"preset": "12", "svtav1-params": "log-level=1"},
}


def _encode_tone(
    out: av.container.OutputContainer, sound: av.AudioStream, start: float, seconds: float
) -> None:
    rate = 48000
    first = round(start * rate)
    total = round(seconds * rate)
    chunk = sound.codec_context.frame_size or 1024
    for offset in range(0, total, chunk):
        n = min(chunk, total - offset)
        t = (first + offset + np.arange(n)) / rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = first + offset
        frame.time_base = Fraction(1, rate)
        for packet in sound.encode(frame):
            out.mux(packet)
    for packet in sound.encode(None):
        out.mux(packet)


def make_stream(directory: Path, segments: int, seconds: float = 2.0, **kwargs: object) -> Path:
    """Write ``segments`` consecutive segments and an HLS media playlist; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{int(seconds + 0.999)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    for k in range(segments):
        data = make_segment(seconds=seconds, start=k * seconds, seed=k, **kwargs)  # type: ignore[arg-type]
        (directory / f"seg{k}.ts").write_bytes(data)
        lines += [f"#EXTINF:{seconds:.3f},", f"seg{k}.ts"]
    lines.append("#EXT-X-ENDLIST")
    playlist = directory / "stream.m3u8"
    playlist.write_text("\n".join(lines) + "\n")
    return playlist
