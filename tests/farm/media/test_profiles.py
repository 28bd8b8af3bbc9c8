"""Livepeer profiles: built-in names, JSON profiles and every way a profile can be wrong."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from farm.errors import PermanentError, ProfileInvalid
from farm.media.profiles import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILES,
    parse_profiles,
    profile_by_name,
    profiles_from_json,
)

# go-livepeer's ffmpeg.VideoProfileLookup: name -> (width, height, bitrate, fps).
LIVEPEER_BUILTINS = {
    "P720p60fps16x9": (1280, 720, 6_000_000, 60),
    "P720p30fps16x9": (1280, 720, 4_000_000, 30),
    "P720p25fps16x9": (1280, 720, 3_500_000, 25),
    "P720p30fps4x3": (960, 720, 3_500_000, 30),
    "P576p30fps16x9": (1024, 576, 1_500_000, 30),
    "P576p25fps16x9": (1024, 576, 1_500_000, 25),
    "P360p30fps16x9": (640, 360, 1_200_000, 30),
    "P360p25fps16x9": (640, 360, 1_000_000, 25),
    "P360p30fps4x3": (480, 360, 1_000_000, 30),
    "P240p30fps16x9": (426, 240, 600_000, 30),
    "P240p25fps16x9": (426, 240, 600_000, 25),
    "P240p30fps4x3": (320, 240, 600_000, 30),
    "P144p30fps16x9": (256, 144, 400_000, 30),
}


def _one(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "r", "width": 640, "height": 360, "bitrate": 1_000_000}
    base.update(fields)
    return base


def _invalid(raw: Any) -> str:
    data = raw if isinstance(raw, str) else json.dumps(raw)
    with pytest.raises(ProfileInvalid) as info:
        profiles_from_json(data)
    return str(info.value)


@pytest.mark.parametrize("name", sorted(LIVEPEER_BUILTINS))
def test_builtin_profile_parses_with_livepeer_values(name: str) -> None:
    width, height, bitrate, fps = LIVEPEER_BUILTINS[name]
    (p,) = parse_profiles(name)
    assert p == profile_by_name(name) == BUILTIN_PROFILES[name]
    assert (p.name, p.width, p.height, p.bitrate) == (name, width, height, bitrate)
    assert p.frame_rate == Fraction(fps)
    assert p.encoder == "H.264"


def test_default_ladder_and_comma_list() -> None:
    assert [p.name for p in parse_profiles(",".join(DEFAULT_PROFILES))] == list(DEFAULT_PROFILES)
    ladder = parse_profiles(" P360p30fps16x9, P240p30fps16x9 ,P144p30fps16x9,")
    assert [p.height for p in ladder] == [360, 240, 144]
    assert parse_profiles(["P144p25fps16x9"])[0].frame_rate == 25


def test_unknown_builtin_name_lists_the_known_ones() -> None:
    with pytest.raises(ProfileInvalid, match=r"unknown profile 'P9000p'.*P720p60fps16x9"):
        parse_profiles("P9000p")
    with pytest.raises(ProfileInvalid, match="at least one profile"):
        parse_profiles(" , ")


def test_json_list_and_object_forms() -> None:
    raw = [
        {
            "name": "720p",
            "width": 1280,
            "height": 720,
            "bitrate": 3000000,
            "fps": 30,
            "fpsDen": 1,
            "profile": "h264high",
            "gop": "2",
            "encoder": "H.264",
        },
        {"name": "360p", "width": 640, "height": 360, "bitrate": "800000", "fps": 30000,
         "fpsDen": 1001, "gop": 1.5, "encoder": "hevc"},
    ]  # fmt: skip
    as_list = profiles_from_json(json.dumps(raw))
    as_object = profiles_from_json(json.dumps({"profiles": raw}).encode())
    assert as_list == as_object
    hi, lo = as_list
    assert (hi.width, hi.height, hi.bitrate, hi.profile, hi.gop_seconds) == (
        1280,
        720,
        3_000_000,
        "h264high",
        2.0,
    )
    assert hi.b_frames == 3
    assert lo.bitrate == 800_000 and lo.encoder == "HEVC" and lo.gop_seconds == 1.5
    assert lo.frame_rate == Fraction(30000, 1001)
    assert hi.to_json()["fpsDen"] == 1


def test_json_defaults_keep_input_rate_and_encoder_defaults() -> None:
    (p,) = profiles_from_json(json.dumps([_one()]))
    assert p.frame_rate is None and p.fps == 0
    assert p.gop_seconds is None and not p.intra_only
    assert p.b_frames is None and p.encoder == "H.264"


def test_gop_intra_is_valid() -> None:
    (p,) = profiles_from_json(json.dumps([_one(gop="intra")]))
    assert p.intra_only and p.gop_seconds is None


def test_baseline_has_no_b_frames() -> None:
    (p,) = profiles_from_json(json.dumps([_one(profile="H264Baseline")]))
    assert p.profile == "h264baseline" and p.b_frames == 0


def test_profiles_json_file(tmp_path: Path) -> None:
    path = tmp_path / "ladder.json"
    path.write_text(json.dumps({"profiles": [_one(name="a"), _one(name="b", width=320)]}))
    assert [p.width for p in parse_profiles(path)] == [640, 320]
    with pytest.raises(ProfileInvalid, match="cannot read profiles file"):
        parse_profiles(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": 0}, "width must be positive"),
        ({"height": 0}, "height must be positive"),
        ({"width": 641}, "width must be even"),
        ({"height": 359}, "height must be even"),
        ({"bitrate": -1}, "bitrate must be a positive integer"),
        ({"bitrate": 0}, "bitrate must be a positive integer"),
        ({"bitrate": 999}, "bitrate 999 is below the minimum 1000"),
        ({"encoder": "MPEG-2"}, "unknown encoder 'MPEG-2'"),
        ({"profile": "h264ultra"}, "unknown H.264 profile 'h264ultra'"),
        ({"profile": "h264high", "encoder": "HEVC"}, "H.264 profile 'h264high' given for"),
        ({"encoder": "HEVC", "width": 14}, "HEVC needs at least 16 pixels on each side"),
        ({"encoder": "hevc", "height": 2}, "HEVC needs at least 16 pixels on each side"),
        ({"gop": "two"}, 'gop must be seconds or "intra"'),
        ({"gop": "0"}, "gop must be in"),
        ({"gop": "-1"}, "gop must be in"),
        ({"gop": "nan"}, "gop must be in"),
        ({"gop": "3600"}, "gop must be in"),
        ({"gop": True}, "gop must be seconds"),
        ({"width": 8000}, "width 8000 exceeds the maximum"),
        ({"width": 10**400}, "exceeds the maximum"),
        ({"bitrate": -(10**400)}, "bitrate must be a positive integer"),
        ({"fps": 10**400}, "exceeds the maximum"),
        ({"height": 100_000}, "height 100000 exceeds the maximum"),
        ({"fps": 1000}, "frame rate 1000/1 exceeds the maximum"),
        ({"fps": -30}, "fps must be a non-negative integer"),
        ({"fps": 29.97}, "fps must be a whole number"),
        ({"fpsDen": -1}, "fpsDen must be a positive integer"),
        ({"bitrate": 10**12}, "bitrate 1000000000000 exceeds the maximum"),
        ({"bitrate": "fast"}, "bitrate must be a number"),
        ({"width": None, "height": 360}, "width must be positive"),
        ({"resolution": "640x360"}, "unknown field(s) resolution"),
        ({"name": ""}, "non-empty string 'name'"),
        ({"name": "a/b"}, "name must be 1-64 ASCII letters"),
        ({"name": "a b"}, "name must be 1-64 ASCII letters"),
        ({"name": "a'b"}, "name must be 1-64 ASCII letters"),
        ({"name": "a\u00e9"}, "name must be 1-64 ASCII letters"),
        ({"name": "a\n"}, "name must be 1-64 ASCII letters"),
        ({"name": ".."}, "name must be 1-64 ASCII letters"),
        ({"name": "x" * 65}, "name must be 1-64 ASCII letters"),
    ],
)
def test_bad_profile_field_is_named(fields: dict[str, Any], message: str) -> None:
    text = _invalid([_one(**fields)])
    assert message in text
    if fields.get("name", "r"):
        assert repr(fields.get("name", "r")) in text  # the profile is named too


def test_missing_required_field() -> None:
    raw = _one()
    del raw["bitrate"]
    assert "missing required field 'bitrate'" in _invalid([raw])


def test_duplicate_names_refused() -> None:
    assert "'r' appears more than once" in _invalid([_one(), _one(width=320)])
    with pytest.raises(ProfileInvalid, match="more than once"):
        parse_profiles("P144p30fps16x9,P144p30fps16x9")


def test_more_than_ten_renditions_refused() -> None:
    ok = [_one(name=f"r{i}") for i in range(10)]
    assert len(profiles_from_json(json.dumps(ok))) == 10
    assert "at most 10 renditions" in _invalid([*ok, _one(name="r10")])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[{", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"name": "r"}', "must be a list"),
        ("[]", "at least one profile"),
        ("[1]", "must be a JSON object"),
        ('{"profiles": 3}', "must be a list"),
    ],
)
def test_bad_json_document(raw: str, message: str) -> None:
    assert message in _invalid(raw)


def test_profile_errors_are_permanent() -> None:
    assert issubclass(ProfileInvalid, PermanentError)
    assert ProfileInvalid.code == "profile_invalid"


def test_orientation_swaps_for_portrait_only() -> None:
    p = profile_by_name("P360p30fps16x9")
    assert p.oriented(portrait=False) == (640, 360)
    assert p.oriented(portrait=True) == (360, 640)
