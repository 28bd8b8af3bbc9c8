"""Assembling transcoded segments into HLS and MP4, checked by reopening everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.errors import InputInvalid
from farm.media.assemble import concat_mp4, hls
from farm.media.engine import transcode
from farm.media.playlist import read_playlist
from farm.media.segmenter import split
from farm.media.synth import make_segment
from tests.factories import probe, profile

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


VARIANTS = [("p144", 200_000, 256, 144), ("p96", 100_000, 160, 96)]


def test_hls(renditions: dict[str, list[tuple[str, bytes, float]]], tmp_path: Path) -> None:
    files = hls(renditions, VARIANTS)
    assert set(files) == {"index.m3u8"} | {
        f"{name}/{file}" for name in ("p144", "p96") for file in ("index.m3u8", *_names(4))
    }
    for path, data in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    master = files["index.m3u8"].decode()
    assert "BANDWIDTH=200000,RESOLUTION=256x144\np144/index.m3u8" in master
    assert "BANDWIDTH=100000,RESOLUTION=160x96\np96/index.m3u8" in master
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


def test_concat_errors(renditions: dict[str, list[tuple[str, bytes, float]]]) -> None:
    with pytest.raises(ValueError, match="no segments"):
        concat_mp4([])
    with pytest.raises(InputInvalid, match="segment 1"):
        concat_mp4([renditions["p96"][0][1], b"not media at all"])
    with pytest.raises(InputInvalid, match="segment 1 has"):
        concat_mp4([renditions["p96"][0][1], renditions["p144"][1][1]])


def test_hls_errors(renditions: dict[str, list[tuple[str, bytes, float]]]) -> None:
    with pytest.raises(ValueError, match="do not match"):
        hls(renditions, VARIANTS[:1])
    with pytest.raises(ValueError, match="not a plain file name"):
        hls({"p96": [("../x.ts", b"", 1.0)]}, VARIANTS[1:])
    with pytest.raises(ValueError, match="no segments"):
        hls({"p96": []}, VARIANTS[1:])
