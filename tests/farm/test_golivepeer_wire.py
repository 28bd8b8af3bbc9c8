"""go-livepeer wire forms: message framing, profiles in SegData, capability bits, multipart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from farm.errors import ConfigError, ProfileInvalid
from farm.golivepeer import net_pb2
from farm.golivepeer.bridge import Bridge
from farm.golivepeer.engine import RemoteEngine
from farm.golivepeer.hub import SLOT_WAIT_S, Hub, NoTranscoder
from farm.golivepeer.results import MultipartError, ResultsTooLarge, parse_multipart
from farm.golivepeer.wire import (
    DECODER_CAPABILITY,
    DEFAULT_CAPABILITIES,
    ENCODER_CAPABILITY,
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
from farm.media.source import NETWORK_CODECS
from farm.media.synth import make_segment
from farm.queues import CODECS, GOLIVEPEER_CODECS, codec_of
from farm.settings import NodeSettings
from tests.farm.harness import free_port
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
    with pytest.raises(ResultsTooLarge, match="cap"):
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
    assert not isinstance(refused.value, ResultsTooLarge)


def test_a_malformed_header_mentioning_a_cap_is_not_too_large() -> None:
    body, boundary = multipart([("video/mp2t", b"x", 10)])
    with pytest.raises(MultipartError, match="malformed part header") as refused:
        parse_multipart(body.replace(b"Pixels: 10", b"capped"), boundary, max_part=100)
    assert not isinstance(refused.value, ResultsTooLarge)


def test_a_job_go_livepeer_cannot_express_goes_back_for_another_worker() -> None:
    segment = make_segment(320, 240, 30, 0.5)
    ladder = parse_profiles("P144p30fps16x9")
    with pytest.raises(NoTranscoder, match="fmp4"):
        RemoteEngine(Hub())(segment, ladder, EngineOptions(fmt="fmp4"))
    with pytest.raises(NoTranscoder, match="no free go-livepeer transcoder"):
        RemoteEngine(Hub())(segment, ladder, EngineOptions(fmt="mpegts"))


# ---- only the codecs go-livepeer's protocol has --------------------------------------------

#: go-livepeer's VideoProfile.encoder enum (net/lp_rpc.proto): H264 0, H265 1, VP8 2, VP9 3.
GOLIVEPEER_VIDEO_CODECS = {0, 1, 2, 3}
AV1_LADDER = [
    VideoProfile("h264", 256, 144, 200_000, 30, 1, "", "", "H.264"),
    VideoProfile("av1", 256, 144, 200_000, 30, 1, "", "", "AV1"),
]


def test_to_net_profile_never_leaves_go_livepeers_encoder_enum() -> None:
    for encoder in CODECS:  # every encoder family the farm has
        p = VideoProfile("p", 256, 144, 200_000, 30, 1, "", "", encoder)
        try:
            wire = to_net_profile(p, "mpegts")
        except ProfileInvalid as e:
            assert encoder == "AV1" and "cannot encode AV1" in str(e)
            continue
        assert wire.encoder in GOLIVEPEER_VIDEO_CODECS
        assert codec_of(encoder) in GOLIVEPEER_CODECS
    assert {codec_of(e) for e in ENCODER_CAPABILITY} == set(GOLIVEPEER_CODECS)
    with pytest.raises(ProfileInvalid, match="cannot encode AV1"):
        seg_data_profiles(net_pb2.SegData(), AV1_LADDER, "mpegts")
    with pytest.raises(ProfileInvalid, match="cannot encode AV1"):
        job_capabilities(AV1_LADDER, "mpegts")


def test_a_segment_outside_go_livepeers_enums_is_refused_not_a_crash() -> None:
    for field, value, message in [
        ("encoder", 4, "unsupported video codec 4"),
        ("encoder", 2, "unsupported video codec 2"),  # VP8: no encoder family here
        ("profile", 9, "unrecognized encoder profile 9"),
        ("format", 7, "unrecognized profile output format"),
    ]:
        seg = net_pb2.SegData()
        seg_data_profiles(seg, AV1_LADDER[:1], "mpegts")
        setattr(seg.fullProfiles[0], field, value)
        again = net_pb2.SegData.FromString(seg.SerializeToString())
        with pytest.raises(ProfileInvalid, match=message):
            from_net_profiles(again)


def test_the_input_codec_needs_its_decoder_capability() -> None:
    ladder = AV1_LADDER[:1]
    assert job_capabilities(ladder, "mpegts", "h264") == {0, 1}
    assert job_capabilities(ladder, "mpegts", "hevc") == {0, 1, 15}
    assert job_capabilities(ladder, "mp4", "vp9") == {0, 2, 18}
    for codec in ("av1", "mpeg2video"):
        with pytest.raises(ProfileInvalid, match=f"cannot decode {codec}"):
            job_capabilities(ladder, "mpegts", codec)
    # What the splitter lets go to the network is what go-livepeer decodes.
    assert set(DECODER_CAPABILITY) == NETWORK_CODECS


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The event loop an attached transcoder's stream would run on (never run here)."""
    new = asyncio.new_event_loop()
    yield new
    new.close()


