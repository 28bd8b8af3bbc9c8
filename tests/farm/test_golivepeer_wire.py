"""go-livepeer wire forms: message framing, profiles in SegData, capability bits, multipart."""

from __future__ import annotations

import pytest

from farm.errors import ProfileInvalid
from farm.golivepeer import net_pb2
from farm.golivepeer.engine import RemoteEngine
from farm.golivepeer.hub import Hub, NoTranscoder
from farm.golivepeer.results import MultipartError, TooLarge, parse_multipart
from farm.golivepeer.wire import (
    DEFAULT_CAPABILITIES,
    FrameError,
    MessageReader,
    capability_bits,
    capability_words,
    frame,
    from_net_profiles,
    job_capabilities,
    seg_data_profiles,
    to_net_profile,
)
from farm.media.engine import EngineOptions
from farm.media.profiles import VideoProfile, parse_profiles
from farm.media.synth import make_segment
from tests.farm.livepeer_transcoder import multipart


def test_register_request_field_numbers_match_go_livepeer() -> None:
    fields = {f.name: f.number for f in net_pb2.RegisterRequest.DESCRIPTOR.fields}
    assert fields == {"secret": 1, "capacity": 2, "capabilities": 3}
    notify = {f.name: f.number for f in net_pb2.NotifySegment.DESCRIPTOR.fields}
    assert notify == {"url": 1, "segData": 3, "taskId": 16, "profiles": 17, "orchId": 18}
    # secret "s", capacity 3: tags 0x0a and 0x10 as go-livepeer's encoder writes them.
    assert net_pb2.RegisterRequest(secret="s", capacity=3).SerializeToString() == (
        b"\x0a\x01s\x10\x03"
    )


def test_frames_split_and_join() -> None:
    a, b = b"first", b"second message"
    stream = frame(a) + frame(b)
    reader = MessageReader()
    assert reader.feed(stream[:3]) == []
    assert reader.feed(stream[3:10]) == [a]
    assert reader.feed(stream[10:]) == [b]
    assert reader.pending == 0
    with pytest.raises(FrameError, match="compressed"):
        MessageReader().feed(b"\x01\x00\x00\x00\x01x")
    with pytest.raises(FrameError, match="exceeds"):
        MessageReader(max_bytes=4).feed(frame(b"too long"))


def test_capability_bits_round_trip() -> None:
    words = capability_words(DEFAULT_CAPABILITIES)
    assert words == [(1 << 13) - 1 | 1 << 14 | 1 << 26]
    assert capability_bits(words) == set(DEFAULT_CAPABILITIES)
    assert capability_bits(capability_words([0, 64, 70])) == {0, 64, 70}


def test_builtin_ladder_goes_in_full_profiles_as_go_livepeer_sends_it() -> None:
    ladder = parse_profiles("P240p30fps16x9,P144p30fps16x9")
    seg = net_pb2.SegData()
    seg_data_profiles(seg, ladder, "mpegts")
    assert [p.name for p in seg.fullProfiles] == ["P240p30fps16x9", "P144p30fps16x9"]
    assert not seg.fullProfiles2 and not seg.fullProfiles3
    assert seg.fullProfiles[0].bitrate == 600_000 and seg.fullProfiles[0].fps == 30
    mp4 = net_pb2.SegData()
    seg_data_profiles(mp4, ladder, "mp4")
    assert len(mp4.fullProfiles2) == 2 and mp4.fullProfiles2[0].format == net_pb2.VideoProfile.MP4
    assert from_net_profiles(mp4) == (ladder, "mp4")


