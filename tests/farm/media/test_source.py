"""Measuring an input by its packets: what the gateway prices a segment by."""

from __future__ import annotations

import io

import av
import pytest
from av.stream import Disposition

from farm.errors import InputInvalid, InputTooLong, UnsupportedCodec
from farm.media.codecs import codec_name
from farm.media.engine import EngineOptions, transcode
from farm.media.source import measure
from farm.media.synth import make_segment
from tests.factories import (
    clip,
    mp3_with_cover,
    picture_track_first,
    probe,
    profile,
    sound_until,
)


@pytest.mark.parametrize("fmt", ["mpegts", "mp4"])
@pytest.mark.parametrize(("seconds", "fps"), [(1.0, 30), (2.0, 30), (2.0, 60)])
def test_a_segment_measures_its_video_span_and_frames(fmt: str, seconds: float, fps: int) -> None:
    length = measure(make_segment(320, 240, fps, seconds, fmt=fmt))
    assert length.frames == round(seconds * fps)
    assert length.duration == pytest.approx(seconds, abs=1e-3)


def test_measuring_checks_the_input_and_its_length() -> None:
    with pytest.raises(InputInvalid):
        measure(b"not video" * 100)
    with pytest.raises(InputTooLong):
        measure(make_segment(160, 120, 30, 2.0), max_seconds=1.5)


def test_a_picture_track_before_the_video_is_passed_over() -> None:
    data = picture_track_first(clip(seconds=1.0))
    with av.open(io.BytesIO(data)) as c:
        assert [codec_name(s) for s in c.streams.video] == ["mjpeg", "h264"]
    result = transcode(data, [profile("240p", 320, 240)], EngineOptions(fmt="mpegts"))
    out = probe(result.renditions[0].data)
    assert (out.codec, out.width, out.height, len(out.times)) == ("h264", 320, 240, 30)
    assert measure(data).frames == 30


def test_audio_with_cover_art_is_refused_as_having_no_video() -> None:
    data = mp3_with_cover()
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video[0].disposition & Disposition.attached_pic
    with pytest.raises(InputInvalid, match="no video stream, only a cover picture"):
        transcode(data, [profile("240p", 320, 240)], EngineOptions(fmt="mpegts"))


def test_an_audio_track_with_nothing_in_it_is_left_out() -> None:
    # An MPEG-TS audio PID with no packets: FFmpeg finds no channels or rate for it, and a
    # rendition's stream made from it could not be written (a retryable failure, every time).
    data = sound_until(clip(seconds=1.0), 0.0)
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.audio and c.streams.audio[0].codec_context.channels == 0
    result = transcode(data, [profile("240p", 320, 240)], EngineOptions(fmt="mpegts"))
    out = probe(result.renditions[0].data)
    assert (len(out.times), out.has_audio) == (30, False)


def test_a_video_codec_ffmpeg_does_not_know_is_refused_by_name() -> None:
    data = make_segment(320, 240, 30, 1.0, fmt="matroska")
    unknown = data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ")  # a codec id nobody has
    with av.open(io.BytesIO(unknown)) as c:
        assert c.streams.video[0].codec_context is None
    with pytest.raises(UnsupportedCodec, match="'unknown to FFmpeg' is not supported"):
        transcode(unknown, [profile("240p", 320, 240)], EngineOptions(fmt="mpegts"))
