"""The engine on real clips: every output is reopened with PyAV and checked as a player would.

Durations and times are compared within half a frame of the output's frame rate.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import ColorRange

from farm.errors import ProfileInvalid
from farm.media.codecs import codec_name
from farm.media.engine import EngineOptions, transcode
from farm.media.profiles import parse_profiles
from farm.media.result import TranscodeResult
from farm.media.synth import make_segment
from tests.factories import (
    bright_quarter,
    clip,
    clip_with_audio,
    mp4_clip,
    probe,
    profile,
    stream,
    turned_clip,
)


def _near(a: float, b: float, fps: float) -> bool:
    return abs(a - b) <= 0.5 / fps


@pytest.fixture(scope="module")
def ladder(clip30_2s: bytes) -> TranscodeResult:
    """One 2 s 640x360 30 fps segment with audio into a mixed ladder, MPEG-TS."""
    profiles = [
        profile("same30", 640, 360, 800_000, fps=30),
        profile("drop25", 320, 240, 300_000, fps=25),
        profile("drop15", 256, 144, 200_000, fps=15),
        profile("gop1", 320, 240, 300_000, fps=30, gop="1"),
        profile("intra", 256, 144, 300_000, fps=30, gop="intra"),
        profile("baseline", 320, 240, 300_000, fps=30, profile="h264baseline"),
        profile("high", 320, 240, 300_000, fps=30, profile="h264high"),
        profile("keep", 320, 240, 300_000),
        profile("hevc", 320, 240, 300_000, fps=30, encoder="HEVC"),
    ]
    return transcode(clip30_2s, profiles)


def _get(result: TranscodeResult, name: str) -> tuple[int, int, int, bytes]:
    (r,) = [r for r in result.renditions if r.profile.name == name]
    return r.width, r.height, r.frames, r.data


@pytest.mark.parametrize(
    ("name", "codec", "size", "fps"),
    [
        ("same30", "h264", (640, 360), 30),
        ("drop25", "h264", (320, 240), 25),
        ("drop15", "h264", (256, 144), 15),
        ("gop1", "h264", (320, 240), 30),
        ("intra", "h264", (256, 144), 30),
        ("baseline", "h264", (320, 240), 30),
        ("high", "h264", (320, 240), 30),
        ("keep", "h264", (320, 240), 30),
        ("hevc", "hevc", (320, 240), 30),
    ],
)
def test_ladder_rendition_plays(
    ladder: TranscodeResult, name: str, codec: str, size: tuple[int, int], fps: int
) -> None:
    (r,) = [r for r in ladder.renditions if r.profile.name == name]
    seen = probe(r.data)
    assert seen.format_name == "mpegts"
    assert (seen.codec, seen.width, seen.height) == (codec, *size)
    assert (r.width, r.height) == size
    assert r.encoder == {"h264": "libx264", "hevc": "libx265"}[codec]
    # 2 s on the profile's grid: fps frames per second, no more, no fewer.
    assert seen.frames == r.frames == 2 * fps
    assert _near(seen.frame_len, 1 / fps, fps * 4)
    assert _near(seen.duration, 2.0, fps)
    assert seen.key_frames[0] == 0, "the first decoded frame must be a keyframe"
    assert seen.has_audio and seen.audio_frames > 80  # ~94 AAC frames in 2 s at 48 kHz
    assert r.pixels == r.frames * r.width * r.height
    assert _near(r.start, seen.start, fps)


def test_ladder_reports_decode_and_pixels(ladder: TranscodeResult) -> None:
    assert len(ladder.renditions) == 9
    assert ladder.decoder == "h264"
    assert ladder.decoded_frames == 60
    assert ladder.decoded_pixels == 60 * 640 * 360
    assert ladder.encoded_pixels == sum(r.frames * r.width * r.height for r in ladder.renditions)
    assert _near(ladder.input_duration, 2.0, 30)
    assert set(ladder.timings) == {"open", "transcode", "total"}
    assert all(r.mime_type == "video/mp2t" and r.fmt == "mpegts" for r in ladder.renditions)


def test_gop_seconds_sets_keyframe_interval(ladder: TranscodeResult) -> None:
    assert probe(_get(ladder, "gop1")[3]).key_frames == [0, 30]


def test_intra_makes_every_frame_a_keyframe(ladder: TranscodeResult) -> None:
    assert probe(_get(ladder, "intra")[3]).key_frames == list(range(60))


def test_baseline_profile_has_no_b_frames(ladder: TranscodeResult) -> None:
    seen = probe(_get(ladder, "baseline")[3])
    assert seen.profile in ("Baseline", "Constrained Baseline")
    pts = seen.decode_order_pts
    assert len(pts) == 60
    assert pts == sorted(pts), "no B-frames: decode order is display order"


def test_high_profile(ladder: TranscodeResult) -> None:
    seen = probe(_get(ladder, "high")[3])
    assert seen.profile == "High"
    assert seen.decode_order_pts != sorted(seen.decode_order_pts), "main/high use B-frames"


def test_fps_duplicates_frames_up() -> None:
    data = clip(fps=15, seconds=1.0, audio=False)
    result = transcode(data, [profile("up30", fps=30)])
    (r,) = result.renditions
    seen = probe(r.data)
    assert result.decoded_frames == 15
    assert seen.frames == r.frames == 30
    assert _near(seen.frame_len, 1 / 30, 120)
    assert _near(r.duration, 1.0, 30)


@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize("audio", [True, False], ids=["with-audio", "video-only"])
def test_a_few_frames_keep_every_frame(frames: int, audio: bool) -> None:
    # Too short for FFmpeg to measure an average rate: the rate comes from the bitstream, not
    # from its guess (60 for 30 fps H.264), which halved the frames.
    data = make_segment(320, 240, 30, frames / 30, audio=audio)
    result = transcode(
        data, [profile("same", fps=30), profile("keep", fps=0)], EngineOptions(verify=True)
    )
    assert result.verification == []
    assert result.decoded_frames == frames
    assert [r.frames for r in result.renditions] == [frames, frames]
    assert _near(result.input_duration, frames / 30, 300)


def test_passthrough_fps_keeps_input_frames(clip30: bytes) -> None:
    result = transcode(clip30, [profile("keep", fps=0)])
    (r,) = result.renditions
    seen = probe(r.data)
    assert seen.frames == r.frames == result.decoded_frames == 30
    assert seen.average_rate == 30
    assert _near(seen.duration, 1.0, 30)


def test_passthrough_rendition_duration_is_a_whole_segment() -> None:
    data = clip(fps=15, seconds=2.0, audio=False)
    (r,) = transcode(data, [profile("keep", fps=0)]).renditions
    assert _near(r.duration, 2.0, 15), r.duration


def test_bitrate_roughly_honoured() -> None:
    noisy = clip(640, 360, 30, 2.0, audio=False, noise=40, bitrate=3_000_000)
    targets = [200_000, 600_000, 1_200_000]
    result = transcode(noisy, [profile(f"b{b}", 640, 360, b, fps=30) for b in targets])
    for target, r in zip(targets, result.renditions, strict=True):
        seen = probe(r.data)
        actual = seen.video_bytes * 8 / seen.duration
        assert target / 2 <= actual <= target * 2, (target, actual)


def test_portrait_input_gives_portrait_output() -> None:
    data = clip(240, 320, 30, 0.5, audio=False)
    result = transcode(data, [profile("land", 320, 240), profile("square", 240, 240)])
    land, square = result.renditions
    assert (land.width, land.height) == (240, 320)
    assert (probe(land.data).width, probe(land.data).height) == (240, 320)
    assert (square.width, square.height) == (240, 240)
    assert land.pixels == land.frames * 240 * 320


@pytest.fixture(scope="module")
def two_segments() -> tuple[bytes, bytes]:
    return (
        make_segment(320, 240, 30, 2.0, start=0.0, audio=False, seed=0),
        make_segment(320, 240, 30, 2.0, start=2.0, audio=False, seed=1),
    )


@pytest.mark.parametrize("fps", [30, 25, 15, 0])
def test_consecutive_segments_play_back_to_back(
    fps: int, two_segments: tuple[bytes, bytes]
) -> None:
    # Segments made with start=0 and start=2.0: the rendition of the second starts where
    # the rendition of the first ends. Video only, since synth's segments with audio are
    # not contiguous themselves (test_synth_stream_segments_are_contiguous_with_audio).
    seg1, seg2 = two_segments
    p = [profile("r", 256, 144, 200_000, fps=fps)]
    (r1,) = transcode(seg1, p).renditions
    (r2,) = transcode(seg2, p).renditions
    one, two = probe(r1.data), probe(r2.data)
    rate = fps or 30
    assert _near(one.start, 0.0, rate)
    assert _near(two.start, one.end, rate), (one.end, two.start)
    assert _near(two.start, 2.0, rate)
    assert two.key_frames[0] == 0
    assert _near(r2.start, r1.end, rate)


def test_synth_stream_segments_are_contiguous_with_audio() -> None:
    seg1 = make_segment(320, 240, 30, 1.0, start=0.0)
    seg2 = make_segment(320, 240, 30, 1.0, start=1.0, seed=1)
    one, two = probe(seg1), probe(seg2)
    assert _near(one.start, 0.0, 30), one.start
    assert _near(two.start, one.end, 30)


def test_synth_makes_mp4() -> None:
    assert probe(make_segment(320, 240, 30, 0.5, fmt="mp4")).frames == 15


@pytest.mark.parametrize("fmt", ["mp4", "fmp4", "mpegts"])
def test_output_formats_reopen_from_mp4_input(fmt: str) -> None:
    data = mp4_clip(width=320, height=240, fps=30, seconds=1.0)
    result = transcode(data, [profile("r", 256, 144, 200_000, fps=30)], EngineOptions(fmt=fmt))
    (r,) = result.renditions
    seen = probe(r.data)
    assert r.fmt == fmt
    assert seen.format_name.startswith("mov" if fmt != "mpegts" else "mpegts")
    assert (seen.codec, seen.width, seen.height, seen.frames) == ("h264", 256, 144, 30)
    assert seen.key_frames[0] == 0
    assert seen.has_audio and seen.audio_frames > 40
    assert _near(seen.duration, 1.0, 30)
    if fmt == "mp4":
        assert r.data[4:8] == b"ftyp" and r.data.find(b"moov") < r.data.find(b"mdat")
        assert seen.header_frames == 30
    if fmt == "fmp4":
        assert b"moof" in r.data


def test_mp4_output_from_ts_input(clip30: bytes) -> None:
    (r,) = transcode(clip30, [profile(fps=30)], EngineOptions(fmt="mp4")).renditions
    seen = probe(r.data)
    assert (seen.codec, seen.frames, seen.key_frames[0]) == ("h264", 30, 0)
    assert seen.has_audio and seen.audio_frames > 40


def test_fmp4_output_from_video_only_ts(clip30_silent: bytes) -> None:
    (r,) = transcode(clip30_silent, [profile(fps=30)], EngineOptions(fmt="fmp4")).renditions
    seen = probe(r.data)
    assert (seen.codec, seen.frames, seen.key_frames[0], seen.has_audio) == ("h264", 30, 0, False)


def test_fmp4_output_from_ts_input_with_audio(clip30: bytes) -> None:
    (r,) = transcode(clip30, [profile(fps=30)], EngineOptions(fmt="fmp4")).renditions
    seen = probe(r.data)
    assert seen.frames == 30 and seen.has_audio


def test_hevc_in_mpegts(ladder: TranscodeResult) -> None:
    seen = probe(_get(ladder, "hevc")[3])
    assert seen.codec == "hevc" and seen.format_name == "mpegts"
    assert seen.key_frames[0] == 0


def test_vp9_refused_in_mpegts(clip30: bytes) -> None:
    with pytest.raises(ProfileInvalid, match="VP9 cannot be carried in MPEG-TS"):
        transcode(clip30, [profile(encoder="VP9")])


def test_unknown_output_format_refused(clip30: bytes) -> None:
    with pytest.raises(ProfileInvalid, match="unknown output format 'webm'"):
        transcode(clip30, [profile()], EngineOptions(fmt="webm"))
    with pytest.raises(ProfileInvalid, match="at least one profile"):
        transcode(clip30, [])


def test_serial_mode_matches_parallel(clip30: bytes) -> None:
    profiles = parse_profiles("P144p30fps16x9,P240p25fps16x9")
    par = transcode(clip30, profiles)
    ser = transcode(clip30, profiles, EngineOptions(parallel=False))
    assert [r.frames for r in par.renditions] == [r.frames for r in ser.renditions] == [30, 25]
    assert [probe(r.data).frames for r in ser.renditions] == [30, 25]


def test_input_from_path_and_memoryview(tmp_path: Path, clip30_silent: bytes) -> None:
    path = tmp_path / "seg.ts"
    path.write_bytes(clip30_silent)
    for source in (path, str(path), memoryview(clip30_silent), bytearray(clip30_silent)):
        (r,) = transcode(source, [profile(fps=30)]).renditions
        assert r.frames == 30


def test_gpu_option_falls_back_to_cpu_without_nvenc(clip30_silent: bytes) -> None:
    from farm.media.codecs import encoder_opens

    if encoder_opens("h264_nvenc"):
        pytest.skip("NVENC opens here")
    result = transcode(clip30_silent, [profile(fps=30)], EngineOptions(gpu=0))
    assert result.renditions[0].encoder == "libx264"
    assert probe(result.renditions[0].data).frames == 30


def test_stream_factory_lists_segments(tmp_path: Path) -> None:
    playlist = stream(tmp_path / "s", segments=2, seconds=0.5, audio=False)
    text = playlist.read_text()
    assert text.count("#EXTINF:0.500,") == 2
    assert (tmp_path / "s" / "seg1.ts").stat().st_size > 0


@pytest.mark.parametrize(
    ("codec", "fmt", "name"),
    [
        ("libsvtav1", "mp4", "av1"),
        ("libvpx-vp9", "webm", "vp9"),
        ("libvpx", "webm", "vp8"),
        ("libx265", "mpegts", "hevc"),
        ("mpeg2video", "mpegts", "mpeg2video"),
        ("mpeg4", "mp4", "mpeg4"),
    ],
)
def test_every_accepted_input_codec_transcodes(codec: str, fmt: str, name: str) -> None:
    # The codec is what the stream holds, not the decoder FFmpeg picks for it: AV1 is
    # decoded by libdav1d and was once refused as an unsupported "libdav1d".
    data = make_segment(320, 240, 30, 1.0, audio=False, codec=codec, fmt=fmt)
    assert probe(data).codec == name
    result = transcode(
        data, [profile("out", 256, 144, 200_000, fps=30)], EngineOptions(verify=True)
    )
    assert result.verification == []
    assert [r.frames for r in result.renditions] == [30]
    assert probe(result.renditions[0].data).frames == 30


@pytest.mark.parametrize(
    ("degrees", "fmt", "corner", "size"),
    [
        # Where FFmpeg's command line, which turns pictures by their display matrix, puts
        # the top-left quarter of a picture shown turned by ``degrees`` counterclockwise.
        (90, "mp4", "bottom-left", (144, 256)),
        (-90, "mp4", "top-right", (144, 256)),
        (180, "mp4", "bottom-right", (256, 144)),
        (90, "matroska", "bottom-left", (144, 256)),
        (0, "mp4", "top-left", (256, 144)),
    ],
)
def test_a_turned_picture_is_transcoded_upright(
    degrees: int, fmt: str, corner: str, size: tuple[int, int]
) -> None:
    data = turned_clip(degrees, fmt=fmt)
    assert bright_quarter(data)[0] == "top-left"  # as coded
    result = transcode(
        data, [profile("out", 256, 144, 200_000, fps=30)], EngineOptions(verify=True)
    )
    assert result.verification == []
    (r,) = result.renditions
    assert (r.width, r.height) == size
    assert bright_quarter(r.data) == (corner, *size)
    assert probe(r.data).frames == 30


@pytest.mark.parametrize(
    ("codec", "container", "fmt", "carried"),
    [
        # Audio no player decodes in the output container is encoded to AAC, once.
        ("pcm_s16le", "mov", "mpegts", "aac"),
        ("flac", "matroska", "mpegts", "aac"),
        ("alac", "mov", "mpegts", "aac"),
        ("pcm_s16le", "mov", "mp4", "aac"),
        ("ac3", "mpegts", "fmp4", "aac"),
        ("mp2", "mpegts", "mp4", "aac"),
        # Audio the container carries is copied as it is.
        ("ac3", "mpegts", "mpegts", "ac3"),
        ("mp2", "mpegts", "mpegts", "mp2"),
        ("flac", "matroska", "mp4", "flac"),
    ],
)
def test_audio_the_output_cannot_carry_is_encoded_to_aac(
    codec: str, container: str, fmt: str, carried: str
) -> None:
    data = clip_with_audio(codec, container, seconds=1.0)
    profiles = [profile("a", 256, 144, 200_000, fps=30), profile("b", 160, 96, 100_000, fps=30)]
    result = transcode(data, profiles, EngineOptions(fmt=fmt, verify=True))
    assert result.verification == []
    for r in result.renditions:
        with av.open(io.BytesIO(r.data)) as c:
            (sound,) = c.streams.audio
            assert codec_name(sound) == carried
            samples = sum(f.samples for f in c.decode(sound))
            rate = sound.codec_context.sample_rate
        # The whole second of sound, give or take the codecs' own frames at the edges.
        assert abs(samples / rate - 1.0) < 0.06, (samples, rate)
        assert probe(r.data).frames == 30
    a, b = (av.open(io.BytesIO(r.data)) for r in result.renditions)
    with a, b:
        first = [bytes(p) for p in a.demux(audio=0) if p.size]
        second = [bytes(p) for p in b.demux(audio=0) if p.size]
    assert first == second  # encoded once, the same packets in every rendition


def _black_and_white(codec: str, fmt: str, pix_fmt: str) -> bytes:
    """Ten full-range pictures, the left half black (0) and the right half white (255)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, pix_fmt
        video.codec_context.color_range = ColorRange.JPEG
        luma = np.full((240, 320), 255, np.uint8)
        luma[:, :160] = 0
        chroma = np.full((120, 160), 128, np.uint8)
        planes = np.concatenate([luma.ravel(), chroma.ravel(), chroma.ravel()]).reshape(360, 320)
        for n in range(10):
            frame = av.VideoFrame.from_ndarray(planes, format=pix_fmt)
            frame.color_range = ColorRange.JPEG
            frame.pts, frame.time_base = n, Fraction(1, 25)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("codec", "fmt", "pix_fmt"),
    [("mjpeg", "avi", "yuvj420p"), ("libx264", "mp4", "yuv420p")],
    ids=["camera-mjpeg", "full-range-h264"],
)
def test_full_range_input_becomes_limited_range_renditions(
    codec: str, fmt: str, pix_fmt: str
) -> None:
    # A camera's Motion JPEG or a full-range screen recording: black and white land on 16
    # and 235, where a player of the unflagged rendition expects them.
    data = _black_and_white(codec, fmt, pix_fmt)
    with av.open(io.BytesIO(data)) as c:
        assert next(c.decode(video=0)).color_range == ColorRange.JPEG
    result = transcode(data, [profile("out", 320, 240, 500_000, fps=25)])
    with av.open(io.BytesIO(result.renditions[0].data)) as c:
        picture = next(c.decode(video=0)).to_ndarray()[:240]
    assert abs(float(picture[:, 8:150].mean()) - 16) < 2
    assert abs(float(picture[:, 170:312].mean()) - 235) < 2
