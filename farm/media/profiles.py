"""Livepeer video profiles: the built-in ladder by name and custom profiles in JSON.

Field names and meanings follow Livepeer's ``JsonProfile``: ``bitrate`` in bits per second,
``fps``/``fpsDen`` a rational frame rate (0 keeps the input's), ``gop`` in seconds or
``"intra"``, ``profile`` an H.264 profile name, ``encoder`` a codec family.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from farm.errors import ProfileInvalid

__all__ = [
    "BUILTIN_PROFILES",
    "DEFAULT_PROFILES",
    "ENCODERS",
    "H264_PROFILES",
    "VideoProfile",
    "parse_profiles",
    "profile_by_name",
    "profiles_from_json",
]

#: Codec families a profile may ask for, as Livepeer names them.
ENCODERS = ("H.264", "HEVC", "AV1", "VP9")
#: Livepeer's H.264 profile names mapped to the encoder's profile name ("" = encoder default).
H264_PROFILES = {
    "": "",
    "none": "",
    "h264baseline": "baseline",
    "h264main": "main",
    "h264high": "high",
    "h264constrainedhigh": "high",
}
MAX_WIDTH = 7680
MAX_HEIGHT = 4320
MAX_FPS = 240
#: x265 opens no encoder for a picture under 16 pixels on a side (H.264's and VP9's take 2).
MIN_HEVC_SIDE = 16
#: Encoders take whole kbit/s: libx264 refuses less than 1.
MIN_BITRATE = 1000
MAX_BITRATE = 200_000_000
MAX_GOP_SECONDS = 60.0
#: What a profile may be called: its name is part of blob keys, file names, playlists and
#: headers, so only what every one of them takes.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class VideoProfile:
    """One rendition of a ladder."""

    name: str
    width: int
    height: int
    bitrate: int
    fps: int = 0
    fps_den: int = 1
    profile: str = ""
    gop: str = ""
    encoder: str = "H.264"

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def frame_rate(self) -> Fraction | None:
        """The output frame rate, or None to keep the input's."""
        return Fraction(self.fps, self.fps_den) if self.fps else None

    @property
    def intra_only(self) -> bool:
        return self.gop == "intra"

    @property
    def gop_seconds(self) -> float | None:
        """GOP length in seconds, None for the encoder default or intra-only."""
        if self.gop in ("", "intra"):
            return None
        return float(self.gop)

    @property
    def b_frames(self) -> int | None:
        """B-frames as Livepeer sets them: 0 for baseline/constrained high, 3 for main/high."""
        if self.profile in ("h264baseline", "h264constrainedhigh"):
            return 0
        if self.profile in ("h264main", "h264high"):
            return 3
        return None

    def to_json(self) -> dict[str, Any]:
        """The profile in Livepeer's JSON field names."""
        d = asdict(self)
        d["fpsDen"] = d.pop("fps_den")
        return d

    def oriented(self, portrait: bool) -> tuple[int, int]:
        """Output size, swapped for portrait input so the long side stays long."""
        if portrait and self.width > self.height:
            return self.height, self.width
        return self.width, self.height


def _fail(name: str, message: str) -> None:
    raise ProfileInvalid(f"profile {name!r}: {message}")


