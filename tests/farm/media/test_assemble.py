"""Assembling transcoded segments into HLS and MP4, checked by reopening everything."""

from __future__ import annotations

import io
import itertools
import math
import re
from pathlib import Path

import av
import pytest

from farm.errors import InputInvalid
from farm.media.assemble import concat_mp4, hls
from farm.media.engine import transcode
from farm.media.playlist import read_playlist
from farm.media.segmenter import split
from farm.media.synth import make_segment
from tests.factories import bright_quarter, probe, profile, sound_until, turned_clip

FPS = 30
HALF = 0.5 / FPS
PROFILES = [profile("p144", 256, 144, 200_000, fps=FPS), profile("p96", 160, 96, 100_000, fps=FPS)]


@pytest.fixture(scope="module")
def renditions() -> dict[str, list[tuple[str, bytes, float]]]:
    """A 10 s clip split into ~3 s segments, each transcoded into two profiles."""
    source = make_segment(320, 240, FPS, 10.0, gop_seconds=1.0)
    out: dict[str, list[tuple[str, bytes, float]]] = {p.name: [] for p in PROFILES}
    for segment in split(source, 3.0):
        for r in transcode(segment.data, PROFILES).renditions:
            out[r.profile.name].append((f"{segment.index}.ts", r.data, segment.duration))
    return out


def _attributes(master: str) -> dict[str, dict[str, str]]:
    """Each variant URI of a master playlist -> its EXT-X-STREAM-INF attributes."""
    lines = master.splitlines()
    out = {}
    for line, uri in itertools.pairwise(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            pairs = re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1])
            out[uri] = {k: v.strip('"') for k, v in pairs}
    return out


def test_hls(renditions: dict[str, list[tuple[str, bytes, float]]], tmp_path: Path) -> None:
    files = hls(renditions)
    assert set(files) == {"index.m3u8"} | {
        f"{name}/{file}" for name in ("p144", "p96") for file in ("index.m3u8", *_names(4))
    }
    for path, data in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    master = files["index.m3u8"].decode()
    variants = _attributes(master)
    assert list(variants) == ["p144/index.m3u8", "p96/index.m3u8"]  # the renditions' order
    for p in PROFILES:
        attrs = variants[f"{p.name}/index.m3u8"]
        assert attrs["RESOLUTION"] == f"{p.width}x{p.height}"
        # RFC 8216: BANDWIDTH is the peak segment bit rate, measured, not the profile's
        # nominal one (which real segments exceed); AVERAGE-BANDWIDTH the average.
        rates = [len(data) * 8 / d for _, data, d in renditions[p.name]]
        assert int(attrs["BANDWIDTH"]) == math.ceil(max(rates))
        total = sum(len(data) * 8 for _, data, _ in renditions[p.name])
        seconds = sum(d for _, _, d in renditions[p.name])
        assert int(attrs["AVERAGE-BANDWIDTH"]) == math.ceil(total / seconds)
        assert int(attrs["AVERAGE-BANDWIDTH"]) <= int(attrs["BANDWIDTH"])
        # CODECS from the stream: x264's High profile (0x64) at the level it chose, AAC-LC.
        video, audio = attrs["CODECS"].split(",")
        with av.open(io.BytesIO(renditions[p.name][0][1])) as c:
            level = c.streams.video[0].codec_context.level
        assert re.fullmatch(rf"avc1\.64[0-9a-f]{{2}}{level:02x}", video), video
        assert audio == "mp4a.40.2"
    # The master playlist leads to the first variant's segments.
    assert [s.path.name for s in read_playlist(tmp_path / "index.m3u8")] == _names(4)
    for name, width, height in (("p144", 256, 144), ("p96", 160, 96)):
        text = files[f"{name}/index.m3u8"].decode()
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
        listed = read_playlist(tmp_path / name / "index.m3u8")
        assert [s.path.name for s in listed] == _names(4)
        assert abs(sum(s.duration or 0 for s in listed) - 10.0) <= HALF
        frames = 0
        for s in listed:
            seen = probe(s.path.read_bytes())
            assert (seen.width, seen.height, seen.key_frames[:1]) == (width, height, [0])
            assert seen.has_audio
            frames += seen.frames
        assert frames == 10 * FPS