def _attached(hub: Hub, capabilities: tuple[int, ...], loop: asyncio.AbstractEventLoop) -> Any:
    return hub.attach("127.0.0.1:1", "https://127.0.0.1:1", 2, frozenset(capabilities), loop)


def test_an_av1_rendition_never_reaches_a_golivepeer_transcoder(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = Hub()
    t = _attached(hub, (*DEFAULT_CAPABILITIES, 15, 16, 18, 20), loop)
    segment = make_segment(320, 240, 30, 0.5)
    with pytest.raises(NoTranscoder, match="cannot encode AV1"):
        RemoteEngine(hub)(segment, AV1_LADDER, EngineOptions(fmt="mpegts"))
    with pytest.raises(NoTranscoder, match="cannot encode AV1"):
        hub.run(segment, AV1_LADDER, "mpegts", 0.5, 5.0, "s")
    assert (t.load, t.done) == (0, 0) and t.outbox.empty()


def test_a_transcoder_without_the_decoder_is_not_sent_the_segment(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # A software go-livepeer transcoder: no HEVC decode (15); it gets no HEVC input.
    hub = Hub()
    t = _attached(hub, DEFAULT_CAPABILITIES, loop)
    started = time.monotonic()
    with pytest.raises(NoTranscoder, match="has the capabilities"):
        hub.run(b"hevc", AV1_LADDER[:1], "mpegts", 0.5, 5.0, "s", "hevc")
    assert time.monotonic() - started < SLOT_WAIT_S  # refused at once, not after a wait
    assert (t.load, t.done) == (0, 0) and t.outbox.empty()


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        (["transcode.cpu.av1"], "'transcode.cpu.av1': go-livepeer transcoders cannot encode av1"),
        (["transcode.cpu.h264", "transcode.gpu.av1"], "cannot encode av1"),
        (["ai.text-to-image"], "is not a transcode queue"),
        (["chain"], "is not a transcode queue"),
        (["transcode.tpu.h264"], "is not a transcode queue"),
        ([], "FARM_GOLIVEPEER_QUEUES is empty"),
    ],
)
def test_golivepeer_queues_of_other_codecs_are_refused_at_start_up(
    queues: list[str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        NodeSettings(golivepeer_queues=tuple(queues))
    # The bridge refuses them too, however its settings were made.
    settings = NodeSettings().model_copy(update={"golivepeer_queues": tuple(queues)})
    with pytest.raises(ConfigError, match="FARM_GOLIVEPEER_QUEUES"):
        Bridge(settings, Hub())


def test_golivepeer_queues_of_its_codecs_are_accepted() -> None:
    queues = tuple(f"transcode.{d}.{c}" for d in ("cpu", "gpu") for c in GOLIVEPEER_CODECS)
    assert NodeSettings(golivepeer_queues=queues).golivepeer_queues == queues
    assert NodeSettings(golivepeer=False, golivepeer_queues=()).golivepeer_queues == ()


def test_farm_node_refuses_an_av1_queue_in_one_line(tmp_path: Path) -> None:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    variables.update(
        FARM_GOLIVEPEER_QUEUES='["transcode.cpu.h264", "transcode.cpu.av1"]',
        FARM_TLS_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-m", "farm.cli", "node", f"--port={free_port()}"],
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stderr.startswith("error: invalid settings:"), done.stderr
    assert "go-livepeer transcoders cannot encode av1" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