def _validate(p: VideoProfile) -> None:
    if not p.name or not isinstance(p.name, str):
        raise ProfileInvalid("profile name must be a non-empty string")
    if not NAME.fullmatch(p.name):
        _fail(
            p.name,
            "name must be 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (it names the rendition's files)",
        )
    for field, value, top in (("width", p.width, MAX_WIDTH), ("height", p.height, MAX_HEIGHT)):
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(p.name, f"{field} must be an integer, got {value!r}")
        if value <= 0:
            _fail(p.name, f"{field} must be positive, got {value}")
        if value % 2:
            _fail(p.name, f"{field} must be even for 4:2:0 video, got {value}")
        if value > top:
            _fail(p.name, f"{field} {value} exceeds the maximum {top}")
    if not isinstance(p.bitrate, int) or isinstance(p.bitrate, bool) or p.bitrate <= 0:
        _fail(p.name, f"bitrate must be a positive integer in bits per second, got {p.bitrate!r}")
    if p.bitrate < MIN_BITRATE:
        _fail(p.name, f"bitrate {p.bitrate} is below the minimum {MIN_BITRATE} (1 kbit/s)")
    if p.bitrate > MAX_BITRATE:
        _fail(p.name, f"bitrate {p.bitrate} exceeds the maximum {MAX_BITRATE}")
    if not isinstance(p.fps, int) or p.fps < 0:
        _fail(p.name, f"fps must be a non-negative integer (0 keeps the input's), got {p.fps!r}")
    if not isinstance(p.fps_den, int) or p.fps_den <= 0:
        _fail(p.name, f"fpsDen must be a positive integer, got {p.fps_den!r}")
    if p.fps and Fraction(p.fps, p.fps_den) > MAX_FPS:
        _fail(p.name, f"frame rate {p.fps}/{p.fps_den} exceeds the maximum {MAX_FPS}")
    if p.profile not in H264_PROFILES:
        known = ", ".join(k for k in H264_PROFILES if k and k != "none")
        _fail(p.name, f"unknown H.264 profile {p.profile!r}; expected one of {known}")
    if p.profile not in ("", "none") and p.encoder != "H.264":
        _fail(p.name, f"H.264 profile {p.profile!r} given for encoder {p.encoder}")
    if p.encoder not in ENCODERS:
        _fail(p.name, f"unknown encoder {p.encoder!r}; expected one of {', '.join(ENCODERS)}")
    if p.encoder == "HEVC" and min(p.width, p.height) < MIN_HEVC_SIDE:
        _fail(
            p.name,
            f"HEVC needs at least {MIN_HEVC_SIDE} pixels on each side, got {p.width}x{p.height}",
        )
    if p.gop not in ("", "intra"):
        try:
            seconds = float(p.gop)
        except ValueError:
            _fail(p.name, f'gop must be seconds or "intra", got {p.gop!r}')
        else:
            if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_GOP_SECONDS:
                _fail(p.name, f"gop must be in (0, {MAX_GOP_SECONDS:g}] seconds, got {p.gop!r}")


def _builtin(name: str, w: int, h: int, kbps: int, fps: int) -> VideoProfile:
    return VideoProfile(name=name, width=w, height=h, bitrate=kbps * 1000, fps=fps)


BUILTIN_PROFILES: dict[str, VideoProfile] = {
    p.name: p
    for p in (
        _builtin("P720p60fps16x9", 1280, 720, 6000, 60),
        _builtin("P720p30fps16x9", 1280, 720, 4000, 30),
        _builtin("P720p25fps16x9", 1280, 720, 3500, 25),
        _builtin("P720p30fps4x3", 960, 720, 3500, 30),
        _builtin("P576p30fps16x9", 1024, 576, 1500, 30),
        _builtin("P576p25fps16x9", 1024, 576, 1500, 25),
        _builtin("P360p30fps16x9", 640, 360, 1200, 30),
        _builtin("P360p25fps16x9", 640, 360, 1000, 25),
        _builtin("P360p30fps4x3", 480, 360, 1000, 30),
        _builtin("P240p30fps16x9", 426, 240, 600, 30),
        _builtin("P240p25fps16x9", 426, 240, 600, 25),
        _builtin("P240p30fps4x3", 320, 240, 600, 30),
        _builtin("P144p30fps16x9", 256, 144, 400, 30),
        # Defined but absent from go-livepeer's lookup table; reachable here by name.
        _builtin("P144p25fps16x9", 256, 144, 400, 25),
    )
}

#: go-livepeer's default ``-transcodingOptions``.
DEFAULT_PROFILES = ("P240p30fps16x9", "P360p30fps16x9")


def profile_by_name(name: str) -> VideoProfile:
    """A built-in profile by its Livepeer name."""
    try:
        return BUILTIN_PROFILES[name.strip()]
    except KeyError:
        raise ProfileInvalid(
            f"unknown profile {name!r}; built-in profiles: {', '.join(BUILTIN_PROFILES)}"
        ) from None


