"""Assembling transcoded segments: an HLS VOD ladder, and one MP4 per rendition.

The segments come from :func:`farm.media.segmenter.split`, transcoded by the engine into
MPEG-TS with the input's timestamps, so they already join up: nothing is re-encoded or
re-timed here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av

from farm.errors import EngineFailure, FarmError, InputCorrupt, InputInvalid
from farm.media.codec_strings import codecs_of
from farm.media.codecs import codec_name
from farm.media.engine import adts_to_mp4
from farm.media.output import OutputFile
from farm.media.playlist import Variant, master_playlist, media_playlist, segment_bandwidth

__all__ = ["concat_mp4", "hls", "variant"]

MASTER = "index.m3u8"


def hls(renditions: dict[str, list[tuple[str, bytes, float]]]) -> dict[str, bytes]:
    """An HLS VOD ladder as relative path -> bytes.

    ``renditions`` maps each profile name to its segments in order, as (file name, MPEG-TS
    bytes, duration in seconds), in the order the master playlist offers them. The result
    holds ``index.m3u8`` (the master playlist), ``<profile>/index.m3u8`` (a VOD media
    playlist) and ``<profile>/<file name>`` for every segment. Each variant is described as
    it was encoded, not as it was asked for: BANDWIDTH is its peak segment bit rate and
    AVERAGE-BANDWIDTH its average, measured from the segments (RFC 8216), and RESOLUTION
    and CODECS are read from the streams of its first segment with sound (else its first).

    Raises ValueError when there are no renditions or a name is not a plain file name, and
    InputInvalid when a first segment has no video FFmpeg can read.
    """
    names = list(renditions)
    if not names:
        raise ValueError("at least one rendition is required")
    files: dict[str, bytes] = {}
    variants: list[Variant] = []
    for name in names:
        _check_name(name, "profile name")
        segments = renditions[name]
        if not segments:
            raise ValueError(f"rendition {name!r} has no segments")
        entries: list[tuple[str, float]] = []
        for filename, data, duration in segments:
            _check_name(filename, "segment file name")
            if filename == MASTER:
                raise ValueError(f"segment file name {filename!r} is the playlist's name")
            path = f"{name}/{filename}"
            if path in files:
                raise ValueError(f"rendition {name!r} lists segment {filename!r} twice")
            if not duration > 0:
                raise ValueError(f"segment {path!r} has duration {duration!r}")
            files[path] = data
            entries.append((filename, duration))
        files[f"{name}/{MASTER}"] = media_playlist(entries).encode()
        sizes = [(len(data), d) for _, data, d in segments]
        # The CODECS of a variant lists the audio of any segment: where the input's sound
        # starts after its picture, the first segments have none.
        variants.append(variant(f"{name}/{MASTER}", _sounding(segments), sizes))
    files[MASTER] = master_playlist(variants).encode()
    return files


def variant(uri: str, first: bytes, segments: Sequence[tuple[int, float]]) -> Variant:
    """A master playlist's entry for the rendition at ``uri``, as it was encoded: bit rates
    from its ``segments`` (bytes, seconds), resolution and codecs from its ``first`` segment.

    Raises InputInvalid when the first segment has no video FFmpeg can read.
    """
    peak, average = segment_bandwidth(segments)
    with _open(first, 0) as container:
        if not container.streams.video:
            raise InputInvalid(f"the first segment of {uri} has no video stream")
        ctx = container.streams.video[0].codec_context
        width, height = ctx.width, ctx.height
    return Variant(uri, peak, average, width, height, codecs_of(first))


def _sounding(segments: list[tuple[str, bytes, float]]) -> bytes:
    """The first segment with an audio stream, else the first."""
    for _, data, _ in segments:
        try:
            with av.open(io.BytesIO(data), "r") as container:
                if container.streams.audio:
                    return data
        except av.FFmpegError:
            break  # variant() reports it
    return segments[0][1]


def _check_name(name: str, what: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.strip() != name:
        raise ValueError(f"{what} {name!r} is not a plain file name")


def concat_mp4(segments: list[bytes], rotation: int = 0) -> bytes:
    """Join consecutive MPEG-TS segments of one rendition into one faststart MP4.

    Packets are copied, not re-encoded, with the segments' own timestamps (they continue
    from one segment to the next). ADTS AAC audio is converted for MP4. Every segment must
    carry the first one's video codec and size, and those with audio the same audio codec;
    segments without audio (the input's sound ended before its video) leave a gap in it. With
    ``rotation`` (degrees clockwise, as :attr:`SourceSegment.rotation`), the MP4 carries the
    display matrix that shows the pictures turned by it, as the input did.

    Raises ValueError for an empty list, :class:`~farm.errors.InputInvalid` or
    :class:`~farm.errors.InputCorrupt` for segments that cannot be read or do not match,
    and :class:`~farm.errors.EngineFailure` when muxing fails.
    """
    if not segments:
        raise ValueError("no segments to concatenate")
    out = OutputFile("mp4")
    try:
        _concat(segments, out, rotation)
        return out.finish()
    except BaseException as e:
        out.abort()
        if isinstance(e, FarmError | ValueError) or not isinstance(e, av.FFmpegError):
            raise
        raise EngineFailure(f"MP4 assembly failed: {e}") from e


def _concat(segments: list[bytes], out: OutputFile, rotation: int) -> None:
    kinds = [_segment_kinds(data, i) for i, data in enumerate(segments)]
    first = kinds[0]
    sound = next((a for _, a in kinds if a is not None), None)
    for i, (v, a) in enumerate(kinds):
        # A segment the input's sound did not reach has no audio; any other must match.
        if v != first[0] or a not in (None, sound):
            raise InputInvalid(
                f"segment {i} has (video, audio) {(v, a)}; the first segment {first}"
            )
    container = out.container
    a_out: av.AudioStream | None = None
    adts = None
    heard = next((i for i, (_, a) in enumerate(kinds) if a is not None), None)
    if heard is not None:
        with _open(segments[heard], heard) as src:
            a_out = container.add_stream_from_template(src.streams.audio[0])
            adts = adts_to_mp4(src.streams.audio[0], a_out)
    v_out: av.VideoStream | None = None
    last_dts: dict[str, Fraction] = {}
    for i, data in enumerate(segments):
        src = _open(data, i)
        with src:
            video = src.streams.video[0]
            audio = src.streams.audio[0] if src.streams.audio else None
            if v_out is None:
                v_out = container.add_stream_from_template(video)
                if rotation % 360:
                    v_out.set_display_rotation(-rotation % 360)  # counterclockwise
            streams = [video] if audio is None or a_out is None else [video, audio]
            try:
                for packet in src.demux(streams):
                    if not packet.size or packet.dts is None:
                        continue
                    is_audio = packet.stream is audio
                    kind = "audio" if is_audio else "video"
                    _keep_increasing(packet, last_dts, kind)
                    if is_audio:
                        assert a_out is not None
                        tb = packet.time_base
                        for p in adts.filter(packet) if adts is not None else (packet,):
                            p.time_base = tb
                            p.stream = a_out
                            container.mux(p)
                    else:
                        packet.stream = v_out
                        container.mux(packet)
            except av.InvalidDataError as e:
                raise InputCorrupt(f"segment {i} cannot be demuxed: {e}") from e


def _segment_kinds(data: bytes, i: int) -> tuple[tuple[str, int, int], str | None]:
    with _open(data, i) as src:
        if not src.streams.video:
            raise InputInvalid(f"segment {i} has no video stream")
        audio = src.streams.audio[0] if src.streams.audio else None
        return _kinds(src.streams.video[0], audio)


def _open(data: bytes, i: int) -> av.container.InputContainer:
    if not data:
        raise InputInvalid(f"segment {i} is empty (0 bytes)")
    try:
        with av.logging.Capture():
            return av.open(io.BytesIO(data), "r")
    except av.FFmpegError as e:
        raise InputInvalid(f"segment {i} is not a media container FFmpeg can read: {e}") from e


def _kinds(
    video: av.VideoStream, audio: av.AudioStream | None
) -> tuple[tuple[str, int, int], str | None]:
    ctx = video.codec_context
    return (codec_name(video), ctx.width, ctx.height), codec_name(audio) if audio else None


def _keep_increasing(packet: av.Packet[Any], last: dict[str, Fraction], kind: str) -> None:
    """Nudge a DTS that does not advance past the previous one (an encoder delay that
    differs between segments) by the least amount; MP4 needs strictly increasing DTS."""
    tb = packet.time_base
    assert packet.dts is not None and tb is not None
    previous = last.get(kind)
    if previous is not None and packet.dts * tb <= previous:
        packet.dts = math.floor(previous / tb) + 1
        if packet.pts is not None and packet.pts < packet.dts:
            raise InputCorrupt(
                f"{kind} timestamps of consecutive segments overlap at {float(previous):.3f} s"
            )
    last[kind] = packet.dts * tb
