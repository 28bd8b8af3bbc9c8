"""HLS playlists: reading media playlists of segments and writing rendition playlists."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.errors import InputInvalid

__all__ = [
    "PlaylistSegment",
    "Variant",
    "master_playlist",
    "media_playlist",
    "read_playlist",
    "segment_bandwidth",
]


@dataclass(frozen=True, slots=True)
class PlaylistSegment:
    """One segment listed in a media playlist."""

    path: Path
    duration: float | None


def read_playlist(path: Path, _depth: int = 0) -> list[PlaylistSegment]:
    """The segments of a local HLS media playlist (the first variant of a master playlist)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputInvalid(f"cannot read playlist {path}: {e}") from e
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise InputInvalid(f"{path} is not an HLS playlist (no #EXTM3U header)")
    segments: list[PlaylistSegment] = []
    duration: float | None = None
    variant_next = False
    for line in lines[1:]:
        if line.startswith("#EXT-X-STREAM-INF"):
            variant_next = True
        elif line.startswith("#EXTINF:"):
            try:
                duration = float(line[8:].split(",", 1)[0])
            except ValueError:
                raise InputInvalid(f"{path}: bad #EXTINF line {line!r}") from None
        elif not line.startswith("#"):
            if "://" in line:
                raise InputInvalid(f"{path}: only local segment paths are supported, got {line}")
            target = (path.parent / line).resolve()
            if variant_next:
                if _depth:
                    raise InputInvalid(f"{path}: nested master playlists")
                return read_playlist(target, _depth + 1)
            segments.append(PlaylistSegment(target, duration))
            duration = None
    if not segments:
        raise InputInvalid(f"playlist {path} lists no segments")
    return segments


def media_playlist(entries: Sequence[tuple[str, float]]) -> str:
    """A VOD media playlist for (uri, duration) entries."""
    target = max((int(d + 0.999) for _, d in entries), default=1)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    for uri, duration in entries:
        lines += [f"#EXTINF:{duration:.6f},", uri]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Variant:
    """One variant stream of a master playlist, as measured from its segments."""

    uri: str
    #: The peak segment bit rate (RFC 8216 4.3.4.2): the most bits per second of any segment.
    bandwidth: int
    #: The average bit rate over all the segments.
    average_bandwidth: int
    width: int
    height: int
    #: RFC 6381 codec strings of every format in the variant (farm.media.codec_strings);
    #: None leaves the attribute out rather than list part of them.
    codecs: str | None = None


def segment_bandwidth(segments: Sequence[tuple[int, float]]) -> tuple[int, int]:
    """(peak, average) bit rate in bit/s of segments given as (bytes, seconds), rounded up.

    Raises ValueError for no segments or a duration that is not positive.
    """
    if not segments:
        raise ValueError("no segments to measure")
    if any(not duration > 0 for _, duration in segments):
        raise ValueError(f"segment durations must be positive: {[d for _, d in segments]}")
    peak = max(size * 8 / duration for size, duration in segments)
    average = sum(size for size, _ in segments) * 8 / sum(d for _, d in segments)
    return math.ceil(peak), math.ceil(average)


def master_playlist(variants: Sequence[Variant]) -> str:
    """A master playlist offering ``variants`` in order."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3"]
    for v in variants:
        attributes = [
            f"BANDWIDTH={v.bandwidth}",
            f"AVERAGE-BANDWIDTH={v.average_bandwidth}",
            f"RESOLUTION={v.width}x{v.height}",
        ]
        if v.codecs:
            attributes.append(f'CODECS="{v.codecs}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), v.uri]
    return "\n".join(lines) + "\n"