def _int_field(name: str, raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ProfileInvalid(f"profile {name!r}: {key} must be a number, got {value!r}")
    if isinstance(value, int):
        return value  # as it is: a float of it may overflow or round (the bounds come later)
    try:
        number = float(value)
    except ValueError:
        raise ProfileInvalid(f"profile {name!r}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ProfileInvalid(f"profile {name!r}: {key} must be a whole number, got {value!r}")
    return int(number)


def profile_from_mapping(raw: Mapping[str, Any]) -> VideoProfile:
    """One profile from Livepeer's JSON fields, validated."""
    if not isinstance(raw, Mapping):
        raise ProfileInvalid(f"a profile must be a JSON object, got {type(raw).__name__}")
    known = {
        "name",
        "width",
        "height",
        "bitrate",
        "fps",
        "fpsDen",
        "profile",
        "gop",
        "encoder",
        "colorDepth",
        "chromaFormat",
        "quality",
    }
    unknown = sorted(set(raw) - known)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ProfileInvalid("every profile needs a non-empty string 'name'")
    if unknown:
        raise ProfileInvalid(f"profile {name!r}: unknown field(s) {', '.join(unknown)}")
    for required in ("width", "height", "bitrate"):
        if required not in raw:
            raise ProfileInvalid(f"profile {name!r}: missing required field {required!r}")
    gop = raw.get("gop", "")
    if isinstance(gop, (int, float)) and not isinstance(gop, bool):
        gop = f"{gop:g}"
    if not isinstance(gop, str):
        raise ProfileInvalid(f'profile {name!r}: gop must be seconds or "intra", got {gop!r}')
    profile = raw.get("profile") or ""
    encoder = raw.get("encoder") or "H.264"
    if not isinstance(profile, str) or not isinstance(encoder, str):
        raise ProfileInvalid(f"profile {name!r}: profile and encoder must be strings")
    aliases = {
        "h264": "H.264",
        "h.264": "H.264",
        "hevc": "HEVC",
        "h265": "HEVC",
        "av1": "AV1",
        "vp9": "VP9",
    }
    return VideoProfile(
        name=name,
        width=_int_field(name, raw, "width", 0),
        height=_int_field(name, raw, "height", 0),
        bitrate=_int_field(name, raw, "bitrate", 0),
        fps=_int_field(name, raw, "fps", 0),
        fps_den=_int_field(name, raw, "fpsDen", 1) or 1,
        profile=profile.lower(),
        gop=gop.strip(),
        encoder=aliases.get(encoder.lower(), encoder),
    )


def profiles_from_json(data: str | bytes | Any) -> list[VideoProfile]:
    """Profiles from Livepeer's JSON: a list, or an object with a ``profiles`` list."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise ProfileInvalid(f"profiles are not valid JSON: {e}") from e
    if isinstance(data, Mapping) and "profiles" in data:
        data = data["profiles"]
    if not isinstance(data, list):
        raise ProfileInvalid("profiles JSON must be a list of profile objects")
    return _checked([profile_from_mapping(item) for item in data])


def parse_profiles(spec: str | Iterable[str] | Path) -> list[VideoProfile]:
    """Profiles from comma-separated built-in names, a list of names, or a JSON file."""
    if isinstance(spec, Path):
        try:
            return profiles_from_json(spec.read_text())
        except OSError as e:
            raise ProfileInvalid(f"cannot read profiles file {spec}: {e.strerror}") from e
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    return _checked([profile_by_name(n) for n in names if n.strip()])


def _checked(profiles: list[VideoProfile]) -> list[VideoProfile]:
    if not profiles:
        raise ProfileInvalid("at least one profile is required")
    if len(profiles) > 10:
        raise ProfileInvalid(f"at most 10 renditions per segment, got {len(profiles)}")
    seen: set[str] = set()
    for p in profiles:
        if p.name in seen:
            raise ProfileInvalid(f"profile name {p.name!r} appears more than once")
        seen.add(p.name)
    return profiles
