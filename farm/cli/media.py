"""Media commands: ``farm transcode``, ``farm bench``, ``farm gpus``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click
from tqdm import tqdm

from farm.errors import FarmError, InputInvalid
from farm.gpu import detect_gpus, parse_gpu_selection
from farm.media.assemble import variant
from farm.media.bench import BenchConfig, run_bench
from farm.media.codecs import hardware_report
from farm.media.engine import EngineOptions, transcode
from farm.media.output import EXTENSIONS, FORMATS
from farm.media.playlist import PlaylistSegment, master_playlist, media_playlist, read_playlist
from farm.media.profiles import DEFAULT_PROFILES, VideoProfile, parse_profiles
from farm.media.result import TranscodeResult
from farm.media.synth import make_segment

__all__ = ["bench_cmd", "gpus_cmd", "transcode_cmd"]


def _profiles(
    names: str | None, json_file: Path | None, default: Sequence[str]
) -> list[VideoProfile]:
    if names and json_file:
        raise click.UsageError("give --profiles or --profiles-json, not both")
    if json_file is not None:
        return parse_profiles(json_file)
    return parse_profiles(",".join(default) if names is None else names)


def _expand_inputs(inputs: Sequence[Path]) -> tuple[list[PlaylistSegment], bool]:
    """Segments from files and playlists, and whether any playlist was given."""
    segments: list[PlaylistSegment] = []
    from_playlist = False
    for path in inputs:
        if path.suffix.lower() == ".m3u8":
            segments.extend(read_playlist(path))
            from_playlist = True
        else:
            segments.append(PlaylistSegment(path, None))
    return segments, from_playlist


def _engine_options(
    fmt: str, preset: str, gpu: int | None, cpu: bool, serial: bool
) -> EngineOptions:
    return EngineOptions(
        fmt=fmt, preset=preset, gpu=None if cpu else gpu, prefer_gpu=not cpu, parallel=not serial
    )


profiles_option = click.option(
    "-p",
    "--profiles",
    "profile_names",
    metavar="NAMES",
    help="Comma-separated Livepeer profile names, e.g. P360p30fps16x9,P240p30fps16x9.",
)
profiles_json_option = click.option(
    "--profiles-json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Livepeer JSON profiles file (a list, or an object with a 'profiles' list).",
)
format_option = click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(sorted(FORMATS)),
    default="mpegts",
    show_default=True,
    help="Output container.",
)
preset_option = click.option(
    "--preset", default="veryfast", show_default=True, help="x264/x265 preset for CPU encodes."
)
gpu_option = click.option(
    "--gpu",
    type=int,
    default=None,
    help="GPU index for NVENC/NVDEC (falls back to CPU where absent).",
)


@click.command("transcode")
@click.argument(
    "inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@profiles_option
@profiles_json_option
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Output directory.",
)
@format_option
@preset_option
@gpu_option
@click.option("--cpu", is_flag=True, help="Never use the GPU.")
@click.option("--serial", is_flag=True, help="Encode renditions one after another.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary per input.")
def transcode_cmd(
    inputs: tuple[Path, ...],
    profile_names: str | None,
    profiles_json: Path | None,
    out_dir: Path,
    fmt: str,
    preset: str,
    gpu: int | None,
    cpu: bool,
    serial: bool,
    as_json: bool,
) -> None:
    """Transcode segments (MPEG-TS/MP4 files or an m3u8 playlist) into a rendition ladder.

    Each rendition is written to OUT/<profile>/<input name>.<ext>; a playlist input also
    gets one media playlist per rendition and a master playlist.
    """
    profiles = _profiles(profile_names, profiles_json, DEFAULT_PROFILES)
    segments, from_playlist = _expand_inputs(inputs)
    opts = _engine_options(fmt, preset, gpu, cpu, serial)
    out_dir.mkdir(parents=True, exist_ok=True)
    ext = EXTENSIONS[fmt]
    entries: dict[str, list[tuple[str, float]]] = {p.name: [] for p in profiles}
    failures: list[str] = []
    bar = tqdm(segments, unit="seg", disable=len(segments) < 2, file=sys.stderr)
    for seg in bar:
        bar.set_postfix_str(seg.path.name)
        try:
            result = transcode(seg.path, profiles, opts)
        except FarmError as e:
            failures.append(f"{seg.path}: {e}")
            if len(segments) > 1:
                tqdm.write(f"error: {seg.path}: {e}", file=sys.stderr)
            continue
        _write_renditions(result, out_dir, seg.path.stem, ext, entries)
        if as_json:
            tqdm.write(json.dumps(_summary(seg.path, result)))
        elif len(segments) == 1:
            for r in result.renditions:
                click.echo(
                    f"{r.profile.name}: {r.width}x{r.height} {r.frames} frames "
                    f"{r.duration:.3f} s {len(r.data)} bytes ({r.encoder}) -> "
                    f"{out_dir / r.profile.name / (seg.path.stem + '.' + ext)}"
                )
    if from_playlist and not failures:
        _write_playlists(out_dir, profiles, entries)
    if failures:
        if len(segments) == 1:
            raise click.ClickException(failures[0])
        raise click.ClickException(
            f"{len(failures)} of {len(segments)} inputs failed; first: {failures[0]}"
        )


def _write_renditions(
    result: TranscodeResult,
    out_dir: Path,
    stem: str,
    ext: str,
    entries: dict[str, list[tuple[str, float]]],
) -> None:
    for r in result.renditions:
        folder = out_dir / r.profile.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.{ext}").write_bytes(r.data)
        entries[r.profile.name].append((f"{stem}.{ext}", r.duration))


def _write_playlists(
    out_dir: Path, profiles: Sequence[VideoProfile], entries: dict[str, list[tuple[str, float]]]
) -> None:
    variants = []
    for p in profiles:
        folder = out_dir / p.name
        (folder / "index.m3u8").write_text(media_playlist(entries[p.name]))
        # Described as encoded: peak and average bit rates, size and codecs (RFC 8216).
        sizes = [((folder / name).stat().st_size, d) for name, d in entries[p.name]]
        first = (folder / entries[p.name][0][0]).read_bytes()
        variants.append(variant(f"{p.name}/index.m3u8", first, sizes))
    (out_dir / "index.m3u8").write_text(master_playlist(variants))


def _summary(path: Path, result: TranscodeResult) -> dict[str, object]:
    return {
        "input": str(path),
        "decoder": result.decoder,
        "decoded_frames": result.decoded_frames,
        "decoded_pixels": result.decoded_pixels,
        "encoded_pixels": result.encoded_pixels,
        "duration": round(result.input_duration, 6),
        "seconds": round(result.timings["total"], 4),
        "renditions": [r.summary() for r in result.renditions],
    }


@click.command("bench")
@click.option(
    "--in",
    "source",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="m3u8 media playlist or one segment; default: synthetic 1080p30 segments.",
)
@click.option(
    "--transcoding-options",
    "-p",
    "options",
    default="P240p30fps16x9,P360p30fps16x9,P720p30fps16x9",
    show_default=True,
    help="Profile names, or a JSON profiles file.",
)
@click.option("--concurrent-sessions", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option(
    "--concurrent-session-delay",
    type=float,
    default=0.3,
    show_default=True,
    help="Seconds between session starts.",
)
@click.option(
    "--segs",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Segments per session (0 = all).",
)
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True)
@click.option(
    "--live/--no-live", default=False, show_default=True, help="Pace each session in real time."
)
@click.option(
    "--nvidia",
    "gpus",
    default="none",
    show_default=True,
    help="GPUs for sessions: all, none or indices; session k uses gpus[k % n].",
)
@click.option(
    "--out-prefix",
    type=click.Path(path_type=Path),
    default=None,
    help="Write renditions as <prefix><session>_<profile>_<seg>.<ext>.",
)
@click.option(
    "--synthetic",
    default="1920x1080",
    show_default=True,
    help="Size of synthetic segments when no --in is given.",
)
@format_option
@preset_option
@click.option("--serial", is_flag=True, help="Encode renditions one after another.")
def bench_cmd(
    source: Path | None,
    options: str,
    concurrent_sessions: int,
    concurrent_session_delay: float,
    segs: int,
    repeat: int,
    live: bool,
    gpus: str,
    out_prefix: Path | None,
    synthetic: str,
    fmt: str,
    preset: str,
    serial: bool,
) -> None:
    """Benchmark the engine as livepeer_bench does: CSV rows on stdout, tables on stderr."""
    opt_path = Path(options)
    profiles = parse_profiles(opt_path if opt_path.suffix == ".json" else options)
    segments = _bench_segments(source, synthetic, segs)
    devices = parse_gpu_selection(gpus, len(detect_gpus().gpus)) if gpus != "none" else []
    cfg = BenchConfig(
        segments=segments,
        profiles=profiles,
        concurrent_sessions=concurrent_sessions,
        session_delay_s=concurrent_session_delay,
        repeat=repeat,
        live=live,
        gpus=devices,
        out_prefix=out_prefix,
        options=EngineOptions(fmt=fmt, preset=preset, parallel=not serial),
        source_label=str(source) if source else f"synthetic {synthetic} 30fps",
    )
    run_bench(cfg, sys.stdout, sys.stderr)


def _bench_segments(source: Path | None, synthetic: str, segs: int) -> list[tuple[bytes, float]]:
    if source is None:
        try:
            width, height = (int(v) for v in synthetic.lower().split("x"))
        except ValueError:
            raise click.BadParameter("expected WIDTHxHEIGHT", param_hint="--synthetic") from None
        count = segs or 4
        return [
            (
                make_segment(
                    width,
                    height,
                    30,
                    2.0,
                    start=2.0 * k,
                    seed=k,
                    bitrate=6_500_000 if width >= 1920 else None,
                ),
                2.0,
            )
            for k in range(count)
        ]
    listed = (
        read_playlist(source)
        if source.suffix.lower() == ".m3u8"
        else [PlaylistSegment(source, None)]
    )
    if segs:
        listed = listed[:segs]
    out = []
    for seg in listed:
        try:
            data = seg.path.read_bytes()
        except OSError as e:
            raise InputInvalid(f"cannot read segment {seg.path}: {e.strerror}") from e
        out.append((data, seg.duration or _probe_duration(data)))
    return out


def _probe_duration(data: bytes) -> float:
    import io

    import av

    try:
        with av.open(io.BytesIO(data), "r") as c:
            return c.duration / av.time_base if c.duration else 2.0
    except av.FFmpegError as e:
        raise InputInvalid(f"segment is not readable media: {e}") from e


@click.command("gpus")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gpus_cmd(as_json: bool) -> None:
    """Show what NVML and the encoders report on this machine."""
    inventory = detect_gpus()
    report = {"nvml": inventory.to_dict(), "codecs": hardware_report()}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if inventory.error:
        click.echo(f"NVML: {inventory.error}")
    else:
        click.echo(f"NVML: driver {inventory.driver}, {len(inventory.gpus)} GPU(s)")
    for g in inventory.gpus:
        limit = g.encoder_session_limit or "no limit"
        click.echo(
            f"  GPU {g.index}: {g.name}  memory {g.memory_free >> 20}/{g.memory_total >> 20}"
            f" MiB free  NVENC sessions {g.encoder_sessions} in use ({limit})"
        )
    codecs = report["codecs"]
    for group, found in codecs.items():
        opened = [k for k, v in found.items() if v]
        missing = [k for k, v in found.items() if not v]
        click.echo(
            f"{group}: open {', '.join(opened) or '-'}; unavailable {', '.join(missing) or '-'}"
        )
    if not any(codecs["encoders"].values()):
        click.echo("engine: no NVENC encoder opens here; video is encoded on the CPU")
