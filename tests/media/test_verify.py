"""Verification catches each kind of damaged rendition, and passes good ones."""

from __future__ import annotations

import pytest

from farm.media.damage import damage
from farm.media.engine import EngineOptions, TranscodeResult, transcode
from farm.media.profiles import VideoProfile
from farm.media.synth import make_segment
from farm.media.verify import verify_result

LADDER = [
    VideoProfile("a", 320, 180, 400_000, fps=30),
    VideoProfile("b", 256, 144, 300_000, fps=30),
]


@pytest.fixture(scope="module")
def good() -> TranscodeResult:
    return transcode(make_segment(320, 240, 30, 1.0), LADDER, EngineOptions(verify=True))


def test_good_renditions_pass(good: TranscodeResult) -> None:
    assert good.verification == []
    assert verify_result(good).ok
    assert good.timings["verify"] > 0


@pytest.mark.parametrize(
    ("kind", "reasons"),
    [
        ("truncate", {"duration", "pixel_count"}),
        ("resize", {"wrong_size"}),
        ("pixels", {"pixel_count"}),
        ("keyframe", {"no_keyframe"}),
    ],
)
def test_each_damage_is_caught(good: TranscodeResult, kind: str, reasons: set[str]) -> None:
    report = verify_result(damage(good, kind))
    assert not report.ok
    found = {f.reason for f in report.failures}
    assert reasons <= found, report.failures
    assert all(f.rendition == "a" for f in report.failures)  # only the damaged one


def test_a_different_picture_passes_local_checks(good: TranscodeResult) -> None:
    # Only a comparison with another orchestrator's output can see this one.
    assert verify_result(damage(good, "picture")).ok


def test_frame_rate_check() -> None:
    r = transcode(
        make_segment(320, 240, 30, 1.0, audio=False), [VideoProfile("x", 320, 180, 400_000, fps=25)]
    )
    wrong = r.renditions[0]
    wrong = type(wrong)(
        **{
            **{f: getattr(wrong, f) for f in wrong.__dataclass_fields__},
            "profile": VideoProfile("x", 320, 180, 400_000, fps=30),
        }
    )
    report = verify_result(
        type(r)(**{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "renditions": [wrong]})
    )
    assert "frame_rate" in {f.reason for f in report.failures}