def _names(n: int) -> list[str]:
    return [f"{k}.ts" for k in range(n)]


@pytest.mark.parametrize(("name", "size"), [("p144", (256, 144)), ("p96", (160, 96))])
def test_concat_mp4(
    renditions: dict[str, list[tuple[str, bytes, float]]], name: str, size: tuple[int, int]
) -> None:
    data = concat_mp4([d for _, d, _ in renditions[name]])
    seen = probe(data)
    assert seen.format_name.startswith("mov")
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat"), "faststart"
    assert (seen.codec, seen.width, seen.height) == ("h264", *size)
    assert seen.frames == seen.header_frames == 10 * FPS
    assert abs(seen.start) <= HALF and abs(seen.duration - 10.0) <= HALF
    assert seen.key_frames[0] == 0 and len(seen.key_frames) >= 4
    assert seen.has_audio and seen.audio_frames > 400  # 10 s of 1024-sample AAC at 48 kHz


def test_concat_one_segment(renditions: dict[str, list[tuple[str, bytes, float]]]) -> None:
    seen = probe(concat_mp4([renditions["p96"][1][1]]))
    assert seen.frames == 90 and abs(seen.start - 3.0) <= HALF


def test_concat_video_only() -> None:
    source = make_segment(160, 96, FPS, 2.0, gop_seconds=1.0, audio=False)
    parts = [transcode(s.data, PROFILES[1:]).renditions[0].data for s in split(source, 1.0)]
    seen = probe(concat_mp4(parts))
    assert (seen.frames, seen.has_audio) == (60, False)


@pytest.mark.parametrize(("degrees", "turned"), [(90, 270), (-90, 90), (180, 180)])
def test_a_turned_input_is_shown_turned_in_its_mp4(degrees: int, turned: int) -> None:
    # MPEG-TS segments cannot carry the input's display matrix: splitting keeps the turn, and
    # the assembled MP4 carries it again, so players show the pictures as the input's were.
    segments = split(turned_clip(degrees), 0.5)
    assert [s.rotation for s in segments] == [turned] * len(segments) and len(segments) >= 1
    parts = [transcode(s.data, PROFILES[:1]).renditions[0].data for s in segments]
    with av.open(io.BytesIO(concat_mp4(parts, rotation=segments[0].rotation))) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 30 and {f.rotation % 360 for f in frames} == {degrees % 360}
    with av.open(io.BytesIO(concat_mp4(parts))) as c:
        assert next(c.decode(video=0)).rotation == 0


def test_a_turned_webm_is_split_as_coded_like_mpeg_ts() -> None:
    # Matroska segments could carry the display matrix, but an orchestrator that ignores it
    # (go-livepeer's) and the engine, which turns, would return renditions of one input that
    # do not join up: the segments go as coded, and the MP4 carries the turn, as for H.264.
    segments = split(turned_clip(90, fmt="webm", codec="libvpx-vp9"), 0.5)
    assert {(s.fmt, s.rotation) for s in segments} == {("matroska", 270)}
    for s in segments:
        with av.open(io.BytesIO(s.data)) as c:
            assert next(c.decode(video=0)).rotation == 0
    parts = [transcode(s.data, PROFILES[:1]).renditions[0].data for s in segments]
    assert bright_quarter(parts[0]) == ("top-left", PROFILES[0].width, PROFILES[0].height)
    with av.open(io.BytesIO(concat_mp4(parts, rotation=segments[0].rotation))) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 30 and {f.rotation % 360 for f in frames} == {90}


def _sound(data: bytes) -> tuple[float, float]:
    """Seconds of audio a file decodes to, and its loudest sample."""
    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(audio=0))
    seconds = sum(f.samples for f in frames) / frames[0].sample_rate
    return seconds, max(float(abs(f.to_ndarray()).max()) for f in frames)


