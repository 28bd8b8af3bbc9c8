"""A client for an ai-runner-compatible server: per-pipeline routes, JSON or multipart bodies,
bearer token, ``/health`` probes, and ``/llm`` streamed as server-sent events."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from typing import Any

import httpx

from farm.ai.builtin import collect_llm
from farm.errors import AIRequestInvalid, InsufficientCapacity, RunnerFailed

__all__ = ["JSON_PIPELINES", "HttpRunner", "OnChunk"]

#: Pipelines ai-runner takes as JSON; the others take multipart forms with file fields.
JSON_PIPELINES = ("text-to-image", "llm", "text-to-speech", "live-video-to-video")
OnChunk = Callable[[dict[str, Any]], None]


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _detail(response: httpx.Response) -> str:
    """The message of ai-runner's error body ({"detail": {"msg"}} or 422's list)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:500] or response.reason_phrase
    if isinstance(detail, dict) and "msg" in detail:
        return str(detail["msg"])
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'body'}: {d.get('msg')}"
            for d in detail
            if isinstance(d, dict)
        )
    return str(detail)


def _check(response: httpx.Response, url: str) -> None:
    code = response.status_code
    if code == 200:
        return
    message = _detail(response)
    if code in (400, 422):
        raise AIRequestInvalid(message)
    if code == 503:
        raise InsufficientCapacity(f"runner {url} is busy: {message}")
    if code == 401:
        raise RunnerFailed(f"runner {url} refused the configured token: {message}")
    raise RunnerFailed(f"runner {url} answered {code}: {message}")


class HttpRunner:
    """Calls one ai-runner at ``url`` for one (pipeline, model)."""

    def __init__(
        self,
        url: str,
        pipeline: str,
        model_id: str,
        token: str | None = None,
        timeout_s: float = 300.0,
        probe_timeout_s: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.pipeline, self.model_id = pipeline, model_id
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        self._probe_timeout_s = probe_timeout_s

    def health(self) -> tuple[str | None, str]:
        """(status, why): ai-runner's /health status, or None and the reason the probe failed."""
        try:
            response = self._client.get("/health", timeout=self._probe_timeout_s)
            if response.status_code != 200:
                return None, f"/health answered {response.status_code}"
            status = response.json().get("status")
        except (httpx.HTTPError, ValueError, AttributeError) as e:
            return None, f"/health failed: {e or type(e).__name__}"
        return (status, "") if isinstance(status, str) else (None, "/health without a status")

    def _request(self, params: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
        path = "/" + self.pipeline
        body = dict(params)
        body.setdefault("model" if self.pipeline == "llm" else "model_id", self.model_id)
        if self.pipeline in JSON_PIPELINES:
            return {"method": "POST", "url": path, "json": body}
        form = {k: _form_value(v) for k, v in body.items() if v is not None}
        parts = {
            name: (name, data, mimetypes.guess_type(name)[0] or "application/octet-stream")
            for name, data in files.items()
        }
        return {"method": "POST", "url": path, "data": form, "files": parts}

    def run(
        self, params: dict[str, Any], files: dict[str, bytes], on_chunk: OnChunk | None = None
    ) -> dict[str, Any]:
        """The runner's JSON response; with ``on_chunk`` an LLM answer is streamed to it.

        Raises AIRequestInvalid (400/422), InsufficientCapacity (503) or RunnerFailed.
        """
        request = self._request(params, files)
        try:
            if on_chunk is None:
                if "json" in request and self.pipeline == "llm":
                    request["json"]["stream"] = False
                response = self._client.request(**request)
                _check(response, self.url)
                result = response.json()
                if not isinstance(result, dict):
                    raise RunnerFailed(f"runner {self.url} answered a non-object")
                return result
            request["json"]["stream"] = True
            return self._stream(request, on_chunk)
        except httpx.HTTPError as e:
            raise RunnerFailed(f"runner {self.url} unreachable: {e or type(e).__name__}") from e
        except ValueError as e:
            raise RunnerFailed(f"runner {self.url} answered invalid JSON: {e}") from e

    def _stream(self, request: dict[str, Any], on_chunk: OnChunk) -> dict[str, Any]:
        chunks: list[dict[str, Any]] = []
        with self._client.stream(**request) as response:
            if response.status_code != 200:
                response.read()
                _check(response, self.url)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return collect_llm(chunks)
                event = json.loads(data)
                if not isinstance(event, dict):
                    raise RunnerFailed(f"runner {self.url} sent a non-object event")
                if "error" in event:
                    raise RunnerFailed(f"runner {self.url} failed mid-stream: {event['error']}")
                chunks.append(event)
                on_chunk(event)
        last = (chunks[-1].get("choices") or [{}])[0] if chunks else {}
        if last.get("finish_reason"):
            return collect_llm(chunks)  # a runner that ends without [DONE]
        raise RunnerFailed(f"runner {self.url} ended the stream early")

    def close(self) -> None:
        self._client.close()
