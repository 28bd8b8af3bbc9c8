"""RFC 6381 codec strings read from encoded renditions, checked against what FFmpeg reports."""

from __future__ import annotations

import io

import av
import pytest

from farm.errors import InputInvalid
from farm.media.codec_strings import codecs_of
from farm.media.engine import EngineOptions, transcode
from farm.media.synth import make_segment
from tests.factories import profile


@pytest.fixture(scope="module")
def source() -> bytes:
    return make_segment(320, 240, 30, 0.5)


def _encode(source: bytes, encoder: str, fmt: str) -> tuple[bytes, av.VideoCodecContext]:
    p = profile("r", 256, 144, 200_000, fps=30, encoder=encoder)
    data = transcode(source, [p], EngineOptions(fmt=fmt, prefer_gpu=False)).renditions[0].data
    with av.open(io.BytesIO(data)) as c:
        return data, c.streams.video[0].codec_context


@pytest.mark.parametrize("fmt", ["mpegts", "mp4"])
def test_h264(source: bytes, fmt: str) -> None:
    data, ctx = _encode(source, "H.264", fmt)
    assert ctx.profile == "High"
    # profile_idc 100, x264's constraint flags (none for High), level_idc as FFmpeg reads it.
    assert codecs_of(data) == f"avc1.6400{ctx.level:02x},mp4a.40.2"


@pytest.mark.parametrize("fmt", ["mpegts", "mp4"])
def test_hevc(source: bytes, fmt: str) -> None:
    data, ctx = _encode(source, "HEVC", fmt)
    assert ctx.profile == "Main"
    # Main (1), compatible with Main and Main 10 (flags 1 and 2, reversed: 6), Main tier,
    # then the progressive and frame-only constraint flags x265 sets.
    assert codecs_of(data) == f"hvc1.1.6.L{ctx.level}.90,mp4a.40.2"


def test_av1(source: bytes) -> None:
    data, ctx = _encode(source, "AV1", "mp4")
    assert ctx.profile == "Main"
    # Main profile 0, seq_level_idx 0 (level 2.0) for 256x144, Main tier, 8 bit.
    assert codecs_of(data) == "av01.0.00M.08,mp4a.40.2"


def test_vp9(source: bytes) -> None:
    data, ctx = _encode(source, "VP9", "mp4")
    assert ctx.profile == "Profile 0"
    # 256x144 fits level 1's picture size, but at 30 fps its sample rate needs level 1.1.
    assert codecs_of(data) == "vp09.00.11.08,mp4a.40.2"


def test_not_media() -> None:
    with pytest.raises(InputInvalid):
        codecs_of(b"not media at all")
