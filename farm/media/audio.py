"""Audio encoded to AAC-LC once, for outputs that cannot carry the input's audio as it is."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, cast

import av
import numpy as np

from farm.errors import InputCorrupt
from farm.media.codecs import codec_name

__all__ = ["AAC_RATES", "CARRIED_AUDIO", "AudioToAac", "Silence"]

#: The sampling rates AAC has (its AudioSpecificConfig's index order).
AAC_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)


#: The audio codecs each output format carries as they come (copied into every rendition);
#: any other audio is encoded to AAC once and the same packets muxed into every rendition,
#: as the ``ffmpeg`` command line picks a codec the container takes. (PCM, FLAC or Vorbis
#: in MPEG-TS would be muxed as a stream no player decodes; AC-3 in fragmented MP4 does not
#: mux at all, since its header needs a frame before the first fragment.) "hls": what the
#: segments of a Studio file job carry as they come (HLS players decode these in MPEG-TS;
#: not Opus, Vorbis, FLAC or PCM).
CARRIED_AUDIO = {
    "mpegts": frozenset({"aac", "mp2", "mp3", "ac3", "eac3", "opus"}),
    "mp4": frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}),
    "fmp4": frozenset({"aac", "mp3", "opus", "flac", "alac"}),
    "hls": frozenset({"aac", "mp3", "ac3", "eac3"}),
}


class AudioToAac:
    """Encodes an input's audio to AAC-LC once, for every rendition of a segment: mono or
    stereo (more channels are mixed down), at the input's rate where AAC has it, else 48 kHz."""

    def __init__(self, audio: av.AudioStream) -> None:
        ctx = audio.codec_context
        self.rate = ctx.sample_rate if ctx.sample_rate in AAC_RATES else 48000
        self.layout = "mono" if ctx.channels == 1 else "stereo"
        self.bit_rate = 64_000 if self.layout == "mono" else 128_000
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate = self.rate
        encoder.layout = self.layout
        encoder.format = "fltp"
        encoder.bit_rate = self.bit_rate
        encoder.time_base = Fraction(1, self.rate)
        encoder.open()
        self._encoder = encoder
        self._resampler = av.AudioResampler(
            format="fltp", layout=self.layout, rate=self.rate, frame_size=encoder.frame_size
        )
        self._decoder = ctx

    @classmethod
    def needed(cls, audio: av.AudioStream | None, fmt: str) -> AudioToAac | None:
        """An encoder when ``fmt`` cannot carry ``audio`` as it is; None to copy it."""
        if audio is None or codec_name(audio) in CARRIED_AUDIO[fmt]:
            return None
        return cls(audio)

    def add_stream(self, container: av.container.OutputContainer) -> av.AudioStream:
        """A rendition's audio stream for the packets this encoder makes."""
        stream = container.add_stream("aac", rate=self.rate)
        stream.layout = self.layout
        stream.bit_rate = self.bit_rate
        return stream

    def encode(self, packet: av.Packet[Any] | None) -> list[av.Packet[Any]]:
        """The AAC packets for an input audio packet; None flushes what is held."""
        out: list[av.Packet[Any]] = []
        try:
            if packet is None:
                frames: list[av.AudioFrame | None] = [*self._resampler.resample(None), None]
            else:
                frames = []
                for decoded in self._decoder.decode(packet):
                    frames += self._resampler.resample(decoded)
            for frame in frames:
                for p in self._encoder.encode(frame):
                    p.time_base = Fraction(1, self.rate)
                    out.append(p)
        except av.FFmpegError as e:
            raise InputCorrupt(f"the audio{_at(packet)} cannot be decoded: {e}") from e
        return out


#: The encoder of each audio codec a Studio segment may carry, for its silence.
_SILENCE_ENCODERS = {"aac": "aac", "mp3": "libmp3lame", "ac3": "ac3", "eac3": "eac3"}
_SAMPLE_TYPES = {"flt": np.float32, "dbl": np.float64, "s16": np.int16, "s32": np.int32}


