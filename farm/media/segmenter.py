"""Cutting a long input into segments at video keyframes, without re-encoding.

Studio-style file transcoding splits an upload into segments of a few seconds, transcodes
them in parallel on the cluster and assembles the renditions (:mod:`farm.media.assemble`).
Packets are copied as they are: timestamps stay those of the input, so consecutive segments
join up exactly, and every segment starts with a keyframe (and, for H.264/HEVC in Annex B,
with the parameter sets a decoder needs), so each one is a valid input to the engine.

H.264 and HEVC segments are MPEG-TS, as a Livepeer gateway sends, and so are MPEG-1/2
(broadcast, DVD). VP8, VP9, AV1, MPEG-4 Part 2, ProRes and Motion JPEG, which MPEG-TS cannot
carry, go into Matroska segments, DNxHD and H.263 into QuickTime, and the codecs neither has
a tag for (Sorenson Spark, Windows Media 8, MS MPEG-4 v3) into NUT; the engine reads each as
it reads MPEG-TS. A Livepeer orchestrator is sent only H.264, HEVC, VP8 and VP9 (what
go-livepeer decodes), Matroska ones as go-livepeer sends MP4 segments, under ``video/MP2T``:
FFmpeg finds the container from the bytes. Segments of the other codecs are marked for this
farm's engine (``SourceSegment.engine_only``), and cut only for a caller that can send them
there.

A keyframe that opens an open GOP (MPEG-2's and MPEG-4's usual I-frames, HEVC CRA, H.264
recovery points) is followed in decode order by pictures shown before it that need the GOP
before. Segments for the network start only at clean keyframes. Segments for the engine may
start at any keyframe: one that starts at an open one carries the GOP before it too, to prime
the decoder, and ``SourceSegment.show_from`` says where its own pictures start (the engine
shows nothing before it), so no picture is lost at a cut.

Audio HLS players decode in MPEG-TS (AAC, MP3, AC-3, E-AC-3) is copied. Other audio (the
Opus of a WebM recording, Vorbis, FLAC, PCM) is encoded to AAC-LC here, once for the whole
input, and its packets shared out among the segments like copied ones: the renditions copy
the segments' audio, so the HLS they make plays with sound everywhere, with no encoder
priming at each segment's start.
"""

from __future__ import annotations

import io
import itertools
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.bitstream import BitStreamFilterContext

from farm.errors import InputCorrupt, InputTooLong, UnsupportedCodec
from farm.media.audio import CARRIED_AUDIO, AudioToAac, Silence
from farm.media.codecs import codec_name
from farm.media.source import NETWORK_CODECS, open_source

__all__ = ["SEGMENT_FORMATS", "SPLIT_CODECS", "SourceSegment", "split"]

#: The container each video codec that can be cut by stream copy is carried in.
SEGMENT_FORMATS = {
    "h264": "mpegts",
    "hevc": "mpegts",
    "mpeg1video": "mpegts",
    "mpeg2video": "mpegts",
    "vp8": "matroska",
    "vp9": "matroska",
    "av1": "matroska",
    "mpeg4": "matroska",
    "prores": "matroska",
    "mjpeg": "matroska",
    "dnxhd": "mov",
    "h263": "mov",
    "flv1": "nut",
    "wmv2": "nut",
    "msmpeg4v3": "nut",
    "gif": "nut",
}
#: Video codecs that can be cut by stream copy.
SPLIT_CODECS = frozenset(SEGMENT_FORMATS)
#: Codecs whose turned segments can keep the display matrix (in Matroska).
_MATRIX_CODECS = frozenset(c for c, f in SEGMENT_FORMATS.items() if f in ("mpegts", "matroska"))
_TO_ANNEXB = {"h264": "h264_mp4toannexb", "hevc": "hevc_mp4toannexb"}
#: NAL unit types of the parameter sets a keyframe needs in front of it.
_PARAMETER_SETS = {"h264": frozenset({7, 8}), "hevc": frozenset({32, 33, 34})}
#: Timestamps are written as they are, so consecutive segments join up.
_KEEP_TIMESTAMPS = {"avoid_negative_ts": "disabled"}

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SourceSegment:
    """One segment of a split input: MPEG-TS, or Matroska for VP8, VP9 and AV1.

    ``start`` is the presentation time (seconds, input timeline) of its first video frame;
    ``duration`` runs to the next segment's start (for the last one, to the end of its last
    frame), so ``start + duration`` of one segment is the next one's ``start``.
    """

    index: int
    data: bytes
    start: float
    duration: float
    frames: int
    #: Degrees clockwise that the input's pictures turn to be shown upright (its display
    #: matrix, which no segment carries): the same for every segment of an input. Every
    #: orchestrator, whatever it does with a matrix, returns renditions as coded, so they
    #: join up; the assembled MP4 carries the matrix again.
    rotation: int = 0
    #: The segment's container: "mpegts", "matroska", "mov" or "nut" (SEGMENT_FORMATS).
    fmt: str = "mpegts"
    #: Only this farm's engine can transcode it: its codec is not one a Livepeer
    #: orchestrator decodes, it keeps a display matrix, or it holds frames before ``start``.
    engine_only: bool = False
    #: Set when ``data`` starts with the GOP before the segment's own (an open-GOP cut): the
    #: time its own pictures start (``start``); pictures shown before it are not output.
    show_from: float | None = None


