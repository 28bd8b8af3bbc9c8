"""Verification catches each kind of damaged rendition, and passes good ones."""

from __future__ import annotations

import io
import threading
import time

import av
import pytest

from farm.media.damage import damage
from farm.media.engine import EngineOptions, transcode
from farm.media.output import GrowingBuffer, OutputFile
from farm.media.profiles import VideoProfile
from farm.media.result import Rendition, TranscodeResult
from farm.media.synth import make_segment
from farm.media.verify import FollowingVerifier, verify_rendition, verify_result

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
        ("corrupt", {"decode"}),
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


# -- verification while the rendition is written ------------------------------------------


def _follow(r: Rendition, input_duration: float, chunk: int = 188 * 40) -> set[str]:
    """Write a rendition's bytes slowly into a GrowingBuffer that a FollowingVerifier reads."""
    buffer = GrowingBuffer()
    verifier = FollowingVerifier(buffer, r.fmt, r.profile.name)
    verifier.start()

    def write() -> None:
        for at in range(0, len(r.data), chunk):
            buffer.write(r.data[at : at + chunk])
            time.sleep(0.001)
        buffer.close()

    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    return {f.reason for f in verifier.verdict(r, input_duration, timeout=10)}


@pytest.mark.parametrize(
    "kind", [None, "truncate", "resize", "pixels", "keyframe", "corrupt", "picture"]
)
def test_following_gives_the_finished_verdict(good: TranscodeResult, kind: str | None) -> None:
    result = damage(good, kind) if kind else good
    for r in result.renditions:
        after = {f.reason for f in verify_rendition(r, result.input_duration)}
        assert _follow(r, result.input_duration) == after
        if kind not in (None, "picture") and r.profile.name == "a":
            assert after  # the damage is there to be found


def test_following_reads_as_the_writer_writes(good: TranscodeResult) -> None:
    r = good.renditions[0]
    buffer = GrowingBuffer()
    reader = buffer.reader()
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(reader.read(10)))
    t.start()
    t.join(0.2)
    assert t.is_alive()  # nothing written yet: the reader waits
    buffer.write(r.data[:4])
    t.join(2)
    assert got == [r.data[:4]]
    buffer.close()
    assert reader.read(10) == b""  # closed and read to the end
    with pytest.raises(ValueError, match="closed"):
        buffer.write(b"x")


def test_a_writer_that_stops_early_is_a_failure_not_a_hang(good: TranscodeResult) -> None:
    r = good.renditions[0]
    buffer = GrowingBuffer()
    verifier = FollowingVerifier(buffer, r.fmt, r.profile.name)
    verifier.start()
    buffer.write(r.data[: len(r.data) // 3])
    buffer.close()
    failures = verifier.verdict(r, good.input_duration, timeout=10)
    assert not verifier.is_alive()
    # It read all that was written, which is not what the rendition reports.
    assert failures and failures[0].reason == "unreadable", failures


def test_a_writer_that_never_closes_times_out(good: TranscodeResult) -> None:
    r = good.renditions[0]
    buffer = GrowingBuffer()
    verifier = FollowingVerifier(buffer, r.fmt, r.profile.name)
    verifier.start()
    buffer.write(r.data[:1000])
    failures = verifier.verdict(r, good.input_duration, timeout=0.3)
    assert [f.reason for f in failures] == ["timeout"]
    buffer.close()
    verifier.join(5)
    assert not verifier.is_alive()


def test_garbage_is_unreadable(good: TranscodeResult) -> None:
    r = good.renditions[0]
    buffer = GrowingBuffer()
    verifier = FollowingVerifier(buffer, r.fmt, r.profile.name)
    verifier.start()
    buffer.write(bytes(range(256)) * 40)
    buffer.close()
    failures = verifier.verdict(r, good.input_duration, timeout=10)
    assert failures and failures[0].reason in ("unreadable", "empty"), failures


def test_only_appending_formats_are_followed() -> None:
    with pytest.raises(ValueError, match="cannot be read while it is written"):
        OutputFile("mp4", follow=True)
    out = OutputFile("mpegts")
    with pytest.raises(ValueError, match="not opened to be followed"):
        out.followed  # noqa: B018
    out.abort()


@pytest.mark.parametrize("fmt", ["mpegts", "mp4", "fmp4"])
def test_engine_verifies_every_format(fmt: str) -> None:
    # MPEG-TS and fMP4 are verified while they are written, MP4 once it is finished (its
    # faststart index comes last); the verdict and the timings read the same either way.
    result = transcode(make_segment(320, 240, 30, 1.0), LADDER, EngineOptions(fmt=fmt, verify=True))
    assert result.verification == []
    assert result.timings["verify"] > 0
    assert [r.fmt for r in result.renditions] == [fmt, fmt]


@pytest.mark.parametrize("fmt", ["mpegts", "fmp4"])
def test_following_output_is_the_same_bytes(fmt: str) -> None:
    # A followed output is not seekable; its muxer must write the same bytes all the same.
    source = transcode(make_segment(320, 240, 30, 1.0), LADDER[:1], EngineOptions(fmt=fmt))

    def remux(follow: bool) -> bytes:
        out = OutputFile(fmt, follow=follow)
        with av.open(io.BytesIO(source.renditions[0].data)) as src:
            streams = {s.index: out.container.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is None:
                    continue
                packet.stream = streams[packet.stream.index]
                out.container.mux(packet)
        return out.finish()

    plain = remux(False)
    assert remux(True) == plain and len(plain) > 10_000


@pytest.mark.parametrize("kind", [None, "truncate", "keyframe", "corrupt"])
def test_following_fragmented_mp4(kind: str | None) -> None:
    result = transcode(make_segment(320, 240, 30, 1.0), LADDER, EngineOptions(fmt="fmp4"))
    if kind:
        result = damage(result, kind)
    r = result.renditions[0]
    after = {f.reason for f in verify_rendition(r, result.input_duration)}
    assert _follow(r, result.input_duration, chunk=4096) == after
    assert bool(after) == bool(kind)


def test_a_gpu_that_cannot_decode_falls_back_to_the_cpu(
    good: TranscodeResult, caplog: pytest.LogCaptureFixture
) -> None:
    # Where NVDEC does not work (here: no GPU at all), verifying "on GPU 0" is done on the
    # CPU, with the same verdicts, instead of failing good renditions.
    for kind in (None, "truncate"):
        result = damage(good, kind) if kind else good
        r = result.renditions[0]
        expected = {f.reason for f in verify_rendition(r, result.input_duration)}
        assert {f.reason for f in verify_rendition(r, result.input_duration, gpu=0)} == expected
        buffer = GrowingBuffer()
        verifier = FollowingVerifier(buffer, r.fmt, r.profile.name, gpu=0)
        verifier.start()
        buffer.write(r.data)
        buffer.close()
        assert {f.reason for f in verifier.verdict(r, result.input_duration, 10)} == expected
    assert "verifying on CPU" in caplog.text
