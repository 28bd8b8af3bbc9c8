"""``farm status``: the cluster as plain text, from a node API and, optionally, a gateway.

:func:`fetch` reads a node API's ``/status`` and a gateway's ``/admin/orchestrators`` and
``/admin/sessions`` into one :class:`Snapshot`; :func:`render` turns it into tables a terminal
shows as they are. The exporter (:mod:`farm.exporter`) reads the same snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from farm.errors import FarmError
from farm.remote.tls import NodeHttp

__all__ = ["Snapshot", "fetch", "render"]


@dataclass
class Snapshot:
    """What one look at the cluster saw; an unreachable part leaves its error instead."""

    node_url: str
    node: dict[str, Any] | None = None
    node_error: str | None = None
    gateway_url: str | None = None
    orchestrators: list[dict[str, Any]] | None = None
    sessions: list[dict[str, Any]] | None = None
    gateway_error: str | None = None
    taken_at: float = field(default_factory=time.time)


def _get(client: httpx.Client, url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get(url, headers=headers)
    response.raise_for_status()
    return response.json()


def fetch(
    node_url: str,
    gateway_url: str | None = None,
    admin_token: str | None = None,
    timeout: float = 5.0,
    client: httpx.Client | None = None,
    node: NodeHttp | None = None,
) -> Snapshot:
    """Read the node API's ``/status`` (and the gateway's admin views when a URL is given).

    ``node`` verifies an HTTPS node API (farm.remote.tls.NodeHttp); ``client`` is for the
    rest, and for the node when ``node`` is not given.
    """
    snap = Snapshot(node_url=node_url.rstrip("/"), gateway_url=gateway_url)
    own = client is None
    http = client or httpx.Client(timeout=timeout)
    try:
        try:
            snap.node = _get(node.client() if node is not None else http, f"{snap.node_url}/status")
        except (httpx.HTTPError, ValueError, FarmError) as e:
            snap.node_error = f"{type(e).__name__}: {e}"
            if node is not None:
                node.reset()
        if gateway_url:
            base = gateway_url.rstrip("/")
            try:
                snap.orchestrators = _get(http, f"{base}/admin/orchestrators", admin_token)
                snap.sessions = _get(http, f"{base}/admin/sessions", admin_token)
            except httpx.HTTPStatusError as e:
                refused = e.response.status_code in (401, 403)
                snap.gateway_error = (
                    "the admin token was refused (--admin-token or FARM_ADMIN_TOKEN)"
                    if refused
                    else f"HTTPStatusError: {e}"
                )
            except (httpx.HTTPError, ValueError) as e:
                snap.gateway_error = f"{type(e).__name__}: {e}"
    finally:
        if own:
            http.close()
    return snap


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> str:
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        return f"  ({empty})"
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _pct(value: object) -> str:
    return "-" if value is None else f"{value}%"


def _node_sections(node: dict[str, Any], now: float) -> list[str]:
    workers = node.get("workers", [])
    jobs = node.get("jobs", {})
    head = (
        f"region {node.get('region', '?')}  version {node.get('version', '?')}  "
        f"workers {len(workers)}  load {node.get('load', 0)}/{node.get('capacity', 0)}  "
        "jobs " + (" ".join(f"{k}={v}" for k, v in sorted(jobs.items())) or "none")
    )
    worker_rows = [
        (
            w["name"],
            "gpu" if w.get("gpus") else "cpu",
            w.get("region", ""),
            f"{w.get('load', 0)}/{w.get('capacity', 0)}",
            ",".join(w.get("gpu_codecs") or []) or "-",
            ",".join(w.get("queues") or []),
            f"{max(0.0, now - float(w.get('seen_at') or now)):.0f}s",
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
            f"{g.get('encoder_sessions', 0)}/{g.get('encoder_session_limit') or '-'}",
        )
        for w in workers
        for g in (w.get("gpus") or [])
    ]
    queue_rows = sorted(node.get("queues", {}).items())
    ai_rows = [
        (
            w["name"],
            m.get("pipeline", ""),
            m.get("model_id", ""),
            "warm" if m.get("warm") else "cold",
            m.get("status", ""),
            f"{m.get('load', 0)}/{m.get('capacity', 0)}",
            m.get("runner", ""),
        )
        for w in workers
        for m in (w.get("ai_models") or [])
    ]
    ai = (
        [
            "AI MODELS\n"
            + _table(
                ("worker", "pipeline", "model", "warm", "status", "load", "runner"), ai_rows, ""
            )
        ]
        if ai_rows
        else []
    )
    transcoder_rows = [
        (
            t.get("name", ""),
            t.get("state", ""),
            t.get("address", ""),
            f"{t.get('load', 0)}/{t.get('capacity', 0)}",
            f"{max(0.0, now - float(t.get('last_heartbeat') or now)):.0f}s",
            t.get("segments", 0),
            t.get("pixels", 0),
        )
        for t in node.get("transcoders", [])
    ]
    return [
        head,
        "WORKERS\n"
        + _table(
            ("worker", "kind", "region", "load", "nvenc", "queues", "seen"),
            worker_rows,
            "no live worker",
        ),
        "GPUS\n"
        + _table(
            ("worker", "#", "gpu", "util", "nvenc", "sessions"), gpu_rows, "no GPU in the cluster"
        ),
        *ai,
        "QUEUES\n" + _table(("queue", "waiting"), queue_rows, "no queue"),
        "REMOTE TRANSCODERS\n"
        + _table(
            ("transcoder", "state", "address", "load", "heartbeat", "segments", "pixels"),
            transcoder_rows,
            "none attached",
        ),
    ]


def _gateway_sections(snap: Snapshot) -> list[str]:
    if snap.gateway_error:
        return [f"GATEWAY {snap.gateway_url}: not read ({snap.gateway_error})"]
    orch_rows = [
        (
            o.get("name", ""),
            o.get("region", ""),
            "up" if o.get("healthy") else "down",
            "yes" if o.get("suspended") else "no",
            f"{o.get('load', 0)}/{o.get('capacity', 0)}",
            f"{float(o.get('success', 0)):.2f}",
            f"{float(o.get('latency', 0)):.3f}s",
            f"{float(o.get('score', 0)):.3f}",
            o.get("price_per_unit", ""),
        )
        for o in snap.orchestrators or []
    ]
    session_rows = [
        (s.get("id", ""), s.get("kind", ""), s.get("key_id") or "-", s.get("created_at", ""))
        for s in (snap.sessions or [])[:10]
    ]
    return [
        "ORCHESTRATORS\n"
        + _table(
            (
                "name",
                "region",
                "health",
                "suspended",
                "load",
                "success",
                "latency",
                "score",
                "price",
            ),
            orch_rows,
            "none configured",
        ),
        "SESSIONS (most recent)\n"
        + _table(("session", "kind", "key", "created"), session_rows, "none"),
    ]


def render(snap: Snapshot) -> str:
    """The snapshot as plain-text tables."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.taken_at))
    parts = [f"farm status  {snap.node_url}  {stamp}"]
    if snap.node is None:
        parts.append(f"NODE unreachable ({snap.node_error})")
    else:
        parts += _node_sections(snap.node, snap.taken_at)
    if snap.gateway_url:
        parts += _gateway_sections(snap)
    parts.append("PAYMENTS AND REWARDS\n  (no chain configured: offchain mode)")
    return "\n\n".join(parts) + "\n"
