"""The node API's status page, and cluster gauges refreshed on every Prometheus scrape.

``GET /status.html`` renders what ``GET /status`` returns (workers, GPUs, queues, load,
capacity, job counts) plus the most recent jobs and failures from the job table, as one
server-rendered page with no scripts, so it reads the same in a browser, ``curl`` or a
headless check. :func:`install` also makes ``/metrics`` read the registry first, so the
``livepeer_transcoders_*`` and per-GPU gauges are as fresh as the scrape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from farm import metrics
from farm.jobs import JobStore
from farm.jobs.models import Job, JobState

__all__ = ["install", "recent_jobs", "refresh_metrics", "render_status_html"]

log = logging.getLogger(__name__)

StatusFn = Callable[[], dict[str, Any]]


def recent_jobs(store: JobStore, limit: int = 20, state: str | None = None) -> list[dict[str, Any]]:
    """The jobs updated last (only those in ``state`` when given), newest first."""
    query = select(Job).order_by(Job.updated_at.desc()).limit(limit)
    if state is not None:
        query = query.where(Job.state == state)
    with Session(store.engine) as s:
        return [
            {
                "id": j.id,
                "state": j.state,
                "queue": j.queue,
                "worker": j.worker or "",
                "attempts": j.attempts,
                "error_code": j.error_code or "",
                "error": j.error or "",
                "updated_at": j.updated_at,
            }
            for j in s.scalars(query)
        ]


def refresh_metrics(status: dict[str, Any]) -> None:
    """Set the transcoder-pool and GPU gauges from one ``/status`` answer."""
    workers = status.get("workers", [])
    metrics.set_transcoders(
        len(workers), int(status.get("capacity", 0)), int(status.get("load", 0))
    )
    metrics.set_gpus({w["name"]: list(w.get("gpus") or []) for w in workers})


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> str:
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">{escape(empty)}</td></tr>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(value: object) -> str:
    return "—" if value is None else f"{value} %"


def _mib(value: object) -> str:
    return f"{int(value) // (1024 * 1024)} MiB" if isinstance(value, int) else "—"


def _when(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.6rem}
table{border-collapse:collapse;min-width:40%}th,td{padding:.25rem .6rem;text-align:left;
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f4f4f4}
.empty{color:#888}.summary span{margin-right:1.4rem}.bad{color:#b00}
"""


def render_status_html(
    status: dict[str, Any],
    jobs: Sequence[dict[str, Any]] = (),
    failures: Sequence[dict[str, Any]] = (),
    refresh_s: int = 5,
    now: float | None = None,
) -> str:
    """The status page for one ``/status`` answer and the job table's recent rows."""
    now = time.time() if now is None else now
    workers = status.get("workers", [])
    counts = status.get("jobs", {})
    summary = "".join(
        f"<span>{escape(label)}: <b>{escape(str(value))}</b></span>"
        for label, value in (
            ("region", status.get("region", "")),
            ("version", status.get("version", "")),
            ("workers", len(workers)),
            ("load", f"{status.get('load', 0)} / {status.get('capacity', 0)}"),
            *((f"jobs {state}", n) for state, n in sorted(counts.items())),
        )
    )
    worker_rows = [
        (
            w["name"],
            w.get("kind", ""),
            w.get("region", ""),
            f"{w.get('load', 0)} / {w.get('capacity', 0)}",
            len(w.get("gpus") or []),
            ", ".join(w.get("gpu_codecs") or []) or "—",
            ", ".join(w.get("cpu_codecs") or []) or "—",
            ", ".join(w.get("queues") or []),
            f"{max(0.0, now - float(w.get('seen_at') or now)):.1f} s ago",
        )
        for w in workers
    ]
    gpu_rows = [
        (
            w["name"],
            g.get("index", ""),
            g.get("name", ""),
            _pct(g.get("utilization_gpu")),
            _pct(g.get("utilization_encoder")),
            _pct(g.get("utilization_decoder")),
            f"{g.get('encoder_sessions', 0)} / {g.get('encoder_session_limit') or '∞'}",
            f"{_mib(g.get('memory_free'))} of {_mib(g.get('memory_total'))}",
        )
        for w in workers
        for g in (w.get("gpus") or [])
    ]
    queue_rows = sorted(status.get("queues", {}).items())
    job_rows = [
        (j["id"], j["state"], j["queue"], j["worker"], j["attempts"], _when(j["updated_at"]))
        for j in jobs
    ]
    failure_rows = [
        (j["id"], j["error_code"], j["error"][:200], j["worker"], _when(j["updated_at"]))
        for j in failures
    ]
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s > 0 else ""
    sections = [
        f'<p class="summary">{summary}</p>',
        "<h2>Workers</h2>",
        _table(
            ("worker", "kind", "region", "load", "GPUs", "NVENC", "CPU codecs", "queues", "seen"),
            worker_rows,
            "no live worker",
        ),
        "<h2>GPUs</h2>",
        _table(
            ("worker", "#", "GPU", "util", "NVENC", "NVDEC", "NVENC sessions", "memory free"),
            gpu_rows,
            "no GPU in the cluster",
        ),
        "<h2>Queues</h2>",
        _table(("queue", "waiting"), queue_rows, "no queue"),
        "<h2>Recent jobs</h2>",
        _table(("job", "state", "queue", "worker", "attempts", "updated"), job_rows, "no job yet"),
        "<h2>Recent failures</h2>",
        _table(("job", "code", "error", "worker", "updated"), failure_rows, "no failure"),
        "<h2>Payments</h2>",
        "<p class='empty'>No chain configured: tickets, redemptions and rewards appear here "
        "once the orchestrator runs on chain.</p>",
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"{refresh}<title>farm node status</title><style>{_STYLE}</style></head>"
        f"<body><h1>farm node — {escape(str(status.get('region', '')))}</h1>"
        + "".join(sections)
        + "</body></html>"
    )


def install(api: FastAPI, status: StatusFn, jobs: Callable[[], JobStore]) -> None:
    """Add ``GET /status.html`` to the node API and refresh cluster gauges before ``/metrics``.

    ``status`` is the node's ``/status`` handler; ``jobs`` gives the job store.
    """

    @api.get("/status.html", response_class=HTMLResponse)
    def status_page(refresh: int = 5) -> HTMLResponse:
        """The cluster at a glance: workers, GPUs, queues, recent jobs and failures."""
        data = status()
        try:
            store = jobs()
            recent = recent_jobs(store, 20)
            failures = recent_jobs(store, 10, JobState.FAILED)
        except Exception as e:  # the page still shows the registry when the table is down
            log.warning("job table unavailable: %s", e)
            recent, failures = [], []
        return HTMLResponse(render_status_html(data, recent, failures, max(0, refresh)))

    api.add_middleware(_RefreshOnScrape, status=status)


class _RefreshOnScrape:
    """Refresh the cluster gauges before ``/metrics`` answers.

    A plain ASGI wrapper, not ``@app.middleware("http")``: Starlette's HTTP middleware moves
    every request and response body of the node (segments, renditions) through extra tasks
    and memory streams, a cost on the hot path for the sake of one scrape route.
    """

    def __init__(self, app: Any, status: StatusFn) -> None:
        self.app = app
        self.status = status

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == "/metrics":
            try:
                refresh_metrics(await run_in_threadpool(self.status))
            except Exception as e:  # a scrape still answers with what it has
                log.warning("cluster gauges not refreshed: %s", e)
        await self.app(scope, receive, send)
