"""Measuring an input by its packets: what the gateway prices a segment by."""

from __future__ import annotations

import io

import av
import pytest
from av.stream import Disposition

from farm.errors import InputInvalid, InputTooLong
from farm.media.codecs import codec_name
from farm.media.engine import EngineOptions, transcode
from farm.media.source import measure
from farm.media.synth import make_segment
from tests.factories import clip, mp3_with_cover, picture_track_first, probe, profile


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
