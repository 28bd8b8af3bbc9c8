"""Studio-style file transcoding: a long input split, transcoded across the pool, assembled."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from farm.media.engine import transcode
from farm.media.profiles import profiles_from_json
from farm.media.synth import make_segment
from gateway.playback import PlaybackSigner
from gateway.settings import GatewaySettings
from tests.conftest import need_tool
from tests.factories import bright_quarter, coded_clip, turned_clip
from tests.gateway.conftest import ADMIN, Gateway

PROFILES = [
    {"name": "low", "width": 256, "height": 144, "bitrate": 300000, "fps": 30},
    {"name": "mid", "width": 320, "height": 180, "bitrate": 500000, "fps": 30},
]


@pytest.fixture(scope="module")
def source() -> Iterator[str]:
    """An HTTP server on loopback serving a 9-second MP4 at /clip.mp4, a 4-second WebM (VP9
    and Opus, as a browser records) at /clip.webm, a turned MP4 at /turned.mp4 and 4 seconds
    of DVD video (MPEG-2 in open GOPs, AC-3, 25 fps) at /dvd.vob."""
    clips = {
        "/dvd.vob": coded_clip("mpeg2video", "vob", seconds=4.0, bframes=2, audio="ac3"),
        "/clip.mp4": make_segment(320, 240, 30, 9.0, gop_seconds=1.0, fmt="mp4"),
        "/turned.mp4": turned_clip(90),  # a phone's portrait video: coded landscape, turned
        "/clip.webm": make_segment(
            320,
            240,
            30,
            4.0,
            gop_seconds=1.0,
            fmt="webm",
            codec="libvpx-vp9",
            audio_codec="libopus",
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/to/"):  # /to/<url>: a redirect there
                self.send_response(302)
                self.send_header("Location", self.path[4:])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            clip = clips.get(self.path)
            if clip is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(clip)))
            self.end_headers()
            self.wfile.write(clip)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def post_task(gw: Gateway, body: dict[str, Any]) -> tuple[str, str, dict[str, str], httpx.Response]:
    """A new key with credits to spare, and its POST /api/transcode of ``body``: (key id,
    key, its Authorization header, the answer)."""
    key_id, key = gw.key(credits=10**9)
    auth = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{gw.url}/api/transcode", timeout=30, headers=auth, json=body)
    return key_id, key, auth, r


def wait_task(gw: Gateway, key: str, task_id: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        task = httpx.get(
            f"{gw.url}/api/task/{task_id}", timeout=10, headers={"Authorization": f"Bearer {key}"}
        ).json()
        seen.append(task["status"]["phase"])
        if task["status"]["phase"] in ("completed", "failed"):
            task["seen"] = seen
            return task  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"task still {seen[-1]} after {timeout} s")


def variant_segments(gw: Gateway, auth: dict[str, str], output: Any, name: str) -> list[bytes]:
    """The MPEG-TS segments of a finished task's HLS variant ``name``, as a player fetches
    them."""
    media_url = gw.url + output["hls"]["url"].replace("index.m3u8", f"{name}/index.m3u8")
    playlist = httpx.get(media_url, headers=auth, timeout=10).text
    return [
        httpx.get(media_url.replace("index.m3u8", line), headers=auth, timeout=10).content
        for line in playlist.splitlines()
        if line.endswith(".ts")
    ]


def test_file_transcode_produces_a_playable_hls_ladder_and_mp4(
    gateway: Gateway, source: str
) -> None:
    key_id, key, auth, r = post_task(
        gateway,
        {
            "input": {"url": f"{source}/clip.mp4"},
            "outputs": {"hls": {"path": "/out"}, "mp4": {"path": "/out"}},
            "profiles": PROFILES,
            "targetSegmentSizeSecs": 3,
        },
    )
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["type"] == "transcode-file"
    assert task["status"]["phase"] == "pending"
    done = wait_task(gateway, key, task["id"])
    assert done["status"]["phase"] == "completed", done["status"]  # type: ignore[index]
    assert "running" in done["seen"]  # type: ignore[operator]
    output = done["output"]
    assert output["segments"] == 3  # type: ignore[index]
    base = gateway.url
    master = httpx.get(base + output["hls"]["url"], headers=auth, timeout=10).text  # type: ignore[index]
    assert "RESOLUTION=256x144" in master and "RESOLUTION=320x180" in master
    total_frames = 0
    for name in ("low", "mid"):
        media_url = base + output["hls"]["url"].replace("index.m3u8", f"{name}/index.m3u8")  # type: ignore[index]
        playlist = httpx.get(media_url, headers=auth, timeout=10).text
        segments = [line for line in playlist.splitlines() if line.endswith(".ts")]
        durations = [
            float(line[8:].rstrip(","))
            for line in playlist.splitlines()
            if line.startswith("#EXTINF:")
        ]
        assert len(segments) == 3 and abs(sum(durations) - 9.0) < 0.05
        frames = 0
        for seg in segments:
            data = httpx.get(media_url.replace("index.m3u8", seg), headers=auth, timeout=10).content
            with av.open(io.BytesIO(data)) as c:
                decoded = list(c.decode(video=0))
                assert decoded[0].key_frame and c.streams.audio
                frames += len(decoded)
        assert frames == 270
        total_frames += frames
    mp4 = {m["name"]: m for m in output["mp4"]}  # type: ignore[index]
    data = httpx.get(base + mp4["mid"]["url"], headers=auth, timeout=10).content
    with av.open(io.BytesIO(data)) as c:
        assert c.format.name.startswith("mov")
        assert len(list(c.decode(video=0))) == 270
    assert total_frames == 540
    # Charged what was encoded: 9 s x 30 fps x (256x144 + 320x180) at 1 credit per pixel.
    assert output["charged"] == 270 * (256 * 144 + 320 * 180)  # type: ignore[index]
    assert gateway.balance(key_id) == 10**9 - output["charged"]  # type: ignore[index]


def test_a_webm_recording_is_transcoded_like_an_mp4(gateway: Gateway, source: str) -> None:
    key_id, key, auth, r = post_task(
        gateway,
        {
            "input": {"url": f"{source}/clip.webm"},
            "profiles": PROFILES[:1],
            "targetSegmentSizeSecs": 2,
        },
    )
    assert r.status_code == 200, r.text
    done = wait_task(gateway, key, r.json()["id"])
    assert done["status"]["phase"] == "completed", done["status"]  # type: ignore[index]
    output = done["output"]
    assert output["segments"] == 2  # type: ignore[index]
    frames = 0
    for data in variant_segments(gateway, auth, output, "low"):
        with av.open(io.BytesIO(data)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            # The recording's Opus, which HLS players do not decode in MPEG-TS, is AAC.
            assert c.streams.audio[0].codec_context.name == "aac"
            frames += len(list(c.decode(video=0)))
    assert frames == 120
    (mp4,) = output["mp4"]  # type: ignore[index]
    data = httpx.get(gateway.url + mp4["url"], headers=auth, timeout=10).content
    with av.open(io.BytesIO(data)) as c:
        assert len(list(c.decode(video=0))) == 120 and c.streams.audio
    assert output["charged"] == 120 * 256 * 144  # type: ignore[index]
    assert gateway.balance(key_id) == 10**9 - output["charged"]  # type: ignore[index]


def test_dvd_video_goes_to_the_farm_and_loses_no_picture_at_its_open_gops(
    gateway: Gateway, source: str
) -> None:
    # MPEG-2, which no Livepeer orchestrator decodes, cut every second at I-frames that open
    # open GOPs: each segment cut there carries the GOP before it, so no picture is lost.
    profiles = [{"name": "low", "width": 256, "height": 144, "bitrate": 300000, "fps": 25}]
    _, key, auth, r = post_task(
        gateway,
        {"input": {"url": f"{source}/dvd.vob"}, "profiles": profiles, "targetSegmentSizeSecs": 1},
    )
    assert r.status_code == 200, r.text
    done = wait_task(gateway, key, r.json()["id"])
    assert done["status"]["phase"] == "completed", done["status"]  # type: ignore[index]
    output = done["output"]
    assert output["segments"] >= 3  # type: ignore[index]
    frames = 0
    for data in variant_segments(gateway, auth, output, "low"):
        with av.open(io.BytesIO(data)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert c.streams.audio[0].codec_context.name == "ac3"  # HLS carries AC-3 as is
            frames += len(list(c.decode(video=0)))
    assert frames == 100
    (mp4,) = output["mp4"]  # type: ignore[index]
    data = httpx.get(gateway.url + mp4["url"], headers=auth, timeout=10).content
    with av.open(io.BytesIO(data)) as c:
        times = [f.time for f in c.decode(video=0)]
    assert len(times) == 100 and len(set(times)) == 100


def test_a_turned_upload_comes_back_upright_in_hls_and_mp4(gateway: Gateway, source: str) -> None:
    # Every orchestrator of this gateway is a farm cluster: the segments keep the input's
    # display matrix, and the engine turns each rendition upright, as ffmpeg would.
    _, key, auth, r = post_task(
        gateway, {"input": {"url": f"{source}/turned.mp4"}, "profiles": PROFILES[:1]}
    )
    done = wait_task(gateway, key, r.json()["id"])
    assert done["status"]["phase"] == "completed", done["status"]  # type: ignore[index]
    output = done["output"]
    master = httpx.get(gateway.url + output["hls"]["url"], headers=auth, timeout=10).text  # type: ignore[index]
    assert "RESOLUTION=144x256" in master  # portrait
    media_url = gateway.url + output["hls"]["url"].replace("index.m3u8", "low/index.m3u8")  # type: ignore[index]
    playlist = httpx.get(media_url, headers=auth, timeout=10).text
    first = next(line for line in playlist.splitlines() if line.endswith(".ts"))
    segment = httpx.get(media_url.replace("index.m3u8", first), headers=auth, timeout=10).content
    upright = transcode(turned_clip(90), profiles_from_json(PROFILES[:1])).renditions[0].data
    assert bright_quarter(segment) == bright_quarter(upright) == ("bottom-left", 144, 256)
    (mp4,) = output["mp4"]  # type: ignore[index]
    data = httpx.get(gateway.url + mp4["url"], headers=auth, timeout=10).content
    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 30 and {f.rotation for f in frames} == {0}  # no second turn
    assert bright_quarter(data) == ("bottom-left", 144, 256)


def test_task_with_bad_input_fails_cleanly_and_charges_nothing(
    gateway: Gateway, source: str
) -> None:
    key_id, key, auth, r = post_task(gateway, {"input": {"url": f"{source}/missing.mp4"}})
    failed = wait_task(gateway, key, r.json()["id"])
    assert failed["status"]["phase"] == "failed"  # type: ignore[index]
    assert "404" in failed["status"]["errorMessage"]  # type: ignore[index]
    assert gateway.balance(key_id) == 10**9
    bad = httpx.post(
        f"{gateway.url}/api/transcode",
        headers=auth,
        timeout=30,
        json={"input": {"url": "file:///etc/passwd"}},
    )
    assert bad.status_code == 400 and bad.json()["code"] == "bad_request"
    url = {"url": f"{source}/clip.mp4"}
    for body, message in (
        ({"input": url, "outputs": {}}, "outputs: Dictionary should have at least 1 item"),
        ({"input": {"url": "https://x/" + "a" * 9000}}, "input.url: String should have at most"),
        (
            {"input": url, "profiles": [{"name": "a", "width": 320, "height": 240, "bitrate": 10}]},
            "bitrate 10 is below the minimum",
        ),
    ):
        refused = httpx.post(f"{gateway.url}/api/transcode", headers=auth, timeout=30, json=body)
        assert refused.status_code == 400, refused.text
        assert message in refused.json()["errors"][0], refused.json()
    assert gateway.balance(key_id) == 10**9
    other_key = gateway.key(credits=0)[1]
    hidden = httpx.get(
        f"{gateway.url}/api/task/{r.json()['id']}",
        timeout=10,
        headers={"Authorization": f"Bearer {other_key}"},
    )
    assert hidden.status_code == 404


def test_input_urls_on_internal_addresses_fail_alike_without_a_request(
    gateway: Gateway, source: str
) -> None:
    # The gateway allows 127.0.0.1/32 (its operator's storage, FARM_FETCH_ALLOW) and nothing
    # else that is not public: not the rest of loopback, however it is spelled, nor the cloud's
    # metadata address, nor a redirect to any of them.
    key_id, key = gateway.key(credits=10**9)
    auth = {"Authorization": f"Bearer {key}"}
    port = source.rsplit(":", 1)[1]
    urls = [
        f"http://127.0.0.2:{port}/clip.mp4",
        f"http://2130706434:{port}/clip.mp4",
        f"http://0.0.0.0:{port}/clip.mp4",
        f"http://[::1]:{port}/clip.mp4",
        f"http://[::ffff:127.0.0.2]:{port}/clip.mp4",
        "http://169.254.169.254/latest/meta-data/",
        f"http://10.255.255.1:{port}/clip.mp4",
        f"{source}/to/http://127.0.0.2:{port}/clip.mp4",
        f"{source}/to/http://169.254.169.254/latest/meta-data/",
    ]
    for url in urls:
        r = httpx.post(
            f"{gateway.url}/api/transcode", headers=auth, timeout=30, json={"input": {"url": url}}
        )
        assert r.status_code == 200, r.text
        failed = wait_task(gateway, key, r.json()["id"])
        assert failed["status"] == {  # type: ignore[comparison-overlap]
            **failed["status"],  # type: ignore[dict-item]
            "phase": "failed",
            "errorMessage": "the URL could not be fetched",
        }, url
    assert gateway.balance(key_id) == 10**9


def _deep(depth: int = 100_000) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_json_is_400_and_the_gateway_lives_on(gateway: Gateway) -> None:
    # A dispatched segment builds the pool's farm clients, which import the chain libraries
    # (py_ecc once raised the recursion limit so far that json.loads crashed the process).
    _, key = gateway.key(credits=10**9)
    auth = {"Authorization": f"Bearer {key}"}
    segment = make_segment(160, 120, 30, 1.0)
    r = httpx.post(f"{gateway.url}/live/deep/0.ts", content=segment, headers=auth, timeout=120)
    assert r.status_code == 200, r.text
    json_type = {"Content-Type": "application/json"}
    for path, headers in (("/admin/keys", {}), ("/api/transcode", auth)):
        r = httpx.post(
            f"{gateway.url}{path}", content=_deep(), headers={**headers, **json_type}, timeout=30
        )
        assert r.status_code == 400 and r.json()["code"] == "bad_request", r.text
    assert gateway.proc.poll() is None
    assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200


def test_json_bodies_over_the_cap_are_413_before_auth(gateway: Gateway) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        yield b'{"name": "'
        for _ in range(9):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    for path in ("/admin/keys", "/api/transcode"):
        r = httpx.post(
            f"{gateway.url}{path}",
            content=chunks(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 413, r.text
        assert r.json() == {"errors": ["Content Too Large"], "code": "payload_too_large"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/task/a%00b"),
        ("GET", "/api/task/a%00b/output/hls/index.m3u8"),
        ("GET", "/api/sessions/a%00b"),
        ("GET", "/admin/sessions/a%00b"),
        ("POST", "/admin/keys/a%00b/revoke"),
        ("POST", "/admin/keys/a%00b/topup"),
        ("POST", f"/admin/keys/{'a' * 200}/topup"),
    ],
)
def test_ids_the_database_cannot_hold_are_400(gateway: Gateway, method: str, path: str) -> None:
    token = gateway.key(credits=0)[1] if path.startswith("/api/") else ADMIN
    r = httpx.request(
        method,
        f"{gateway.url}{path}",
        headers={"Authorization": f"Bearer {token}"},
        json={"amount": 1} if method == "POST" else None,
        timeout=10,
    )
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "bad_request" and "should match pattern" in r.json()["errors"][0]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/admin/keys", {"name": "x", "credits": 2**63}, "credits: Input should be less"),
        ("/admin/keys", {"name": "a\u0000b"}, "name: String should match pattern"),
        ("TOPUP", {"amount": 2**63}, "amount: Input should be less"),
        ("TOPUP", {"amount": 2**63 - 1}, "would exceed the maximum 9223372036854775807"),
        ("TOPUP", {"amount": 1, "idempotency_key": "a\u0000"}, "idempotency_key: String"),
    ],
)
def test_admin_refuses_amounts_and_text_the_ledger_cannot_hold(
    gateway: Gateway, path: str, body: dict[str, object], message: str
) -> None:
    key_id, _ = gateway.key(credits=5)
    r = gateway.admin("POST", f"/admin/keys/{key_id}/topup" if path == "TOPUP" else path, json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["errors"][0]
    assert gateway.balance(key_id) == 5


@pytest.fixture(scope="module")
def played(gateway: Gateway, source: str) -> dict[str, Any]:
    """A completed task of the ladder in PROFILES (one transcode for the playback tests)."""
    _, key = gateway.key(credits=10**9)
    r = httpx.post(
        f"{gateway.url}/api/transcode",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        json={"input": {"url": f"{source}/clip.mp4"}, "profiles": PROFILES},
    )
    assert r.status_code == 200, r.text
    done = wait_task(gateway, key, r.json()["id"])
    assert done["status"]["phase"] == "completed", done["status"]  # type: ignore[index]
    return done


def test_a_player_opens_the_playback_url_with_no_header(
    gateway: Gateway, played: dict[str, Any], tmp_path: Path
) -> None:
    ffmpeg = need_tool("ffmpeg", hint="Debian: apt-get install ffmpeg")
    output: dict[str, Any] = played["output"]
    master = gateway.url + output["hls"]["playbackUrl"]
    assert output["playbackExpiresAt"] > time.time() * 1000 + 3600_000
    # The URL alone: ffmpeg follows the master playlist's relative URIs to the media
    # playlists and segments, all under the token.
    copied = tmp_path / "played.ts"
    run = subprocess.run(
        [ffmpeg, "-v", "error", "-i", master, "-map", "0:v:0", "-c", "copy", str(copied)],
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()
    with av.open(str(copied)) as c:
        assert len(list(c.decode(video=0))) == 270
    mp4 = tmp_path / "played.mp4"
    mid = next(m for m in output["mp4"] if m["name"] == "mid")
    run = subprocess.run(
        [ffmpeg, "-v", "error", "-i", gateway.url + mid["playbackUrl"], "-c", "copy", str(mp4)],
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()
    with av.open(str(mp4)) as c:
        assert c.streams.video[0].codec_context.width == 320
    # A browser's video element reads an MP4 in ranges.
    size = mid["bytes"]
    for asked, status, content_range, length in (
        ("bytes=0-99", 206, f"bytes 0-99/{size}", 100),
        ("bytes=-10", 206, f"bytes {size - 10}-{size - 1}/{size}", 10),
        (f"bytes={size - 5}-", 206, f"bytes {size - 5}-{size - 1}/{size}", 5),
        (f"bytes={size}-", 416, f"bytes */{size}", None),
        ("bytes=5-1", 200, None, size),
        ("bytes=0-1,5-6", 200, None, size),
    ):
        r = httpx.get(gateway.url + mid["playbackUrl"], headers={"Range": asked}, timeout=10)
        assert r.status_code == status, (asked, r.text)
        assert r.headers.get("content-range") == content_range, asked
        if length is not None:
            assert len(r.content) == length and r.headers["accept-ranges"] == "bytes"
    # Without the token the same files need the key.
    assert httpx.get(gateway.url + output["hls"]["url"], timeout=10).status_code == 401
    direct = httpx.get(master, timeout=10)
    assert direct.status_code == 200 and direct.headers["access-control-allow-origin"] == "*"


def test_a_wrong_or_expired_playback_token_is_refused(
    gateway: Gateway, played: dict[str, Any]
) -> None:
    task_id, output = played["id"], played["output"]
    url = gateway.url + output["hls"]["playbackUrl"]
    token = url.split("/play/")[1].split("/")[0]
    assert httpx.get(url, timeout=10).status_code == 200
    # The gateway's signing key: derived from its admin token (no FARM_PLAYBACK_SECRET).
    signer = PlaybackSigner.from_settings(GatewaySettings(admin_token=ADMIN))
    expired, _ = signer.token(task_id, now=time.time() - signer.ttl_s - 5)
    other_task, _ = signer.token("0" * 16)
    wrong = token[:-1] + ("0" if token[-1] != "0" else "1")
    for bad, message in (
        (expired, "playback token expired"),
        (other_task, "invalid playback token"),
        (wrong, "invalid playback token"),
    ):
        refused = httpx.get(url.replace(token, bad), timeout=10)
        assert refused.status_code == 403, refused.text
        assert message in refused.json()["errors"][0]
    malformed = httpx.get(url.replace(token, "1-nothex"), timeout=10)
    assert malformed.status_code == 400
    # A good token still names only the outputs of its own task.
    for path in ("hls/%2e%2e/%2e%2e/output/hls/index.m3u8", "gateway.db", "hls/low/9.ts"):
        outside = httpx.get(url.replace("hls/index.m3u8", path), timeout=10)
        assert outside.status_code == 404, (path, outside.text)
