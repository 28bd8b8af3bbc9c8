"""Bad input: every failure is one typed error with a clear message, never partial success."""

from __future__ import annotations

import io
import random
from pathlib import Path

import av
import numpy as np
import pytest

from farm.errors import (
    FarmError,
    InputCorrupt,
    InputInvalid,
    InputTooLong,
    PermanentError,
    RetryableError,
    TranscodeTimeout,
    UnsupportedCodec,
)
from farm.media.engine import EngineOptions, transcode
from farm.media.profiles import VideoProfile
from farm.media.result import TranscodeResult
from tests.factories import (
    audio_only_ts,
    clip,
    mp4_clip,
    profile,
    trimmed_mp4,
    ts_packets,
    unsupported_video,
)

PROFILES = [profile("r", 256, 144, 200_000, fps=30)]
#: Damage found mid-decode is checked with renditions encoded inline: with rendition threads
#: the engine can leak a thread and stall 5 s on that path (test_failure_mid_decode_...).
SERIAL = EngineOptions(parallel=False)


def _run(data: object, options: EngineOptions | None = None) -> TranscodeResult:
    return transcode(data, PROFILES, options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "base"),
    [
        (InputInvalid, PermanentError),
        (InputCorrupt, PermanentError),
        (InputTooLong, PermanentError),
        (UnsupportedCodec, PermanentError),
        (TranscodeTimeout, RetryableError),
    ],
)
def test_error_kinds(error: type[FarmError], base: type[FarmError]) -> None:
    assert issubclass(error, base)
    other = RetryableError if base is PermanentError else PermanentError
    assert not issubclass(error, other)


def test_empty_bytes() -> None:
    with pytest.raises(InputInvalid, match="empty"):
        _run(b"")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.ts"
    path.touch()
    with pytest.raises(InputInvalid, match="empty"):
        _run(path)


@pytest.mark.parametrize("size", [100, 188 * 40])
def test_random_bytes(size: int) -> None:
    with pytest.raises(InputInvalid, match="not a media container"):
        _run(random.Random(size).randbytes(size))  # seeded: the same bytes every run


def test_raw_stream_without_timestamps_says_so() -> None:
    # A raw H.264 elementary stream decodes, but nothing says when its frames are.
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(InputInvalid, match=r"have no timestamps .*container"):
        transcode(buf.getvalue(), [profile()])


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(InputInvalid, match="cannot read input"):
        _run(tmp_path / "nope.ts")
    with pytest.raises(InputInvalid, match="not a file"):
        _run(tmp_path)


def test_audio_only() -> None:
    with pytest.raises(InputInvalid, match="no video") as info:
        _run(audio_only_ts())
    assert "audio" in str(info.value)


@pytest.fixture(scope="module")
def ts_with_audio() -> bytes:
    return clip(320, 240, 30, 1.0, audio=True)


@pytest.fixture(scope="module")
def ts_video_only() -> bytes:
    return clip(320, 240, 30, 1.0, audio=False)


def test_truncated_ts_not_packet_aligned(ts_with_audio: bytes) -> None:
    cut = len(ts_with_audio) // 2 + 7
    assert cut % 188
    with pytest.raises(InputCorrupt, match="not a whole number of MPEG-TS packets"):
        _run(ts_with_audio[:cut])


@pytest.mark.parametrize("which", [-3, -2, -1])
@pytest.mark.parametrize("audio", [True, False], ids=["with-audio", "video-only"])
def test_truncated_ts_inside_a_last_video_frame(
    which: int, audio: bool, ts_with_audio: bytes, ts_video_only: bytes
) -> None:
    # Cut on a 188-byte boundary inside one of the last video frames' PES packets.
    data = ts_with_audio if audio else ts_video_only
    video = [p for p in ts_packets(data) if p.kind == "video"]
    assert len(video) == 30
    frame = video[which]
    assert frame.size > 188
    cut = frame.pos + 188
    assert cut % 188 == 0
    with pytest.raises(InputCorrupt, match="corrupt video"):
        _run(data[:cut], SERIAL)


