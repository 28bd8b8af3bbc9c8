"""A rendition's pixels counted from its packets are exactly what decoding it counts.

Renditions are the engine's own (farm.media.engine) over a range of sizes, frame rates,
containers and B-frame settings, plus streams made to break the packet count's assumptions:
a size change midway, a stream cut short, garbage, one that starts without its keyframe, one
with damaged slices, encoder settings that change the headers (several slices a picture,
weighted prediction, interlacing, keyframes that are not IDRs), and codecs it does not read.
"""

from __future__ import annotations

import dataclasses
import io
import random
from fractions import Fraction
from typing import cast

import av
import numpy as np
import pytest

from farm.errors import InputCorrupt, InputInvalid
from farm.media import h264, ts
from farm.media.codecs import encoder_opens
from farm.media.damage import damage
from farm.media.engine import EngineOptions, transcode
from farm.media.output import OutputFile
from farm.media.pixels import (
    _plain_ts_pixels,
    decoded_pixels,
    demuxed_pixels,
    rendition_pixels,
)
from farm.media.profiles import VideoProfile
from farm.media.result import TranscodeResult
from farm.media.synth import make_segment

#: Sizes with and without SPS cropping (426 and 854 are coded as 432 and 864), frame rates
#: 24 to 60 with an NTSC one, and libx264's B-frames on (main/high, the default) and off.
LADDER = [
    VideoProfile("p240", 426, 240, 600_000, fps=30),
    VideoProfile("p144", 256, 144, 400_000, fps=25),
    VideoProfile("p480", 854, 480, 1_000_000, fps=30000, fps_den=1001),
    VideoProfile("p240hi", 320, 240, 500_000, fps=60, profile="h264high"),
    VideoProfile("p240base", 426, 240, 500_000, fps=24, profile="h264baseline"),
    VideoProfile("p114", 202, 114, 300_000, fps=30, profile="h264main"),
    VideoProfile("intra", 426, 240, 800_000, fps=25, gop="intra"),
]


@pytest.fixture(scope="module", params=["mpegts", "mp4"])
def ladder(request: pytest.FixtureRequest) -> TranscodeResult:
    fmt = cast(str, request.param)
    return transcode(make_segment(640, 360, 30, 1.0), LADDER, EngineOptions(fmt=fmt))


@pytest.mark.parametrize("name", [p.name for p in LADDER])
def test_engine_renditions_count_from_packets(ladder: TranscodeResult, name: str) -> None:
    (r,) = [r for r in ladder.renditions if r.profile.name == name]
    counted = demuxed_pixels(r.data, r.fmt)
    assert counted is not None, "a plain engine rendition fell back to decoding"
    assert counted == decoded_pixels(r.data, r.fmt)
    assert (counted.width, counted.height) == (r.width, r.height)
    assert counted.pixels == r.pixels


def test_b_frames_are_reordered_within_the_promised_depth(ladder: TranscodeResult) -> None:
    # The high profile has B-frames: shown in another order than decoded, so the count
    # above followed a reorder (and the SPS promised how deep).
    (r,) = [r for r in ladder.renditions if r.profile.name == "p240hi"]
    with av.open(io.BytesIO(r.data), "r", format=r.fmt) as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    assert pts != sorted(pts)
    sps = _sps(r.data, r.fmt)
    assert sps.poc_type == 0
    assert sps.max_reorder


@pytest.mark.parametrize(("width", "height"), [(426, 240), (854, 480), (202, 114), (640, 360)])
@pytest.mark.parametrize("fmt", ["mpegts", "mp4"])
def test_cropped_size_is_the_decoded_frame_size(width: int, height: int, fmt: str) -> None:
    data = make_segment(width, height, 30, 0.5, fmt=fmt, audio=False)
    sps = _sps(data, fmt)
    assert (sps.width, sps.height) == (width, height)
    with av.open(io.BytesIO(data), "r", format=fmt) as c:
        stream = c.streams.video[0]
        frame = next(c.decode(video=0))
        assert (stream.width, stream.height) == (frame.width, frame.height) == (width, height)
    assert (
        demuxed_pixels(data, fmt)
        == decoded_pixels(data, fmt)
        == (width, height, 15, 15 * width * height)
    )


@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_synthetic_segments_at_each_rate(fps: int) -> None:
    data = make_segment(320, 180, fps, 1.0)
    assert demuxed_pixels(data, "mpegts") == decoded_pixels(data, "mpegts")