@dataclass(slots=True)
class _Cut:
    """A segment being planned: its video packets' span and the packets it gets."""

    start: Fraction
    end: Fraction
    #: (is audio, packet), muxed in this order.
    packets: list[tuple[bool, av.Packet[Any]]]
    frames: int = 0
    #: The GOP before, decoded first and not shown (a cut at an open-GOP keyframe).
    primer: list[av.Packet[Any]] = field(default_factory=list)
    #: Its audio is silence made for it: the input's sound does not reach it.
    silent: bool = False


def split(
    data: bytes | Path,
    target_seconds: float = 6.0,
    *,
    max_seconds: float = 4 * 3600,
    max_segments: int = 2000,
    engine: bool = False,
) -> list[SourceSegment]:
    """Split an input (MP4, MOV, MPEG-TS, MPEG-PS, Matroska, WebM, AVI, ...; video in a
    codec of SEGMENT_FORMATS, optional audio) into segments of about ``target_seconds``
    each, by stream copy, in the container SEGMENT_FORMATS names for the codec.

    A segment starts at the first video keyframe at or after ``start + target_seconds`` of
    the one before, so segments are at least ``target_seconds`` long (the last one aside)
    and longer where keyframes are far apart. Audio packets go to the segment whose video
    time range holds them. Video packets before the first keyframe cannot be decoded and are
    dropped.

    ``engine``: the caller can send segments to this farm's engine (its pool has a farm
    cluster). Then an input in a codec Livepeer orchestrators do not decode is cut with every
    segment ``engine_only``; an input shown turned (its display matrix) is cut into Matroska
    segments that keep the matrix, so the engine turns their renditions upright (their
    ``rotation`` is 0), all ``engine_only``; and segments start at any keyframe, one that
    starts at an open-GOP keyframe carrying the GOP before it (``show_from``) and
    ``engine_only`` too. Without it, such a codec is refused, a turned input goes as coded
    (``rotation`` says the turn, see SourceSegment), and segments start at clean keyframes
    only (at any, losing their leading pictures, where no later keyframe is clean).

    Raises :class:`~farm.errors.InputInvalid` (empty, not media, no video),
    :class:`~farm.errors.UnsupportedCodec`, :class:`~farm.errors.InputCorrupt` (damaged, no
    keyframes) and :class:`~farm.errors.InputTooLong` (past ``max_seconds`` or
    ``max_segments``).
    """
    if not target_seconds > 0:
        raise ValueError(f"target_seconds must be positive, got {target_seconds!r}")
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, got {max_segments!r}")
    source = open_source(data, max_seconds=max_seconds, find_rotation=True)
    try:
        video, audio = source.video, source.audio
        codec = codec_name(video)
        if codec not in SPLIT_CODECS:
            raise UnsupportedCodec(
                f"cannot split {codec!r} video; splitting supports "
                f"{', '.join(sorted(SPLIT_CODECS))}"
            )
        if codec not in NETWORK_CODECS and not engine:
            raise UnsupportedCodec(
                f"{codec!r} video is transcoded only by this farm's own clusters, and this "
                "gateway routes to none; Livepeer orchestrators decode "
                f"{', '.join(sorted(NETWORK_CODECS))}"
            )
        aac = AudioToAac(audio) if audio and codec_name(audio) not in CARRIED_AUDIO["hls"] else None
        turned = engine and source.rotation != 0 and codec in _MATRIX_CODECS
        everyone = not turned and codec in NETWORK_CODECS
        fmt = "matroska" if turned else SEGMENT_FORMATS[codec]
        # avcC/hvcC (MP4, Matroska) must become Annex B for MPEG-TS.
        to_annexb = (
            fmt == "mpegts"
            and codec in _TO_ANNEXB
            and not _is_annexb(video.codec_context.extradata or b"")
        )
        cuts = _plan(
            source.container,
            video,
            audio,
            Fraction(target_seconds),
            source.frame_rate,
            aac,
            to_annexb=to_annexb,
            primers=engine,
        )
        _check_limits(cuts, max_seconds, max_segments, target_seconds)
        silence = Silence.like(audio, aac) if audio is not None else None
        if silence is not None:
            _fill_silence(cuts, silence)
        return [
            SourceSegment(
                index=i,
                data=_write(
                    [(False, p) for p in cut.primer] + cut.packets,
                    video,
                    audio,
                    codec,
                    aac,
                    fmt,
                    keep_turn=turned,
                    annexb=to_annexb,
                    silence=silence if cut.silent else None,
                ),
                start=float(cut.start),
                duration=float(cut.end - cut.start),
                frames=cut.frames,
                rotation=0 if turned else source.rotation,
                fmt=fmt,
                engine_only=not everyone or bool(cut.primer),
                show_from=float(cut.start) if cut.primer else None,
            )
            for i, cut in enumerate(cuts)
        ]
    finally:
        source.close()