def test_truncated_ts_inside_a_last_audio_packet(ts_with_audio: bytes) -> None:
    packets = ts_packets(ts_with_audio)
    last_video = max(p.pos for p in packets if p.kind == "video")
    audio = [p for p in packets if p.kind == "audio" and p.pos < last_video and p.size > 188]
    cut = audio[-1].pos + 188  # a few video frames before the end, mid audio packet
    assert cut % 188 == 0 and cut < len(ts_with_audio)
    try:
        result = _run(ts_with_audio[:cut], SERIAL)
    except InputCorrupt:
        return
    pytest.fail(
        f"truncated input accepted: {result.decoded_frames} of 30 frames, "
        f"rendition has {result.renditions[0].frames}"
    )


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_mp4(fraction: float) -> None:
    data = mp4_clip(width=320, height=240, fps=30, seconds=1.0)
    assert data.find(b"moov") < data.find(b"mdat"), "faststart"
    with pytest.raises((InputCorrupt, InputInvalid)):
        _run(data[: int(len(data) * fraction)], SERIAL)


def test_a_trimmed_mp4_is_not_taken_for_a_truncated_one() -> None:
    # Its header counts 120 samples; its edit list shows the 2.5 s from 1.5 s on.
    data = trimmed_mp4(clip(320, 240, 30, 4.0, gop_seconds=1.0, fmt="mp4", audio=False), 1.5)
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video[0].frames == 120
    result = _run(data, SERIAL)
    assert (result.decoded_frames, result.input_start, result.input_duration) == (75, 0.0, 2.5)


def test_mp4_cut_before_moov_is_invalid() -> None:
    data = mp4_clip(width=320, height=240, fps=30, seconds=0.5)
    with pytest.raises(InputInvalid):
        _run(data[:64])


@pytest.mark.parametrize(
    ("codec", "fmt"), [("ffv1", "matroska"), ("ffv1", "avi"), ("huffyuv", "avi")]
)
def test_unsupported_input_codec(codec: str, fmt: str) -> None:
    data = unsupported_video(codec, fmt)
    with pytest.raises(UnsupportedCodec, match=f"input video codec '{codec}' is not supported"):
        _run(data)


def test_png_video_is_unsupported() -> None:
    with pytest.raises(UnsupportedCodec, match="'png'"):
        _run(unsupported_video("png", "avi"))


def test_over_long_input() -> None:
    data = clip(320, 240, 30, 2.0, audio=False)
    with pytest.raises(InputTooLong, match="limit is 1 s"):
        _run(data, EngineOptions(max_seconds=1.0))
    assert _run(data, EngineOptions(max_seconds=3.0)).decoded_frames == 60


@pytest.mark.parametrize("verify", [False, True])
def test_deadline(ts_with_audio: bytes, verify: bool) -> None:
    # With verification, each rendition's verifier is following its output when the
    # deadline passes; the autouse fixture checks that none is left running.
    with pytest.raises(TranscodeTimeout, match="deadline"):
        _run(ts_with_audio, EngineOptions(deadline_s=0.001, verify=verify))


def test_failed_mp4_transcode_leaves_no_temp_file(
    ts_with_audio: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(TranscodeTimeout):
        _run(ts_with_audio, EngineOptions(fmt="mp4", deadline_s=0.001))
    assert list(tmp_path.iterdir()) == []


def test_bad_profile_fails_before_decoding(ts_with_audio: bytes) -> None:
    from farm.errors import ProfileInvalid

    with pytest.raises(ProfileInvalid):
        transcode(ts_with_audio, [VideoProfile("r", 320, 240, 1000, encoder="VP9")])


@pytest.mark.parametrize("verify", [False, True])
def test_failure_at_open_with_threads_is_clean(ts_with_audio: bytes, verify: bool) -> None:
    # Damage found before any frame is handed out: the parallel path fails cleanly.
    cut = len(ts_with_audio) // 2 + 1
    with pytest.raises(InputCorrupt):
        _run(ts_with_audio[:cut], EngineOptions(verify=verify))


@pytest.mark.parametrize("verify", [False, True])
def test_failure_mid_decode_stops_rendition_threads(verify: bool) -> None:
    import time

    from tests.farm.media.conftest import rendition_threads

    data = clip(320, 240, 30, 1.0, audio=False)
    last = [p for p in ts_packets(data) if p.kind == "video"][-1]
    slow = [profile("big", 1920, 1080, 800_000, fps=30)]  # encoder slower than the decoder
    before = rendition_threads()
    started = time.perf_counter()
    with pytest.raises(InputCorrupt):
        transcode(data[: last.pos + 188], slow, EngineOptions(preset="medium", verify=verify))
    elapsed = time.perf_counter() - started
    leaked = [t.name for t in rendition_threads() - before if t.is_alive()]
    assert not leaked and elapsed < 3, f"{elapsed:.1f} s, still running: {leaked}"