class Silence:
    """Silent audio in the codec, rate and channels of a segmented input's sound, for the
    segments that sound does not reach (it starts after the picture or ends before it): an
    HLS variant whose segments lose their audio track part way stalls players that wait for
    audio to buffer, and an MP4 made of them has a gap, where the ``ffmpeg`` command line
    gives both a track that runs to the end."""

    def __init__(self, codec: str, rate: int, layout: str, bit_rate: int) -> None:
        self.codec, self.rate, self.layout, self.bit_rate = codec, rate, layout, bit_rate

    @classmethod
    def like(cls, audio: av.AudioStream, aac: AudioToAac | None) -> Silence | None:
        """Silence for segments of an input with ``audio`` (encoded by ``aac`` where it is
        given, else copied); None where none can be made to match it (an AAC profile other
        than LC, a codec without an encoder here)."""
        if aac is not None:
            return cls("aac", aac.rate, aac.layout, aac.bit_rate)
        ctx = audio.codec_context
        codec = codec_name(audio)
        if codec not in _SILENCE_ENCODERS or not ctx.sample_rate or not ctx.channels:
            return None
        if codec == "aac" and ((ctx.profile or "LC") != "LC" or ctx.sample_rate not in AAC_RATES):
            return None
        try:
            av.Codec(_SILENCE_ENCODERS[codec], "w")
        except (av.FFmpegError, ValueError):
            return None
        bit_rate = ctx.bit_rate or (64_000 if ctx.channels == 1 else 128_000)
        return cls(codec, ctx.sample_rate, ctx.layout.name, bit_rate)

    def _set_up(self, ctx: av.AudioCodecContext) -> None:
        formats = ctx.codec.audio_formats
        assert formats, "an audio encoder names its sample formats"
        ctx.sample_rate, ctx.layout, ctx.format = self.rate, self.layout, formats[0].name
        ctx.bit_rate = self.bit_rate
        ctx.time_base = Fraction(1, self.rate)

    def _encoder(self) -> av.AudioCodecContext:
        encoder = cast(av.AudioCodecContext, av.CodecContext.create(self.encoder, "w"))
        self._set_up(encoder)
        return encoder

    @property
    def encoder(self) -> str:
        return _SILENCE_ENCODERS[self.codec]

    def add_stream(self, container: av.container.OutputContainer) -> av.AudioStream:
        """A segment's audio stream for the packets :meth:`packets` makes."""
        stream = cast(av.AudioStream, container.add_stream(self.encoder, rate=self.rate))
        self._set_up(stream.codec_context)
        return stream

    def packets(self, start: Fraction, end: Fraction) -> list[av.Packet[Any]]:
        """Encoded silence from ``start`` to ``end`` (seconds, the input's timeline): whole
        frames from the first at or after ``start``, the encoder's priming left out."""
        encoder = self._encoder()
        encoder.open()
        size = encoder.frame_size or 1152
        first, last = round(start * self.rate), round(end * self.rate)
        fmt, channels = encoder.format, len(encoder.layout.channels)
        shape = (channels, size) if fmt.is_planar else (1, size * channels)
        silent = np.zeros(shape, dtype=_SAMPLE_TYPES[fmt.name.rstrip("p")])
        out: list[av.Packet[Any]] = []
        for pts in range(first, last, size):
            frame = av.AudioFrame.from_ndarray(silent, format=fmt.name, layout=self.layout)
            frame.sample_rate, frame.pts = self.rate, pts
            frame.time_base = Fraction(1, self.rate)
            out += encoder.encode(frame)
        out += encoder.encode(None)
        for p in out:
            p.time_base = Fraction(1, self.rate)
        # Whole frames inside the span: none overlaps the sound of the segment after.
        return [p for p in out if p.pts is not None and first <= p.pts and p.pts + size <= last]


def _at(packet: av.Packet[Any] | None) -> str:
    if packet is None or packet.pts is None or packet.time_base is None:
        return ""
    return f" at {float(packet.pts * packet.time_base):.3f} s"
