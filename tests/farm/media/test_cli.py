"""The farm CLI run in-process through its real entry point, ``farm.cli.main``."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from farm.cli import main
from farm.gpu import detect_gpus
from tests.factories import probe, stream


def farm(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run ``farm ARGS`` as the console script does; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["farm", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def hls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 1 s 320x240 segments and their playlist."""
    return stream(tmp_path_factory.mktemp("hls") / "stream", segments=2, seconds=1.0)


def test_transcode_one_file(
    hls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, stdout, _ = farm(
        ["transcode", str(hls.parent / "seg0.ts"), "-p", "P144p30fps16x9", "-o", str(out)],
        monkeypatch,
        capsys,
    )
    assert code == 0
    written = out / "P144p30fps16x9" / "seg0.ts"
    assert "P144p30fps16x9: 256x144 30 frames 1.000 s" in stdout
    assert str(written) in stdout
    seen = probe(written.read_bytes())
    assert (seen.codec, seen.width, seen.height, seen.frames, seen.has_audio) == (
        "h264",
        256,
        144,
        30,
        True,
    )
    assert not (out / "index.m3u8").exists(), "no playlists for a single file"


def test_transcode_playlist_writes_renditions_and_playlists(
    hls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    names = ["P144p30fps16x9", "P240p25fps16x9"]
    code, _, _ = farm(
        ["transcode", str(hls), "-p", ",".join(names), "-o", str(out), "--json"],
        monkeypatch,
        capsys,
    )
    assert code == 0
    master = (out / "index.m3u8").read_text()
    assert master.startswith("#EXTM3U")
    # Each variant as encoded: its segments' peak and average bit rate, size and codecs.
    for name, size in zip(names, ("256x144", "426x240"), strict=True):
        sizes = [(out / name / seg).stat().st_size for seg in ("seg0.ts", "seg1.ts")]
        peak, average = math.ceil(max(sizes) * 8 / 1.0), math.ceil(sum(sizes) * 8 / 2.0)
        line = f'BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},RESOLUTION={size},CODECS="avc1.64'
        assert line in master and f'mp4a.40.2"\n{name}/index.m3u8' in master, master
    for name, frames in zip(names, (30, 25), strict=True):
        media = (out / name / "index.m3u8").read_text()
        assert media.splitlines()[-1] == "#EXT-X-ENDLIST"
        assert media.count("#EXTINF:1.000000,") == 2
        assert "seg0.ts" in media and "seg1.ts" in media
        for seg in ("seg0.ts", "seg1.ts"):
            seen = probe((out / name / seg).read_bytes())
            assert seen.frames == frames and seen.key_frames[0] == 0


def test_transcode_json_summary(
    hls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ladder = tmp_path / "ladder.json"
    ladder.write_text(
        json.dumps([{"name": "tiny", "width": 160, "height": 120, "bitrate": 150000, "fps": 15}])
    )
    code, stdout, _ = farm(
        ["transcode", str(hls.parent / "seg1.ts"), "--profiles-json", str(ladder), "-f", "mp4",
         "-o", str(tmp_path / "out"), "--json"],
        monkeypatch,
        capsys,
    )  # fmt: skip
    assert code == 0
    summary = json.loads(stdout)
    assert summary["decoded_frames"] == 30
    assert summary["decoded_pixels"] == 30 * 320 * 240
    (r,) = summary["renditions"]
    assert (r["name"], r["format"], r["frames"], r["width"], r["height"]) == (
        "tiny",
        "mp4",
        15,
        160,
        120,
    )
    assert summary["encoded_pixels"] == r["pixels"] == 15 * 160 * 120
    seen = probe((tmp_path / "out" / "tiny" / "seg1.mp4").read_bytes())
    assert seen.format_name.startswith("mov") and seen.frames == 15


def test_transcode_bad_input_is_one_line_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.ts"
    bad.write_bytes(b"not video at all" * 64)
    code, stdout, stderr = farm(
        ["transcode", str(bad), "-o", str(tmp_path / "out")], monkeypatch, capsys
    )
    assert code == 1
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "not a media container" in lines[0], stderr


def test_transcode_bad_profile_is_one_line_exit_1(
    hls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = farm(
        ["transcode", str(hls.parent / "seg0.ts"), "-p", "P1080p", "-o", str(tmp_path)],
        monkeypatch,
        capsys,
    )
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown profile 'P1080p'")


def test_console_script_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "empty.ts"
    bad.write_bytes(b"\0" * 10)
    farm_bin = Path(sys.executable).parent / "farm"  # the console script `make install` makes
    proc = subprocess.run(
        [str(farm_bin), "transcode", str(bad), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_bench_on_playlist(
    hls: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, stderr = farm(
        ["bench", "--in", str(hls), "--segs", "2", "-p", "P144p30fps16x9"], monkeypatch, capsys
    )
    assert code == 0
    lines = stdout.strip().splitlines()
    assert lines[0] == "timestamp,session,segment,seg_dur,transcode_time,frames"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 2
    for k, row in enumerate(sorted(rows, key=lambda r: int(r[2]))):
        assert len(row) == 6
        assert (row[1], row[2], float(row[3]), int(row[5])) == ("0", str(k), 1.0, 30)
        assert float(row[4]) > 0
    assert "Real-Time Duration Ratio" in stderr
    assert re.search(r"\| Total Segs Transcoded +\| +2 \|", stderr), stderr
    assert str(hls) in stderr


@pytest.mark.skipif(bool(detect_gpus().gpus), reason="NVML sees a GPU on this machine")
def test_gpus_json_without_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, _ = farm(["gpus", "--json"], monkeypatch, capsys)
    assert code == 0
    report = json.loads(stdout)
    assert set(report) == {"nvml", "codecs"}
    assert report["nvml"]["gpus"] == [] and report["nvml"]["error"]
    assert report["codecs"]["encoders"]["h264_nvenc"] is False
    assert report["codecs"]["cpu_encoders"]["libx264"] is True
    assert report["codecs"]["cpu_encoders"]["libx265"] is True


@pytest.mark.skipif(bool(detect_gpus().gpus), reason="NVML sees a GPU on this machine")
def test_gpus_text_without_gpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, _ = farm(["gpus"], monkeypatch, capsys)
    assert code == 0
    assert stdout.startswith("NVML: ")
    assert "encoded on the CPU" in stdout
