"""The status page, the terminal view and the GPU gauges from one /status answer (no services)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from farm import metrics
from farm.node.status_page import refresh_metrics, render_status_html
from farm.status import Snapshot, fetch, render

STATUS = {
    "version": "0.1.0",
    "region": "eu",
    "capacity": 6,
    "load": 2,
    "queues": {"transcode.gpu.h264": 3, "farm.control": 0},
    "jobs": {"done": 7, "failed": 1},
    "workers": [
        {
            "name": "gpu0@host:1",
            "kind": "local",
            "region": "eu",
            "queues": ["transcode.gpu.h264"],
            "capacity": 4,
            "load": 2,
            "gpu_codecs": ["h264"],
            "cpu_codecs": [],
            "seen_at": 0.0,
            "gpus": [
                {
                    "index": 0,
                    "name": "NVIDIA GeForce RTX 4090",
                    "utilization_gpu": 55,
                    "utilization_encoder": 70,
                    "utilization_decoder": 10,
                    "encoder_sessions": 6,
                    "encoder_session_limit": 8,
                    "memory_free": 8 << 30,
                    "memory_total": 24 << 30,
                }
            ],
        },
        {"name": "cpu@host:2", "queues": ["transcode.cpu.h264"], "capacity": 2, "gpus": []},
    ],
}


def test_page_escapes_and_shows_gpus_queues_and_failures() -> None:
    failure = {
        "id": "job-1",
        "state": "failed",
        "queue": "transcode.gpu.h264",
        "worker": "gpu0@host:1",
        "attempts": 1,
        "error_code": "input_invalid",
        "error": "<script>alert(1)</script>",
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    html = render_status_html(STATUS, [failure], [failure], refresh_s=0, now=1.0)
    assert "gpu0@host:1" in html and "cpu@host:2" in html
    assert "NVIDIA GeForce RTX 4090" in html and "6 / 8" in html and "8192 MiB of 24576 MiB" in html
    assert "<td>transcode.gpu.h264</td><td>3</td>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'http-equiv="refresh"' not in html
    assert 'content="5"' in render_status_html(STATUS)


def test_terminal_view_tables() -> None:
    text = render(Snapshot(node_url="http://n:8935", node=STATUS, taken_at=10.0))
    assert "workers 2  load 2/6  jobs done=7 failed=1" in text
    assert "NVIDIA GeForce RTX 4090" in text and "6/8" in text
    assert "transcode.gpu.h264  3" in text
    down = render(Snapshot(node_url="http://n:8935", node_error="ConnectError: refused"))
    assert "NODE unreachable (ConnectError: refused)" in down


def test_gpu_and_pool_gauges_follow_the_registry() -> None:
    refresh_metrics(STATUS)
    labels = {"worker": "gpu0@host:1", "gpu": "0", "name": "NVIDIA GeForce RTX 4090"}
    value = metrics.REGISTRY.get_sample_value
    assert value("livepeer_transcoders_number") == 2
    assert value("livepeer_transcoders_capacity") == 6
    assert value("farm_gpu_encoder_sessions", labels) == 6
    assert value("farm_gpu_encoder_utilization_percent", labels) == 70
    # The worker leaves: its GPU series go with it.
    refresh_metrics({**STATUS, "workers": STATUS["workers"][1:]})
    assert value("farm_gpu_encoder_sessions", labels) is None
    assert value("livepeer_transcoders_number") == 1


def test_a_refused_admin_token_is_named_not_called_unreachable() -> None:
    class Refuses(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        text = render(fetch(url, url, admin_token="wrong"))
    finally:
        server.shutdown()
        server.server_close()
    assert "the admin token was refused (--admin-token or FARM_ADMIN_TOKEN)" in text, text
