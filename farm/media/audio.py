"""Audio encoded to AAC-LC once, for outputs that cannot carry the input's audio as it is."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av

from farm.errors import InputCorrupt
from farm.media.codecs import codec_name

__all__ = ["AAC_RATES", "CARRIED_AUDIO", "AudioToAac"]

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


def _at(packet: av.Packet[Any] | None) -> str:
    if packet is None or packet.pts is None or packet.time_base is None:
        return ""
    return f" at {float(packet.pts * packet.time_base):.3f} s"