def _plan(
    container: av.container.InputContainer,
    video: av.VideoStream,
    audio: av.AudioStream | None,
    target: Fraction,
    frame_rate: Fraction | None,
    aac: AudioToAac | None = None,
    *,
    to_annexb: bool = False,
    primers: bool = False,
) -> list[_Cut]:
    """Demux everything and decide which segment every packet goes to (the audio encoded
    by ``aac`` where it is given); ``primers`` as :func:`_cut` takes it."""
    codec = codec_name(video)
    extradata = video.codec_context.extradata or b""
    # ``to_annexb``: the filter also puts the parameter sets in front of every IDR frame,
    # so each segment decodes on its own. VP8, VP9 and AV1 keyframes stand alone (AV1's
    # sequence header is the stream's extradata, which every Matroska segment carries).
    bsf = BitStreamFilterContext(_TO_ANNEXB[codec], video) if to_annexb else None
    frame_len = Fraction(1) / frame_rate if frame_rate else Fraction(1, 30)
    video_tb = video.time_base
    assert video_tb is not None
    videos: list[av.Packet[Any]] = []
    audio_packets: list[av.Packet[Any]] = []
    streams = [s for s in (video, audio) if s is not None]
    unheard: av.Packet[Any] | None = None
    counted = 0  # video frames the container holds, dropped ones (empty AVI chunks) too
    end: Fraction | None = None  # where its last packet, of either stream, ends
    try:
        with av.logging.Capture():
            for packet in container.demux(streams):
                if packet.stream is video and packet.dts is not None:
                    counted += 1
                if packet.pts is not None and packet.time_base is not None:
                    stop = (packet.pts + (packet.duration or 0)) * packet.time_base
                    end = stop if end is None else max(end, stop)
                if not packet.size:
                    continue  # the demuxer's end-of-stream packets
                if packet.stream is audio:
                    if aac is not None:
                        audio_packets += aac.encode(packet)  # the decoder drops discarded
                    elif packet.is_discard:
                        # Sound an edit list leaves out (a trimmed phone video): only the
                        # packet just before what it keeps, which primes the decoder.
                        unheard = packet
                    elif packet.pts is not None:
                        if unheard is not None:
                            audio_packets.append(unheard)
                            unheard = None
                        audio_packets.append(packet)
                    continue
                if packet.is_corrupt:
                    raise InputCorrupt(f"corrupt video packet at {_when(packet)}")
                if packet.pts is None and packet.dts is None:
                    raise InputCorrupt("a video packet has no timestamp; the input cannot be cut")
                tb = packet.time_base or video_tb  # filtering moves the packet out
                for out in bsf.filter(packet) if bsf is not None else (packet,):
                    out.time_base = tb
                    videos.append(out)
            if bsf is not None:
                for out in bsf.filter(None):
                    out.time_base = video_tb
                    videos.append(out)
            if aac is not None:
                audio_packets += aac.encode(None)
    except av.FFmpegError as e:
        raise InputCorrupt(f"input cannot be demuxed: {e}") from e
    _check_whole(container, video, counted, end)
    if to_annexb:
        extradata = _annexb_parameter_sets(videos, codec)
    _fill_dts(videos, frame_len)
    cuts = _cut(videos, target, frame_len, codec, extradata, primers=primers)
    _place_audio(cuts, audio_packets)
    return cuts


