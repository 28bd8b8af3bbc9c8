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
from farm.errors import RunnerFailed

CLIP = b"\x00\x00\x00\x18ftypmp42 video bytes"


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
    out, media = rehost(response, "job1", blobs)
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
    with pytest.raises(RunnerFailed, match="could not fetch"):
        rehost({"images": [{"url": f"{files}/missing.png"}]}, "j", blobs)