@pytest.mark.parametrize("audio", ["aac", "mp3", "ac3"])
def test_sound_that_ends_before_the_picture_is_followed_by_silence(audio: str) -> None:
    # The segments the sound does not reach get silence in its codec, so every rendition,
    # the HLS variant and the MP4 keep one audio track from start to end.
    clip = make_segment(160, 96, FPS, 3.0, gop_seconds=1.0, fmt="matroska", audio_codec=audio)
    data = sound_until(clip, 1.0, "matroska")
    segments = split(data, 1.0)
    assert len(segments) == 3
    sounds = [_sound(s.data) for s in segments]
    assert sounds[0][1] > 0.1  # the tone
    for seconds, peak in sounds[1:]:
        assert peak < 1e-3 and 1.0 - 0.04 <= seconds <= 1.0
    assert {_audio_codec(s.data) for s in segments} == {_audio_codec(data)}
    parts = [transcode(s.data, PROFILES[1:]).renditions[0].data for s in segments]
    assert all(probe(p).has_audio for p in parts)
    seen = probe(concat_mp4(parts))
    assert seen.frames == 90 and seen.has_audio
    assert _sound(concat_mp4(parts))[0] >= 3.0 - 0.08


def _audio_codec(data: bytes) -> str:
    with av.open(io.BytesIO(data)) as c:
        return str(c.streams.audio[0].codec_context.name)


def test_sound_that_starts_after_the_picture_is_preceded_by_silence() -> None:
    data = sound_until(make_segment(160, 96, FPS, 3.0, gop_seconds=1.0), 9.0, since=1.0)
    segments = split(data, 1.0)
    assert [probe(s.data).has_audio for s in segments] == [True, True, True]
    assert _sound(segments[0].data)[1] < 1e-3 and _sound(segments[1].data)[1] > 0.1
    parts = [transcode(s.data, PROFILES[1:]).renditions[0].data for s in segments]
    files = hls({"p96": [(f"{i}.ts", p, 1.0) for i, p in enumerate(parts)]})
    assert "mp4a.40.2" in files["index.m3u8"].decode()
    seen = probe(concat_mp4(parts))
    assert seen.frames == 90 and seen.has_audio


def test_a_track_declared_and_never_filled_stays_out() -> None:
    data = sound_until(make_segment(160, 96, FPS, 2.0, gop_seconds=1.0), 0.0)
    assert not any(probe(s.data).has_audio for s in split(data, 1.0))


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_a_turned_input_split_to_keep_its_turn_comes_back_upright(fmt: str) -> None:
    # For a caller that can send segments to the engine: Matroska segments keep the matrix,
    # only the engine takes them, it turns each rendition as it turns the whole input, and no
    # output needs one.
    data = turned_clip(90, fmt=fmt)
    segments = split(data, 0.5, engine=True)
    assert {(s.fmt, s.rotation, s.engine_only) for s in segments} == {("matroska", 0, True)}
    parts = [transcode(s.data, PROFILES[:1]).renditions[0].data for s in segments]
    whole = transcode(data, PROFILES[:1]).renditions[0].data
    assert bright_quarter(parts[0]) == bright_quarter(whole) == ("bottom-left", 144, 256)
    with av.open(io.BytesIO(concat_mp4(parts, rotation=segments[0].rotation))) as c:
        assert {f.rotation for f in c.decode(video=0)} == {0}
    plain = split(make_segment(160, 96, FPS, 1.0), 0.5, engine=True)
    # An input that is not turned: as before, and any orchestrator can take it.
    assert {(s.fmt, s.engine_only) for s in plain} == {("mpegts", False)}


def test_concat_errors(renditions: dict[str, list[tuple[str, bytes, float]]]) -> None:
    with pytest.raises(ValueError, match="no segments"):
        concat_mp4([])
    with pytest.raises(InputInvalid, match="segment 1"):
        concat_mp4([renditions["p96"][0][1], b"not media at all"])
    with pytest.raises(InputInvalid, match="segment 1 has"):
        concat_mp4([renditions["p96"][0][1], renditions["p144"][1][1]])


def test_hls_errors(renditions: dict[str, list[tuple[str, bytes, float]]]) -> None:
    with pytest.raises(ValueError, match="at least one"):
        hls({})
    with pytest.raises(ValueError, match="not a plain file name"):
        hls({"p96": [("../x.ts", b"", 1.0)]})
    with pytest.raises(ValueError, match="no segments"):
        hls({"p96": []})
    with pytest.raises(InputInvalid):
        hls({"p96": [("0.ts", b"not media", 1.0)]})