def test_a_size_change_midway_is_decoded() -> None:
    # MPEG-TS joins end to end: one stream whose second half has another SPS.
    data = make_segment(426, 240, 30, 0.5) + make_segment(256, 144, 30, 0.5, start=0.5)
    assert demuxed_pixels(data, "mpegts") is None
    counted = rendition_pixels(data, "mpegts")
    assert counted == decoded_pixels(data, "mpegts")
    assert counted.pixels == 15 * 426 * 240 + 15 * 256 * 144
    assert (counted.width, counted.height) == (256, 144)


@pytest.mark.parametrize(
    ("options", "from_packets"),
    [
        # Several slices a picture, as hardware encoders write them.
        ({"slices": "4", "bf": "2"}, True),
        # An IDR every 5 pictures with B-frames between: the order restarts at each.
        ({"x264-params": "keyint=5:min-keyint=5:scenecut=0", "bf": "2"}, True),
        ({"x264-params": "b-pyramid=normal:keyint=7", "bf": "3"}, True),
        # Weighted prediction tables in the slice headers, before the reference marking.
        ({"x264-params": "weightp=2:weightb=1:ref=4", "bf": "2"}, True),
        # Interlaced (MBAFF, or flagged so): frame_mbs_only_flag 0.
        ({"x264-params": "interlaced=1"}, False),
        ({"x264-params": "fake-interlaced=1"}, False),
        # Keyframes that are not IDRs: recovery point SEIs.
        ({"x264-params": "open-gop=1:keyint=10", "bf": "3"}, False),
        ({"x264-params": "intra-refresh=1:keyint=10", "bf": "0"}, False),
    ],
)
def test_encoder_settings(options: dict[str, str], from_packets: bool) -> None:
    data = _encode(426, 240, options)
    counted = demuxed_pixels(data, "mpegts")
    assert (counted is not None) == from_packets
    assert rendition_pixels(data, "mpegts") == decoded_pixels(data, "mpegts")
    assert rendition_pixels(data, "mpegts") == (426, 240, 30, 30 * 426 * 240)


def test_reordering_deeper_than_the_sps_promises_is_decoded() -> None:
    # B-frames under an SPS rewritten to promise no reordering (max_num_reorder_frames 0).
    data = _encode(426, 240, {"bf": "3", "x264-params": "b-pyramid=none"})
    assert demuxed_pixels(data, "mpegts") is not None
    out = OutputFile("mpegts")
    with av.open(io.BytesIO(data), "r", format="mpegts") as c:
        stream = out.container.add_stream_from_template(c.streams.video[0])
        for packet in c.demux(video=0):
            if not packet.size:
                continue
            units = [
                _no_reorder(u) if u[0] & 0x1F == h264.NAL_SPS else u
                for u in h264.annexb_units(bytes(packet))
            ]
            rewritten = av.Packet(b"".join(b"\0\0\0\1" + u for u in units))
            rewritten.pts, rewritten.dts = packet.pts, packet.dts
            rewritten.time_base, rewritten.is_keyframe = packet.time_base, packet.is_keyframe
            rewritten.stream = stream
            out.container.mux(rewritten)
    lying = out.finish()
    assert demuxed_pixels(lying, "mpegts") is None
    _counts_as_decoding(lying, "mpegts")