#: Containers whose duration is written in their header (not estimated from the packets a
#: reader finds): an upload that ends early is found by it.
_DECLARED_DURATION = frozenset({"flv", "avi", "asf", "matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2"})


def _check_whole(
    container: av.container.InputContainer,
    video: av.VideoStream,
    counted: int,
    end: Fraction | None,
) -> None:
    """Raise InputCorrupt for an input that ends before its header says: an upload or
    download cut short (a faststart MP4, an AVI, an FLV...) demuxes without an error, and
    would otherwise be transcoded as a shorter video. AVI declares its frames too (MP4's
    count includes samples an edit list leaves out, which a trimmed phone video has)."""
    fmt = container.format.name
    declared = video.frames
    if fmt == "avi" and declared and counted + 1 < declared:
        raise InputCorrupt(
            f"input is truncated: it holds {counted} of the {declared} video frames its "
            "header declares"
        )
    if fmt in _DECLARED_DURATION and container.duration and end is not None:
        length = Fraction(container.duration, av.time_base)
        start = Fraction(container.start_time or 0, av.time_base)
        held = end - start
        if length - held > max(Fraction(1), length / 20):
            raise InputCorrupt(
                f"input is truncated: it ends at {float(held):.2f} s of the "
                f"{float(length):.2f} s its header declares"
            )


def _time(packet: av.Packet[Any]) -> Fraction:
    ts = packet.pts if packet.pts is not None else packet.dts
    assert ts is not None and packet.time_base is not None
    return ts * packet.time_base


def _cut(
    videos: list[av.Packet[Any]],
    target: Fraction,
    frame_len: Fraction,
    codec: str,
    extradata: bytes,
    *,
    primers: bool = False,
) -> list[_Cut]:
    """Group video packets (decode order) into segments that each start at a keyframe.

    An open-GOP keyframe (HEVC CRA, H.264 recovery point, MPEG-2/MPEG-4 I-frames without a
    closed GOP) is followed in decode order by leading pictures that show before it and
    need the GOP before. With ``primers``, segments start at any keyframe, and one that
    starts at an open keyframe gets the GOP before it as its primer, and starts when its
    first own picture shows. Without, segments start at clean keyframes, unless there are
    none to cut at, where their leading pictures cannot be shown."""
    keys = [i for i, p in enumerate(videos) if p.is_keyframe]
    if not keys:
        raise InputCorrupt("the input's video has no keyframe to start a segment at")
    clean = {
        k for k, end in zip(keys, [*keys[1:], len(videos)], strict=True) if _clean(videos, k, end)
    }
    cut_at = set(keys) if primers else clean
    if not cut_at - {keys[0]} and len(keys) > 1:
        log.warning("every keyframe opens an open GOP; cutting there loses the leading pictures")
        cut_at = set(keys)
    cuts: list[_Cut] = []
    starts: list[int] = []
    for i, packet in enumerate(videos[keys[0] :], start=keys[0]):
        t = _time(packet)
        length = packet.duration * packet.time_base if packet.duration else frame_len
        if not cuts or (i in cut_at and t >= cuts[-1].start + target):
            if cuts and t <= cuts[-1].start:
                raise InputCorrupt(f"video timestamps go backwards at {float(t):.3f} s")
            packet = _with_parameter_sets(packet, codec, extradata)
            cuts.append(_Cut(start=t, end=t + length, packets=[]))
            starts.append(i)
        cut = cuts[-1]
        cut.end = max(cut.end, t + length)
        cut.packets.append((False, packet))
        cut.frames += 1
    if primers:
        _prime_trimmed_start(cuts[0])
    cuts[0].start = min(_time(p) for _, p in cuts[0].packets)
    if primers:
        for cut, first in zip(cuts[1:], starts[1:], strict=True):
            if first in clean:
                continue
            # The GOP before: from the keyframe before this one. Copies, since each
            # packet is also muxed into the segment before (which consumes it).
            before = max(k for k in keys if k < first)
            cut.primer = [
                _copy(_with_parameter_sets(p, codec, extradata) if k == before else p)
                for k, p in enumerate(videos[before:first], start=before)
            ]
            cut.start = min(_time(p) for _, p in cut.packets)
    return cuts


