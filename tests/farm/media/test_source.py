"""Measuring an input by its packets: what the gateway prices a segment by."""

from __future__ import annotations

import pytest

from farm.errors import InputInvalid, InputTooLong
from farm.media.source import measure
from farm.media.synth import make_segment


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