def test_a_rendition_cut_short_counts_as_it_decodes(ladder: TranscodeResult) -> None:
    r = ladder.renditions[0]
    for cut in (len(r.data) // 2, len(r.data) * 3 // 4 + 101, len(r.data) - 7):
        _counts_as_decoding(r.data[:cut], r.fmt)


def test_flipped_bits_count_as_they_decode(ladder: TranscodeResult) -> None:
    # Bits flipped in headers (just past start codes in MPEG-TS, in the moov box at the front
    # of MP4) and anywhere: the count from packets is the decoder's, or it decodes.
    rng = random.Random(7)
    for r in ladder.renditions[:2]:
        if r.fmt == "mpegts":
            starts = [i + 3 for i in range(len(r.data) - 3) if r.data[i : i + 3] == b"\0\0\1"]
        else:
            starts = list(range(2000))
        for trial in range(40):
            data = bytearray(r.data)
            at = rng.choice(starts) + rng.randrange(10) if trial % 2 else rng.randrange(len(data))
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
            _counts_as_decoding(bytes(data), r.fmt)


@pytest.mark.parametrize("fmt", ["mpegts", "mp4"])
def test_garbage_is_refused(fmt: str) -> None:
    garbage = np.random.default_rng(3).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    for data in (b"", garbage, b"\x47" + garbage):
        assert demuxed_pixels(data, fmt) is None
        with pytest.raises((InputInvalid, InputCorrupt)):
            rendition_pixels(data, fmt)


def test_audio_only_is_refused() -> None:
    with av.open(io.BytesIO(make_segment(320, 240, 30, 0.5)), "r", format="mpegts") as c:
        out = OutputFile("mpegts")
        audio = out.container.add_stream_from_template(c.streams.audio[0])
        for packet in c.demux(audio=0):
            if packet.size:
                packet.stream = audio
                out.container.mux(packet)
    data = out.finish()
    assert demuxed_pixels(data, "mpegts") is None
    with pytest.raises(InputInvalid, match="no video"):
        rendition_pixels(data, "mpegts")


@pytest.mark.parametrize("kind", ["keyframe", "corrupt"])
def test_damaged_renditions_count_as_they_decode(ladder: TranscodeResult, kind: str) -> None:
    r = damage(ladder, kind).renditions[0]
    if kind == "keyframe":
        # The decoder drops what precedes a keyframe: the packets cannot say how much.
        assert demuxed_pixels(r.data, r.fmt) is None
    _counts_as_decoding(r.data, r.fmt)


@pytest.mark.parametrize(("codec", "fmt"), [("libx265", "mpegts"), ("libvpx-vp9", "mp4")])
def test_other_codecs_are_decoded(codec: str, fmt: str) -> None:
    if not encoder_opens(codec):
        pytest.skip(f"{codec} is not in this build")
    data = make_segment(256, 144, 30, 0.5, fmt=fmt, codec=codec, audio=False)
    assert demuxed_pixels(data, fmt) is None
    assert (
        rendition_pixels(data, fmt) == decoded_pixels(data, fmt) == (256, 144, 15, 15 * 256 * 144)
    )


def _counts_as_decoding(data: bytes, fmt: str) -> None:
    """The count is the decoder's, or both refuse the rendition."""
    try:
        expected = decoded_pixels(data, fmt)
    except (InputInvalid, InputCorrupt):
        assert demuxed_pixels(data, fmt) is None
        with pytest.raises((InputInvalid, InputCorrupt)):
            rendition_pixels(data, fmt)
    else:
        assert rendition_pixels(data, fmt) == expected


def _sps(data: bytes, fmt: str) -> h264.Sps:
    """The first SPS of a rendition, wherever its container keeps it."""
    with av.open(io.BytesIO(data), "r", format=fmt) as c:
        extradata = bytes(c.streams.video[0].codec_context.extradata or b"")
    if extradata[:1] == b"\x01":
        n = int.from_bytes(extradata[6:8], "big")
        return h264.parse_sps(extradata[8 : 8 + n])
    (sps,) = [u for u in h264.annexb_units(extradata) if u[0] & 0x1F == h264.NAL_SPS]
    return h264.parse_sps(sps)


def _no_reorder(sps: bytes) -> bytes:
    """An x264 SPS with max_num_reorder_frames set to 0. Its last two codes before the stop
    bit are max_num_reorder_frames and max_dec_frame_buffering (E.1.1)."""
    payload = h264.rbsp(sps)
    bits = "".join(f"{b:08b}" for b in payload)
    stop = bits.rindex("1")
    for start in range(stop - 2, 0, -1):
        r = h264.BitReader(payload)
        r.u(start)
        try:
            r.ue()
            after_reorder = r.position
            r.ue()
        except ValueError:
            continue
        if r.position != stop:
            continue
        rewritten = bits[:start] + "1" + bits[after_reorder : stop + 1]
        rewritten += "0" * (-len(rewritten) % 8)
        raw = int(rewritten, 2).to_bytes(len(rewritten) // 8, "big")
        lying = sps[:1] + _escape(raw)
        # Codes read from the wrong bit can line up too: the right split changes nothing else.
        before, after = h264.parse_sps(sps), h264.parse_sps(lying)
        if after == dataclasses.replace(before, max_reorder=0):
            return lying
    raise AssertionError("no bitstream_restriction at the end of the SPS")


def _escape(payload: bytes) -> bytes:
    """An RBSP with emulation prevention bytes put in (7.4.1)."""
    out = bytearray()
    zeros = 0
    for byte in payload:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _encode(width: int, height: int, options: dict[str, str]) -> bytes:
    """One second of libx264 at 30 fps in MPEG-TS with the given encoder options."""
    out = OutputFile("mpegts")
    video = cast(av.VideoStream, out.container.add_stream("libx264", rate=30))
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.time_base = Fraction(1, 30)
    video.options = {"preset": "ultrafast", **options}
    for i in range(30):
        luma = np.full((height, width), 16 + (i * 7) % 200, np.uint8)
        chroma = np.full((height // 2, width), 128, np.uint8)
        frame = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
        frame.pts = i
        for packet in video.encode(frame):
            out.container.mux(packet)
    for packet in video.encode(None):
        out.container.mux(packet)
    return out.finish()


# -- the plain transport stream reader (farm.media.ts) ---------------------------------------


def _ts_packets(data: bytes) -> list[bytearray]:
    return [bytearray(data[i : i + 188]) for i in range(0, len(data), 188)]


def _pid(packet: bytearray) -> int:
    return (packet[1] & 0x1F) << 8 | packet[2]


@pytest.fixture(scope="module")
def ts_ladder() -> TranscodeResult:
    """The ladder in MPEG-TS, with the source's audio beside the video."""
    return transcode(make_segment(640, 360, 30, 1.0), LADDER, EngineOptions(fmt="mpegts"))


def test_an_engine_rendition_is_read_without_the_demuxer(ts_ladder: TranscodeResult) -> None:
    for r in ts_ladder.renditions:
        payloads = ts.h264_pes(r.data)
        assert payloads is not None and len(payloads) == r.frames
        assert _plain_ts_pixels(r.data) == decoded_pixels(r.data, r.fmt)


def _video_pid(data: bytes) -> int:
    counts: dict[int, int] = {}
    for p in _ts_packets(data):
        counts[_pid(p)] = counts.get(_pid(p), 0) + 1
    return max(counts, key=lambda pid: counts[pid])


def test_what_is_not_the_plain_case_is_left_to_the_demuxer(ts_ladder: TranscodeResult) -> None:
    data = ts_ladder.renditions[0].data
    video = _video_pid(data)
    packets = _ts_packets(data)
    at = next(i for i, p in enumerate(packets) if _pid(p) == video and i > 20)

    def variant(change: str) -> bytes:
        ps = [bytearray(p) for p in packets]
        if change == "unlisted pid":
            ps[at][1] = (ps[at][1] & 0xE0) | ((video + 0x20) >> 8)
            ps[at][2] = (video + 0x20) & 0xFF
        elif change == "continuity skips":
            ps[at][3] = (ps[at][3] & 0xF0) | ((ps[at][3] + 2) & 0x0F)
        elif change == "continuity repeats":
            ps.insert(at, bytearray(ps[at]))
        elif change == "transport error":
            ps[at][1] |= 0x80
        elif change == "scrambled":
            ps[at][3] |= 0x80
        elif change == "sync lost":
            ps[at][0] = 0x48
        elif change == "not whole packets":
            return bytes(b"".join(ps)) + b"\x47"
        elif change == "a different PMT later":
            pat = bytes(packets[1 if _pid(packets[0]) else 0][4:])
            section = ts._section(pat)
            assert section is not None
            pmt_pid = (section[10] & 0x1F) << 8 | section[11]
            pmt = next(i for i, p in enumerate(ps) if _pid(p) == pmt_pid and i > at)
            ps[pmt][20] ^= 0x01  # a stream entry of the repeated table
        return bytes(b"".join(ps))

    for change in (
        "unlisted pid",
        "continuity skips",
        "continuity repeats",
        "transport error",
        "scrambled",
        "sync lost",
        "not whole packets",
        "a different PMT later",
    ):
        changed = variant(change)
        assert ts.h264_pes(changed) is None, change
        _counts_as_decoding(changed, "mpegts")  # the demuxer's path still agrees with decoding
    assert ts.h264_pes(b"") is None
    assert ts.h264_pes(bytes(188 * 4)) is None


def test_damaged_streams_read_without_the_demuxer_count_as_they_decode(
    ts_ladder: TranscodeResult,
) -> None:
    """Wherever the plain reader answers for a damaged stream, decoding gives that answer."""
    rng = random.Random(11)
    sources = [r.data for r in ts_ladder.renditions]
    answered = 0
    for _ in range(300):
        data = bytearray(rng.choice(sources))
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            k = rng.randrange(len(data) // 188)
            del data[k * 188 : (k + 1) * 188]
        counted = _plain_ts_pixels(bytes(data))
        if counted is None:
            continue
        answered += 1
        try:
            assert counted == decoded_pixels(bytes(data), "mpegts")
        except InputCorrupt:
            pytest.fail("counted a stream that does not decode")
    assert answered > 50  # most damage lands in slice data, which decodes (concealed)
