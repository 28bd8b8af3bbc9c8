"""A stream's encoders kept between its segments (farm.media.encoders), on real clips: every
output is reopened on its own, as a player joining at that segment would."""

from __future__ import annotations

import time

import pytest

from farm.errors import InputCorrupt
from farm.media import encoders
from farm.media.encoders import EncoderCache, StreamSession, zero_delay_options
from farm.media.engine import EngineOptions, transcode
from farm.media.result import TranscodeResult
from tests.factories import clip, probe, profile

LADDER = [profile("r180", 320, 180, 300_000, fps=30), profile("r144", 256, 144, 200_000, fps=30)]


def _segment(n: int, width: int = 256, height: int = 144, seconds: float = 1.0) -> bytes:
    return clip(width, height, 30, seconds, start=n * seconds, seed=n)


def _run(data: bytes, session: StreamSession, **kwargs: object) -> TranscodeResult:
    return transcode(data, LADDER, EngineOptions(session=session, **kwargs))  # type: ignore[arg-type]


def test_three_segments_share_one_encoder_per_rendition_and_each_stands_alone() -> None:
    cache = EncoderCache()
    session = StreamSession("manifest/session", cache)
    results = [_run(_segment(n), session, verify=True) for n in range(3)]

    assert cache.opened == len(LADDER), "each rendition's encoder opened once"
    assert [r.encoders for r in results] == [
        {"reused": 0, "opened": 2, "fresh": 0},
        {"reused": 2, "opened": 0, "fresh": 0},
        {"reused": 2, "opened": 0, "fresh": 0},
    ]
    assert all(r.verification == [] for r in results)
    assert cache.kept("manifest/session") == len(LADDER)
    for p in LADDER:
        last_end = None
        for n, result in enumerate(results):
            (rendition,) = [r for r in result.renditions if r.profile.name == p.name]
            seen = probe(rendition.data)
            # Decoded alone, from a keyframe, with the frames and size it reports.
            assert seen.key_frames[:1] == [0]
            assert seen.frames == rendition.frames == 30
            assert (seen.width, seen.height) == (p.width, p.height)
            assert rendition.start == pytest.approx(float(n), abs=1e-6)
            # Timestamps go on from one segment to the next, as the input's do.
            if last_end is not None:
                assert seen.times[0] >= last_end
            assert seen.times == sorted(seen.times)
            last_end = seen.times[-1]


def test_another_input_size_opens_fresh_encoders() -> None:
    cache = EncoderCache()
    session = StreamSession("s", cache)
    _run(_segment(0), session)
    bigger = _run(_segment(1, 320, 240), session)
    assert bigger.encoders == {"reused": 0, "opened": 2, "fresh": 0}
    assert cache.opened == 4 and cache.dropped == 2
    assert cache.kept("s") == len(LADDER)
    for r in bigger.renditions:
        assert probe(r.data).key_frames[:1] == [0]


def test_timestamps_that_go_back_open_fresh_encoders() -> None:
    cache = EncoderCache()
    session = StreamSession("s", cache)
    _run(_segment(1), session)
    again = _run(_segment(0), session)  # the stream restarted its clock
    assert again.encoders == {"reused": 0, "opened": 2, "fresh": 0}
    for r in again.renditions:
        seen = probe(r.data)
        assert seen.frames == 30 and seen.key_frames[:1] == [0]


def test_streams_do_not_share_encoders_and_the_least_recent_goes() -> None:
    cache = EncoderCache(streams=2)
    for name in ("a", "b", "c"):
        _run(_segment(0), StreamSession(name, cache))
    assert [cache.kept(s) for s in ("a", "b", "c")] == [0, 2, 2]
    assert _run(_segment(1), StreamSession("b", cache)).encoders == {
        "reused": 2,
        "opened": 0,
        "fresh": 0,
    }


def test_idle_streams_expire_and_close_drops_everything() -> None:
    cache = EncoderCache(idle_s=60)
    _run(_segment(0), StreamSession("s", cache))
    assert cache.expire() == 0
    assert cache.expire(now=time.monotonic() + 61) == len(LADDER)
    _run(_segment(1), StreamSession("s", cache))
    cache.close()
    assert cache.kept("s") == 0


def test_encoders_that_cannot_keep_state_open_per_segment() -> None:
    ladder = [
        profile("high", 256, 144, 200_000, fps=30, profile="h264high"),  # B-frames
        profile("plain", 256, 144, 200_000, fps=30),
    ]
    cache = EncoderCache()
    session = StreamSession("s", cache)
    for n in range(2):
        result = transcode(_segment(n), ladder, EngineOptions(session=session))
        assert result.encoders == {"reused": n, "opened": 1 - n, "fresh": 1}
        for r in result.renditions:
            assert probe(r.data).frames == 30
    assert zero_delay_options("libx264", ladder[0], "mpegts") is None
    assert zero_delay_options("libx264", ladder[1], "mp4") is None
    assert zero_delay_options("libsvtav1", ladder[1], "mpegts") is None
    assert zero_delay_options("h264_nvenc", ladder[1], "mpegts") is not None


def test_a_failed_segment_drops_the_streams_encoders() -> None:
    cache = EncoderCache()
    session = StreamSession("s", cache)
    _run(_segment(0), session)
    data = _segment(1)
    cut = len(data) // 2 - len(data) // 2 % 188  # whole TS packets: decoding fails midway
    with pytest.raises(InputCorrupt):
        _run(data[:cut], session)
    assert cache.kept("s") == 0
    assert _run(_segment(2), session).encoders == {"reused": 0, "opened": 2, "fresh": 0}


def test_an_encoder_that_holds_frames_back_is_never_kept_and_the_segment_is_redone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libx264 without zerolatency keeps frames for its lookahead and B-frames: the check at
    # the end of the segment sees it, the segment is encoded afresh, and libx264 is kept no
    # more in this process.
    monkeypatch.setitem(encoders._ZERO_DELAY, "libx264", {"forced-idr": "1"})
    cache = EncoderCache()
    session = StreamSession("s", cache)
    for n in range(2):
        result = _run(_segment(n), session)
        assert result.encoders == {"reused": 0, "opened": 0, "fresh": 2}
        for r in result.renditions:
            seen = probe(r.data)
            assert seen.frames == 30 and seen.key_frames[:1] == [0]
    assert cache.refuses("libx264") and cache.opened == 2 and cache.kept("s") == 0