def _prime_trimmed_start(cut: _Cut) -> None:
    """An input trimmed by an edit list (a phone's trim without re-encoding) starts with
    pictures it does not show, which the demuxer marks discarded: in the first segment they
    become its primer, decoded and not shown, where they would otherwise be shown."""
    n = next((i for i, (_, p) in enumerate(cut.packets) if not p.is_discard), len(cut.packets))
    if 0 < n < len(cut.packets):
        cut.primer = [p for _, p in cut.packets[:n]]
        cut.packets = cut.packets[n:]
        cut.frames -= n


def _clean(videos: list[av.Packet[Any]], key: int, end: int) -> bool:
    """Whether no packet of the GOP from ``videos[key]`` shows before its keyframe."""
    t = _time(videos[key])
    return all(_time(p) >= t for p in videos[key + 1 : end])


def _fill_dts(packets: list[av.Packet[Any]], frame_len: Fraction) -> None:
    """Give every video packet a DTS, which MPEG-TS needs and Matroska does not store: the
    demuxer leaves it unset on the first packets of a stream with B-frames. Missing ones
    count back one frame each from the next known DTS (or forward from the last one)."""
    known = [i for i, p in enumerate(packets) if p.dts is not None]
    if len(known) == len(packets):
        return
    if not known:
        for p in packets:
            p.dts = p.pts
        return
    for i in range(known[0] - 1, -1, -1):
        after = packets[i + 1]
        assert after.dts is not None
        packets[i].dts = after.dts - _ticks(packets[i], frame_len)
    for i in range(known[0] + 1, len(packets)):
        p, before = packets[i], packets[i - 1]
        assert before.dts is not None
        if p.dts is None:
            p.dts = before.dts + _ticks(before, frame_len)
            if p.pts is not None:
                p.dts = min(p.dts, p.pts)


def _ticks(packet: av.Packet[Any], frame_len: Fraction) -> int:
    if packet.duration:
        return packet.duration
    assert packet.time_base is not None
    return max(1, round(frame_len / packet.time_base))


def _place_audio(cuts: list[_Cut], packets: list[av.Packet[Any]]) -> None:
    """Each audio packet joins the segment whose video time range it starts in."""
    for cut, following in itertools.pairwise(cuts):
        cut.end = following.start  # segments tile the timeline
    k = 0
    for packet in packets:
        assert packet.pts is not None and packet.time_base is not None
        t = packet.pts * packet.time_base
        while k + 1 < len(cuts) and t >= cuts[k + 1].start:
            k += 1
        cuts[k].packets.append((True, packet))
    for cut in cuts:
        cut.packets.sort(key=_dts_seconds)


def _fill_silence(cuts: list[_Cut], silence: Silence) -> None:
    """Silence for every segment with no sound of its own, once the input has some: its
    sound starts after the picture or ends before it, and the segments (so the HLS
    renditions and the MP4) keep an audio track from start to end."""
    if not any(is_audio for cut in cuts for is_audio, _ in cut.packets):
        return  # a track declared and never filled: no sound to keep
    for cut in cuts:
        if any(is_audio for is_audio, _ in cut.packets):
            continue
        quiet = [(True, p) for p in silence.packets(cut.start, cut.end)]
        cut.packets = sorted(cut.packets + quiet, key=_dts_seconds)
        cut.silent = bool(quiet)


def _dts_seconds(item: tuple[bool, av.Packet[Any]]) -> Fraction:
    packet = item[1]
    ts = packet.dts if packet.dts is not None else packet.pts
    assert ts is not None and packet.time_base is not None
    return ts * packet.time_base


def _check_limits(
    cuts: list[_Cut], max_seconds: float, max_segments: int, target_seconds: float
) -> None:
    span = cuts[-1].end - cuts[0].start
    if span > Fraction(max_seconds):
        raise InputTooLong(f"input lasts {float(span):.1f} s; the limit is {max_seconds:g} s")
    if len(cuts) > max_segments:
        raise InputTooLong(
            f"input splits into {len(cuts)} segments of about {target_seconds:g} s; "
            f"the limit is {max_segments}"
        )


