"""HLS playlists: reading media playlists of segments and writing rendition playlists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.errors import InputInvalid

__all__ = ["Segment", "master_playlist", "media_playlist", "read_playlist"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment listed in a media playlist."""

    path: Path
    duration: float | None


def read_playlist(path: Path, _depth: int = 0) -> list[Segment]:
    """The segments of a local HLS media playlist (the first variant of a master playlist)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputInvalid(f"cannot read playlist {path}: {e}") from e
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise InputInvalid(f"{path} is not an HLS playlist (no #EXTM3U header)")
    segments: list[Segment] = []
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
            segments.append(Segment(target, duration))
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


def master_playlist(variants: Sequence[tuple[str, int, int, int]]) -> str:
    """A master playlist for (uri, bandwidth, width, height) variants."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3"]
    for uri, bandwidth, width, height in variants:
        lines += [f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={width}x{height}", uri]
    return "\n".join(lines) + "\n"
