"""Result media into the blob store: data URLs and runner-hosted URLs become farm-blob keys."""

from __future__ import annotations

import base64
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from farm.ai.results import BLOB_SCHEME, AIMedia, blob_key, rehost
from farm.blobstore import LocalBlobStore
from farm.errors import PermanentError, ResultTooLarge, RunnerFailed
from farm.fetch import FetchPolicy

CLIP = b"\x00\x00\x00\x18ftypmp42 video bytes"
#: The test server is on loopback, as a runner's host is allowed (farm.ai.tasks).
LOCAL = FetchPolicy.parse(["127.0.0.1"])


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def files(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "clip.mp4").write_bytes(CLIP)
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "www"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_every_media_url_is_rehosted(tmp_path: Path, files: str) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    png = b"\x89PNG\r\n\x1a\n not really"
    response = {
        "frames": [
            [{"url": "data:image/png;base64," + base64.b64encode(png).decode(), "seed": 1}],
            [{"url": f"{files}/clip.mp4", "seed": 2, "nsfw": False}],
        ],
        "audio": {"url": "data:audio/wav;base64," + base64.b64encode(b"RIFF").decode()},
        "text": "not a url",
    }
    out, media = rehost(response, "job1", blobs, policy=LOCAL)
    assert media == [
        AIMedia("ai/job1/out/0.png", "image/png", len(png)),
        AIMedia("ai/job1/out/1.mp4", "video/mp4", len(CLIP)),
        AIMedia("ai/job1/out/2.wav", "audio/wav", 4),
    ]
    assert out["frames"][0][0] == {"url": BLOB_SCHEME + "ai/job1/out/0.png", "seed": 1}
    assert out["frames"][1][0]["url"] == "farm-blob:ai/job1/out/1.mp4"
    assert out["text"] == "not a url" and response["text"] == "not a url"
    assert blobs.get(blob_key(out["frames"][0][0]["url"])) == png
    assert blobs.get("ai/job1/out/1.mp4") == CLIP
    assert blob_key("plain/key") == "plain/key"


def test_bad_media_urls_are_runner_failures(tmp_path: Path, files: str) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(RunnerFailed, match="bad data URL"):
        rehost({"images": [{"url": "data:image/png;base64,@@@"}]}, "j", blobs)
    with pytest.raises(RunnerFailed, match="answered HTTP 404"):
        rehost({"images": [{"url": f"{files}/missing.png"}]}, "j", blobs, policy=LOCAL)


def test_media_urls_on_internal_addresses_are_refused(tmp_path: Path, files: str) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    for url in (f"{files}/clip.mp4", "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(RunnerFailed, match="could not fetch"):
            rehost({"images": [{"url": url}]}, "j", blobs)


def test_results_over_the_cap_are_refused(tmp_path: Path, files: str) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    small = "data:image/png;base64," + base64.b64encode(b"x" * 100).decode()
    # One file over the cap, by its length or by what is downloaded; and two files that fit
    # one by one but not together. Nothing is stored for a refused result's media.
    with pytest.raises(ResultTooLarge, match="a result may hold 50 bytes"):
        rehost({"images": [{"url": small}]}, "j1", blobs, max_bytes=50)
    with pytest.raises(ResultTooLarge, match=f"a result may hold {len(CLIP) - 1} bytes"):
        rehost(
            {"video": [{"url": f"{files}/clip.mp4"}]},
            "j2",
            blobs,
            max_bytes=len(CLIP) - 1,
            policy=LOCAL,
        )
    with pytest.raises(ResultTooLarge):
        rehost({"images": [{"url": small}, {"url": small}]}, "j3", blobs, max_bytes=150)
    assert not blobs.exists("ai/j2/out/0.mp4") and not blobs.exists("ai/j3/out/0.png")
    _, media = rehost({"images": [{"url": small}, {"url": small}]}, "j4", blobs, max_bytes=200)
    assert [m.size for m in media] == [100, 100]
    assert issubclass(ResultTooLarge, PermanentError)  # the same runner would answer the same
