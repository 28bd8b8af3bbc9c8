"""Test pictures, a `farm ai-runner` process, and a scripted ai-runner for failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import httpx
import numpy as np

from tests.farm.harness import free_port, wait_for


def picture(width: int = 64, height: int = 48, shift: int = 0) -> np.ndarray:
    """A smooth RGB test picture: gradients and a soft disc (``shift`` moves the disc)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = width * 0.4 + shift, height * 0.5
    disc = 255.0 / (1.0 + np.exp((np.hypot(x - cx, y - cy) - height * 0.3) / 2.0))
    r = 255.0 * x / max(1, width - 1)
    g = 255.0 * y / max(1, height - 1)
    return np.stack([r, g, disc], axis=-1).clip(0, 255).astype(np.uint8)


def png(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB array, encoded by PyAV."""
    frame = av.VideoFrame.from_ndarray(array, format="rgb24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "rgb24"
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


def decode(data: bytes) -> np.ndarray:
    """An image file's first picture as an RGB array."""
    import io

    with av.open(io.BytesIO(data), "r") as c:
        frame = next(c.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def resize(array: np.ndarray, width: int, height: int, flags: str) -> np.ndarray:
    """A reference resize through FFmpeg's scaler (``flags``: bicubic, area, ...)."""
    frame = av.VideoFrame.from_ndarray(array, format="rgb24")
    out = frame.reformat(width=width, height=height, format="rgb24", interpolation=flags.upper())
    return out.to_ndarray()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@contextmanager
def ai_runner(
    tmp: Path, pipeline: str = "upscale", model_id: str | None = None, token: str | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``farm ai-runner`` in a subprocess on a free port: (url, process)."""
    port = free_port()
    cmd = [sys.executable, "-m", "farm.cli", "ai-runner", "--pipeline", pipeline]
    cmd += ["--port", str(port)]
    if model_id:
        cmd += ["--model-id", model_id]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    if token:
        env["FARM_AI_RUNNER_TOKEN"] = token
    with open(tmp / f"ai-runner-{port}.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=30, what="farm ai-runner to answer /health")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


@dataclass
class ScriptedRunner:
    """A real HTTP server speaking ai-runner's API whose answers the test sets: the /health
    status, and the status and body of every pipeline request."""

    health: str = "OK"
    status: int = 500
    body: dict[str, object] = field(
        default_factory=lambda: {"detail": {"msg": "Upscale pipeline error."}}
    )
    #: When set, pipeline requests get 200 and this text as a server-sent event stream.
    sse: str | None = None
    #: Seconds each pipeline request takes.
    delay_s: float = 0.0
    requests: int = 0
    #: The last pipeline request: (path, headers, body).
    last: tuple[str, dict[str, str], bytes] | None = None
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ScriptedRunner:
        script = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer(200, {"status": script.health})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                script.last = (self.path, dict(self.headers.items()), body)
                script.requests += 1
                time.sleep(script.delay_s)
                if script.sse is None:
                    self._answer(script.status, script.body)
                    return
                data = script.sse.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