def _write(
    packets: list[tuple[bool, av.Packet[Any]]],
    video: av.VideoStream,
    audio: av.AudioStream | None,
    codec: str,
    aac: AudioToAac | None,
    fmt: str,
    *,
    keep_turn: bool = False,
    annexb: bool = False,
    silence: Silence | None = None,
) -> bytes:
    """One segment file (SEGMENT_FORMATS' container) of copied packets, with the input's
    timestamps unchanged; with ``keep_turn``, Matroska that keeps the display matrix;
    ``annexb``: the packets were filtered from avcC/hvcC to Annex B; ``silence``: the audio
    packets are its."""
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format=fmt, options=_KEEP_TIMESTAMPS) as out:
            # Opaque: the stream takes the template's codec, not an encoder found by the
            # decoder's name (AV1 is decoded by "libdav1d", which names no encoder).
            v_out = out.add_stream_from_template(video, opaque=True)
            if fmt == "matroska" and not keep_turn:
                # Matroska could carry the display matrix, but a go-livepeer orchestrator
                # scales as coded whatever it says while the engine turns: renditions of
                # one input from both would not join up. Unless the caller's segments all
                # go to the engine, every segment goes as coded.
                v_out.set_display_rotation(0)
            if annexb:
                # Packets are Annex B now; the avcC/hvcC header does not describe them.
                v_out.codec_context.extradata = None
            # A segment with no audio packets gets no audio stream: one with no packets has
            # no parameters a reader can find.
            heard = any(is_audio for is_audio, _ in packets)
            a_out = (
                None
                if audio is None or not heard
                else silence.add_stream(out)
                if silence is not None
                else aac.add_stream(out)
                if aac is not None
                else out.add_stream_from_template(audio)
            )
            for is_audio, packet in packets:
                stream = a_out if is_audio else v_out
                assert stream is not None
                packet.stream = stream
                out.mux(packet)
    except av.FFmpegError as e:
        raise InputCorrupt(f"{codec} input cannot be cut into {fmt} segments: {e}") from e
    return buf.getvalue()


def _is_annexb(data: bytes) -> bool:
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


def _nal_units(data: bytes, codec: str) -> list[tuple[int, bytes]]:
    """The NAL units of Annex B data: (type, the unit with a 4-byte start code)."""
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(data):
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    units = []
    for start, following in zip(starts, [*starts[1:], len(data) + 3], strict=True):
        body = data[start : following - 3].rstrip(b"\x00")  # the next start code's zero
        head = body[0] if body else 0
        kind = head & 0x1F if codec == "h264" else (head >> 1) & 0x3F
        units.append((kind, b"\x00\x00\x00\x01" + body))
    return units


def _nal_types(data: bytes, codec: str) -> set[int]:
    return {kind for kind, _ in _nal_units(data, codec)}


def _annexb_parameter_sets(packets: list[av.Packet[Any]], codec: str) -> bytes:
    """The parameter sets of the first filtered packet that carries them, in Annex B: what
    a segment starting at a keyframe without its own (an H.264 recovery point, filtered from
    avcC, which gets them only in front of IDR frames) needs in front of it."""
    for packet in packets:
        units = _nal_units(bytes(packet), codec)
        sets = [unit for kind, unit in units if kind in _PARAMETER_SETS[codec]]
        if sets:
            return b"".join(sets)
    return b""


def _has_parameter_sets(data: bytes, codec: str) -> bool:
    return bool(_nal_types(data, codec) & _PARAMETER_SETS[codec])


def _with_parameter_sets(packet: av.Packet[Any], codec: str, extradata: bytes) -> av.Packet[Any]:
    """An H.264/HEVC Annex B keyframe that starts a segment, with the stream's parameter
    sets in front of it where it lacks them (a copy); any other packet as it is."""
    if (
        codec in _PARAMETER_SETS
        and _is_annexb(extradata)
        and not _has_parameter_sets(bytes(packet), codec)
    ):
        return _copy(packet, extradata)
    return packet


def _copy(packet: av.Packet[Any], header: bytes = b"") -> av.Packet[Any]:
    """A copy of a packet, with ``header`` in front of its data."""
    out = av.Packet(header + bytes(packet))
    out.pts, out.dts, out.time_base = packet.pts, packet.dts, packet.time_base
    out.duration = packet.duration
    out.is_keyframe = packet.is_keyframe
    if packet.stream is not None:  # a filtered packet has none
        out.stream = packet.stream
    return out


def _when(packet: av.Packet[Any]) -> str:
    if packet.pts is None or packet.time_base is None:
        return "unknown time"
    return f"{float(packet.pts * packet.time_base):.3f} s"