def test_custom_profile_round_trips_through_full_profiles3() -> None:
    custom = [
        VideoProfile("a", 640, 360, 800_000, 30000, 1001, "h264high", "2", "H.264"),
        VideoProfile("b", 320, 180, 300_000, 15, 1, "h264baseline", "intra", "H.264"),
        VideoProfile("c", 426, 240, 500_000, 0, 1, "", "", "HEVC"),
    ]
    seg = net_pb2.SegData()
    seg_data_profiles(seg, custom, "mpegts")
    assert len(seg.fullProfiles3) == 3 and not seg.fullProfiles
    wire = seg.fullProfiles3
    assert (wire[0].fpsDen, wire[0].gop, wire[0].profile) == (
        1001,
        2000,
        net_pb2.VideoProfile.H264_HIGH,
    )
    assert wire[1].gop == -1 and wire[2].encoder == net_pb2.VideoProfile.H265
    # A SegData decoded from its bytes gives the same ladder back.
    again = net_pb2.SegData.FromString(seg.SerializeToString())
    assert from_net_profiles(again) == (custom, "mpegts")
    assert job_capabilities(custom, "mpegts") == {0, 1, 3, 7, 9, 11, 16}


def test_profiles_without_a_wire_form_are_refused() -> None:
    p = parse_profiles("P240p30fps16x9")[0]
    with pytest.raises(ProfileInvalid, match="fmp4"):
        to_net_profile(p, "fmp4")
    with pytest.raises(ProfileInvalid, match="no profiles"):
        from_net_profiles(net_pb2.SegData())


def test_multipart_parts_as_go_livepeer_writes_them() -> None:
    body, boundary = multipart([("video/mp2t", b"\r\n--x\r\n\x00", 10), ("video/mp2t", b"", 0)])
    parts = parse_multipart(body, boundary, max_part=100)
    assert [(p.content_type, p.data, p.pixels) for p in parts] == [
        ("video/mp2t", b"\r\n--x\r\n\x00", 10),
        ("video/mp2t", b"", 0),
    ]
    with pytest.raises(TooLarge, match="cap"):
        parse_multipart(body, boundary, max_part=3)
    with pytest.raises(MultipartError, match="closing boundary"):
        parse_multipart(body[:-10], boundary, max_part=100)
    lying = body.replace(b"Content-Length: 8", b"Content-Length: 9")
    with pytest.raises(MultipartError, match="Content-Length"):
        parse_multipart(lying, boundary, max_part=100)
    no_pixels = body.replace(b"Pixels: 10\r\n", b"")
    with pytest.raises(MultipartError, match="Pixels"):
        parse_multipart(no_pixels, boundary, max_part=100)


@pytest.mark.parametrize(
    ("header", "garbage"),
    [
        (b"Content-Length: 8", b"Content-Length: \xb2"),  # a latin-1 digit int() refuses
        (b"Content-Length: 8", b"Content-Length: " + b"9" * 5000),  # past int()'s digit limit
        (b"Pixels: 10", b"Pixels: " + b"9" * 5000),
        (b"Pixels: 10", b"Pixels: -10"),
    ],
)
def test_multipart_garbage_numbers_are_malformed_not_a_crash(header: bytes, garbage: bytes) -> None:
    body, boundary = multipart([("video/mp2t", b"\r\n--x\r\n\x00", 10)])
    with pytest.raises(MultipartError) as refused:
        parse_multipart(body.replace(header, garbage), boundary, max_part=100)
    assert not isinstance(refused.value, TooLarge)


def test_a_malformed_header_mentioning_a_cap_is_not_too_large() -> None:
    body, boundary = multipart([("video/mp2t", b"x", 10)])
    with pytest.raises(MultipartError, match="malformed part header") as refused:
        parse_multipart(body.replace(b"Pixels: 10", b"capped"), boundary, max_part=100)
    assert not isinstance(refused.value, TooLarge)


def test_a_job_go_livepeer_cannot_express_goes_back_for_another_worker() -> None:
    segment = make_segment(320, 240, 30, 0.5)
    ladder = parse_profiles("P144p30fps16x9")
    with pytest.raises(NoTranscoder, match="fmp4"):
        RemoteEngine(Hub())(segment, ladder, EngineOptions(fmt="fmp4"))
    with pytest.raises(NoTranscoder, match="no free go-livepeer transcoder"):
        RemoteEngine(Hub())(segment, ladder, EngineOptions(fmt="mpegts"))
