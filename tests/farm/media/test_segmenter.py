"""Splitting long inputs into MPEG-TS segments by stream copy, checked on real clips.

Every segment is reopened with PyAV; times are compared within half a frame (30 fps).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest

from farm.errors import InputCorrupt, InputInvalid, InputTooLong, UnsupportedCodec
from farm.media.codecs import codec_name
from farm.media.engine import EngineOptions, transcode
from farm.media.segmenter import SourceSegment, split
from farm.media.synth import make_segment
from tests.factories import (
    audio_only_ts,
    clip_with_audio,
    coded_clip,
    probe,
    profile,
    trimmed_mp4,
    unsupported_video,
)

FPS = 30
HALF = 0.5 / FPS


def _clip(fmt: str, seconds: float = 10.0, **kwargs: Any) -> bytes:
    return make_segment(320, 240, FPS, seconds, gop_seconds=1.0, fmt=fmt, **kwargs)


@pytest.fixture(scope="module")
def ts10() -> bytes:
    """10 s, 320x240, 30 fps, keyframe every second, H.264 + AAC in MPEG-TS."""
    return _clip("mpegts")


@pytest.fixture(scope="module")
def mp4_10() -> bytes:
    """The same as a faststart MP4 (avcC H.264, raw AAC)."""
    return _clip("mp4")


@pytest.fixture(scope="module")
def split_ts(ts10: bytes) -> list[SourceSegment]:
    return split(ts10, 3.0)


def _check_segments(
    segments: list[SourceSegment], source: bytes, audio: bool = True, fmt: str = "mpegts"
) -> None:
    whole = probe(source)
    assert [s.index for s in segments] == list(range(len(segments)))
    assert sum(s.frames for s in segments) == whole.frames
    assert abs(sum(s.duration for s in segments) - whole.duration) <= HALF
    assert abs(segments[0].start - whole.start) <= HALF
    for s, following in itertools.pairwise(segments):
        assert abs(s.start + s.duration - following.start) <= HALF
    for s in segments:
        seen = probe(s.data)
        assert seen.format_name.split(",")[0] == fmt == s.fmt
        assert seen.key_frames[:1] == [0], f"segment {s.index} does not start on a keyframe"
        assert seen.frames == s.frames
        assert abs(seen.start - s.start) <= HALF, "timestamps are those of the input"
        assert abs(seen.end - (s.start + s.duration)) <= HALF
        assert seen.has_audio == audio
        if audio:
            assert seen.audio_frames > 0


@pytest.mark.parametrize("fmt", ["mpegts", "mp4"])
def test_split_into_three_second_segments(fmt: str, ts10: bytes, mp4_10: bytes) -> None:
    source = ts10 if fmt == "mpegts" else mp4_10
    segments = split(source, 3.0)
    assert [(s.start, s.duration, s.frames) for s in segments] == [
        (0.0, 3.0, 90),
        (3.0, 3.0, 90),
        (6.0, 3.0, 90),
        (9.0, 1.0, 30),
    ]
    _check_segments(segments, source)


def test_audio_is_split_by_time(split_ts: list[SourceSegment], ts10: bytes) -> None:
    def audio_times(data: bytes) -> list[float]:
        with av.open(io.BytesIO(data)) as c:
            return [float(p.pts * p.time_base) for p in c.demux(audio=0) if p.size and p.pts]

    everything = audio_times(ts10)
    parts = [audio_times(s.data) for s in split_ts]
    assert sorted(t for part in parts for t in part) == sorted(everything)
    for s, part in zip(split_ts[1:], parts[1:], strict=True):
        assert min(part) >= s.start and max(part) < s.start + s.duration


def test_each_segment_transcodes(split_ts: list[SourceSegment]) -> None:
    frames = 0
    for s in split_ts:
        (r,) = transcode(s.data, [profile("small", 160, 96, 100_000, fps=FPS)]).renditions
        assert r.frames == s.frames
        assert abs(r.start - s.start) <= HALF and abs(r.duration - s.duration) <= HALF
        frames += r.frames
    assert frames == 10 * FPS


@pytest.mark.parametrize(
    ("target", "starts"),
    [(0.5, [float(k) for k in range(10)]), (2.5, [0.0, 3.0, 6.0, 9.0]), (60.0, [0.0])],
)
def test_cuts_only_at_keyframes(ts10: bytes, target: float, starts: list[float]) -> None:
    assert [s.start for s in split(ts10, target)] == starts


def test_path_and_matroska_video_only(tmp_path: Path) -> None:
    data = _clip("matroska", seconds=2.0, audio=False)
    path = tmp_path / "in.mkv"
    path.write_bytes(data)
    segments = split(path, 1.0)
    assert [(s.start, s.frames) for s in segments] == [(0.0, 30), (1.0, 30)]
    _check_segments(segments, data, audio=False)


@pytest.mark.parametrize(
    ("codec", "fmt", "audio_codec", "name"),
    [
        ("libvpx-vp9", "webm", "libopus", "vp9"),
        ("libvpx", "webm", "libopus", "vp8"),
        ("libsvtav1", "mp4", "aac", "av1"),
    ],
)
def test_webm_and_av1_are_cut_into_matroska_segments(
    codec: str, fmt: str, audio_codec: str, name: str
) -> None:
    # A browser's recording (VP8 or VP9 with Opus in WebM) or AV1: MPEG-TS cannot carry
    # them, so the segments are Matroska, and each one transcodes on its own.
    data = _clip(fmt, seconds=3.0, codec=codec, audio_codec=audio_codec)
    if name == "av1":  # go-livepeer has no AV1 decoder: only a farm cluster can take it
        with pytest.raises(UnsupportedCodec, match="only by this farm's own clusters"):
            split(data, 1.0)
    segments = split(data, 1.0, engine=True)
    assert [(s.start, s.frames, s.fmt, s.engine_only) for s in segments] == [
        (0.0, 30, "matroska", name == "av1"),
        (1.0, 30, "matroska", name == "av1"),
        (2.0, 30, "matroska", name == "av1"),
    ]
    _check_segments(segments, data, fmt="matroska")
    for s in segments:
        assert probe(s.data).codec == name
        # Opus is no audio HLS players decode in MPEG-TS: it is AAC by the segments.
        assert _audio_codec(s.data) == "aac"
        (r,) = transcode(s.data, [profile("small", 160, 96, 100_000, fps=FPS)]).renditions
        assert r.frames == s.frames and abs(r.start - s.start) <= HALF


def _audio_codec(data: bytes) -> str:
    with av.open(io.BytesIO(data)) as c:
        return codec_name(c.streams.audio[0])


@pytest.mark.parametrize(("audio", "expected"), [("flac", "aac"), ("mp3", "mp3"), ("ac3", "ac3")])
def test_audio_hls_players_cannot_decode_is_encoded_to_aac_once(audio: str, expected: str) -> None:
    data = clip_with_audio(audio, "matroska", seconds=2.0, rate=48000)
    segments = split(data, 0.5)
    assert len(segments) > 1
    with av.open(io.BytesIO(data)) as c:
        seconds = sum(f.samples for f in c.decode(audio=0)) / 48000
    heard = 0.0
    for s in segments:
        assert _audio_codec(s.data) == expected
        with av.open(io.BytesIO(s.data)) as c:
            heard += sum(f.samples for f in c.decode(audio=0)) / 48000
    # The whole input's sound, split once (AAC adds its encoder's priming at the start only).
    assert seconds <= heard <= seconds + 2048 / 48000


def test_hevc_in_matroska() -> None:
    # x265 makes open GOPs: for the network, the leading pictures of a cut GOP are copied
    # but do not show. For the engine, the segment carries the GOP before as its primer, and
    # every picture shows once.
    data = make_segment(160, 128, FPS, 2.0, gop_seconds=1.0, fmt="matroska", codec="libx265")
    segments = split(data, 1.0)
    assert len(segments) == 2 and sum(s.frames for s in segments) == 60
    assert not any(s.engine_only or s.show_from is not None for s in segments)
    for s in segments:
        seen = probe(s.data)
        assert (seen.codec, seen.key_frames[:1]) == ("hevc", [0])
    assert abs(segments[0].start + segments[0].duration - segments[1].start) <= HALF
    lossy = sum(_shown(s) for s in segments)
    primed = split(data, 1.0, engine=True)
    assert primed[0].show_from is None and not primed[0].engine_only
    assert primed[1].engine_only and primed[1].show_from == primed[1].start
    assert abs(primed[0].start + primed[0].duration - primed[1].start) <= HALF
    assert lossy < 60 == sum(_shown(s) for s in primed) == sum(s.frames for s in primed)


def test_a_trimmed_mp4_starts_where_its_edit_list_does() -> None:
    # The pictures a phone's trim left in the file unshown prime the first segment for the
    # engine; for the network, which cannot be told, they are copied as they are.
    # Its sound is trimmed alike: what is heard starts where the pictures do, but for the
    # one packet before, which primes the decoder.
    data = trimmed_mp4(_clip("mp4", seconds=4.0), 1.5)
    network = split(data, 1.0)
    assert network[0].start < 0 and not any(s.engine_only for s in network)
    segments = split(data, 1.0, engine=True)
    first = segments[0]
    assert (first.start, first.show_from, first.engine_only) == (0.0, 0.0, True)
    assert sum(s.frames for s in segments) == 75
    assert sum(_shown(s) for s in segments) == 75
    for s in network[:1] + segments[:1]:
        with av.open(io.BytesIO(s.data)) as c:
            heard = next(p for p in c.demux(audio=0) if p.size)
            assert -0.05 < heard.pts * heard.time_base <= 0  # type: ignore[operator]


def test_an_animated_gif_is_one_segment_for_the_engine() -> None:
    # Each GIF picture is drawn over the one before, so its only keyframe is the first: the
    # whole animation is one segment, which only this farm's engine decodes.
    data = coded_clip("gif", "gif", pix_fmt="rgb8", seconds=2.0, fps=10)
    with pytest.raises(UnsupportedCodec, match="only by this farm's own clusters"):
        split(data, 0.5)
    (segment,) = split(data, 0.5, engine=True)
    assert (segment.fmt, segment.engine_only, segment.frames) == ("nut", True, 20)
    assert _shown(segment, fps=10) == 20


def test_h264_open_gops_from_mp4() -> None:
    # x264's open GOPs: keyframes that are recovery points, not IDR frames. For the network,
    # segments start at the clean keyframes only. For the engine, at every keyframe, each
    # with its primer; filtered from avcC, only IDR frames get the parameter sets in front,
    # so a segment (or primer) that starts at a recovery point gets them from the stream,
    # or it could not be decoded at all.
    options = {"preset": "superfast", "x264-params": "open-gop=1:scenecut=0"}
    data = coded_clip("libx264", "mp4", seconds=2.0, gop=12, bframes=3, options=options)
    whole = probe(data).frames
    segments = split(data, 0.4)
    assert not any(s.engine_only for s in segments)
    assert sum(_shown(s, fps=25) for s in segments) == whole
    primed = split(data, 0.4, engine=True)
    assert len(primed) > len(segments)
    assert any(s.show_from is not None for s in primed)
    assert sum(_shown(s, fps=25) for s in primed) == whole


def _shown(segment: SourceSegment, fps: int = FPS) -> int:
    """Pictures the engine takes from a segment to output, checked against what the segment
    says (the renditions are on the profile's ``fps`` grid: within a frame of it)."""
    opts = EngineOptions(show_from=segment.show_from, verify=True)
    result = transcode(segment.data, [profile("small", 160, 96, 100_000, fps=fps)], opts)
    assert result.verification == []
    (r,) = result.renditions
    assert abs(r.frames - result.decoded_frames) <= 1
    assert abs(r.start - segment.start) <= 1 / fps + 1e-9
    return result.decoded_frames


_LEGACY = {
    # What an upload carries besides the web's codecs: (encoder, container, options for
    # coded_clip), and the codec and segment container expected.
    "mpeg2-ts": (("mpeg2video", "mpegts"), {"bframes": 2, "audio": "mp2"}, "mpeg2video", "mpegts"),
    "mpeg2-dvd": (("mpeg2video", "vob"), {"bframes": 2, "audio": "ac3"}, "mpeg2video", "mpegts"),
    "mpeg1-ps": (("mpeg1video", "mpeg"), {"bframes": 2, "audio": "mp2"}, "mpeg1video", "mpegts"),
    "divx-avi": (("mpeg4", "avi"), {"bframes": 2, "audio": "mp3"}, "mpeg4", "matroska"),
    "prores-mov": (
        ("prores_ks", "mov"),
        {"pix_fmt": "yuv422p10le", "gop": 1, "audio": "pcm_s16le"},
        "prores",
        "matroska",
    ),
    "dnxhr-mov": (
        ("dnxhd", "mov"),
        {"pix_fmt": "yuv422p", "size": (512, 288), "options": {"profile": "dnxhr_lb"}},
        "dnxhd",
        "mov",
    ),
    "mjpeg-avi": (
        ("mjpeg", "avi"),
        {"pix_fmt": "yuvj420p", "audio": "pcm_s16le"},
        "mjpeg",
        "matroska",
    ),
    "h263-3gp": (("h263", "3gp"), {"size": (352, 288), "audio": "aac"}, "h263", "mov"),
    "flv1-flv": (("flv", "flv"), {"audio": "mp3"}, "flv1", "nut"),
    "wmv2-asf": (("wmv2", "asf"), {}, "wmv2", "nut"),
    "msmpeg4-avi": (("msmpeg4", "avi"), {"audio": "mp3"}, "msmpeg4v3", "nut"),
}


@pytest.mark.parametrize("case", list(_LEGACY))
def test_camera_editing_and_legacy_codecs_are_cut_for_the_engine(case: str) -> None:
    (encoder, container), kwargs, name, fmt = _LEGACY[case]
    data = coded_clip(encoder, container, seconds=2.0, **kwargs)  # type: ignore[arg-type]
    whole = probe(data)
    assert whole.codec == name
    with pytest.raises(UnsupportedCodec, match="only by this farm's own clusters"):
        split(data, 0.5)
    segments = split(data, 0.5, engine=True)
    assert len(segments) >= 3
    assert {(s.fmt, s.engine_only) for s in segments} == {(fmt, True)}
    for s, following in itertools.pairwise(segments):
        assert abs(s.start + s.duration - following.start) <= HALF
    # Every picture is some segment's own, and is shown once: MPEG-1/2/4 make open GOPs
    # here, and the segments cut at them carry their primers.
    assert sum(s.frames for s in segments) == whole.frames
    assert sum(_shown(s, fps=25) for s in segments) == whole.frames
    if kwargs.get("bframes"):
        assert any(s.show_from is not None for s in segments)
    for s in segments:
        assert probe(s.data).codec == name
        if "audio" in kwargs:
            assert _audio_codec(s.data) in ("aac", "mp3", "ac3")


def _remux(data: bytes, keep: Callable[[int, av.Packet[Any]], bool], fmt: str = "mpegts") -> bytes:
    """A copy of a clip with only the video packets ``keep(n, packet)`` allows."""
    buf = io.BytesIO()
    with (
        av.open(io.BytesIO(data)) as src,
        av.open(buf, "w", format=fmt, options={"avoid_negative_ts": "disabled"}) as dst,
    ):
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        n = 0
        for packet in src.demux():
            if not packet.size:
                continue
            if packet.stream.type == "video":
                n += 1
                if not keep(n - 1, packet):
                    continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return buf.getvalue()


def test_video_before_the_first_keyframe_is_dropped(ts10: bytes) -> None:
    data = _remux(ts10, lambda n, _: n != 0)  # lose the first keyframe
    segments = split(data, 3.0)
    assert [(s.start, s.frames) for s in segments] == [(1.0, 90), (4.0, 90), (7.0, 90)]
    assert probe(segments[0].data).key_frames[:1] == [0]


def test_no_keyframe_at_all() -> None:
    # Matroska keeps the parameter sets in its header, so the stream still opens.
    data = _remux(_clip("matroska", seconds=1.0), lambda n, _: n != 0, "matroska")
    with pytest.raises(InputCorrupt, match="no keyframe"):
        split(data)
    # In MPEG-TS the parameter sets went with the keyframe.
    with pytest.raises(InputCorrupt, match="no picture size"):
        split(_remux(_clip("mpegts", seconds=1.0), lambda n, _: n != 0))


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (b"", InputInvalid, "empty"),
        (
            b"this is plain text, not a media container\n" * 40,
            InputInvalid,
            "not a media container",
        ),
        (audio_only_ts(), InputInvalid, "no video"),
        (unsupported_video("ffv1"), UnsupportedCodec, "'ffv1'"),
        (unsupported_video("mpeg4"), UnsupportedCodec, "only by this farm's own clusters"),
    ],
    ids=["empty", "random", "audio-only", "ffv1", "mpeg4"],
)
def test_bad_input(data: bytes, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        split(data)


def test_truncated_ts(ts10: bytes) -> None:
    with pytest.raises(InputCorrupt, match="truncated"):
        split(ts10[: len(ts10) // 2 + 7])


@pytest.mark.parametrize("kind", ["faststart-mp4", "avi", "flv", "matroska"], ids=lambda k: str(k))
def test_an_upload_cut_short_is_refused_not_cut_shorter(kind: str, mp4_10: bytes) -> None:
    # An interrupted upload or download demuxes without an error up to where it stops; its
    # header (frame count, duration) says it is not whole.
    data = {
        "faststart-mp4": mp4_10,
        "avi": coded_clip("mpeg4", "avi", seconds=4.0),
        "flv": coded_clip("flv", "flv", seconds=4.0),
        "matroska": _clip("matroska", seconds=4.0),
    }[kind]
    assert split(data, 1.0, engine=True)  # whole, it splits
    with pytest.raises(InputCorrupt, match="truncated"):
        split(_cut_at_a_packet(data, 0.6), 1.0, engine=True)


def _cut_at_a_packet(data: bytes, fraction: float) -> bytes:
    """``data`` cut where a packet starts, at about ``fraction`` of its bytes: what an upload
    that stopped at a packet boundary looks like (no damaged packet to give it away)."""
    with av.open(io.BytesIO(data)) as c:
        positions = [p.pos for p in c.demux() if p.pos is not None and p.pos > 0]
    cut = min(positions, key=lambda pos: abs(pos - fraction * len(data)))
    return data[:cut]


def test_limits(ts10: bytes) -> None:
    with pytest.raises(InputTooLong, match="limit is 5 s"):
        split(ts10, 3.0, max_seconds=5)
    with pytest.raises(InputTooLong, match=r"4 segments .* limit is 3"):
        split(ts10, 3.0, max_segments=3)
    assert len(split(ts10, 3.0, max_segments=4)) == 4
    with pytest.raises(ValueError, match="target_seconds"):
        split(ts10, 0)


def _strip_parameter_sets(data: bytes) -> bytes:
    """An H.264 Annex B access unit without its SPS and PPS NAL units."""
    starts = [i for i in range(len(data) - 3) if data[i : i + 3] == b"\x00\x00\x01"]
    units = [
        data[a : b - (1 if data[b - 1 : b] == b"\x00" else 0)]
        for a, b in zip(starts, [*starts[1:], len(data) + 1], strict=True)
    ]
    return b"\x00" + b"".join(u for u in units if u[3] & 0x1F not in (7, 8))


def test_parameter_sets_only_at_the_start(ts10: bytes) -> None:
    # Some encoders send SPS/PPS once: every segment still needs them before its keyframe
    # (put there by the segmenter, and by the MPEG-TS muxer from the stream header).
    buf = io.BytesIO()
    with (
        av.open(io.BytesIO(ts10)) as src,
        av.open(buf, "w", format="mpegts", options={"avoid_negative_ts": "disabled"}) as dst,
    ):
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if not packet.size:
                continue
            out = packet
            if packet.stream.type == "video" and packet.is_keyframe and packet.pts:
                out = av.Packet(_strip_parameter_sets(bytes(packet)))
                out.pts, out.dts, out.time_base = packet.pts, packet.dts, packet.time_base
                out.is_keyframe = True
            out.stream = streams[packet.stream.index]
            dst.mux(out)
    segments = split(buf.getvalue(), 3.0)
    assert [probe(s.data).frames for s in segments] == [90, 90, 90, 30]
