"""Cluster commands: ``farm worker``, ``node``, ``beat``, ``flower``, ``submit``, ``job``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click
import httpx

from farm.cli.listen import ensure_free
from farm.cli.options import NODE_CA, NODE_FINGERPRINT
from farm.errors import ConfigError
from farm.settings import (
    ClusterSettings,
    FlowerSettings,
    NodeSettings,
    WorkerSettings,
)

__all__ = [
    "beat_cmd",
    "flower_cmd",
    "health_cmd",
    "job_cmd",
    "node_cmd",
    "submit_cmd",
    "up_cmd",
    "worker_cmd",
]


def _load(cls: type[Any], **overrides: Any) -> Any:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except SettingsError as e:  # an environment value that is not JSON where a list is
        raise ConfigError(
            f"invalid settings: {e}; lists are JSON, e.g. FARM_TLS_HOSTS='[\"node\"]'"
        ) from None


def _seconds(value: float | None) -> float | None:
    """A duration in seconds: finite and positive (click's ranges let NaN through)."""
    if value is not None and not (math.isfinite(value) and 0 < value <= 3600):
        raise click.BadParameter(f"{value} is not a duration of 0-3600 seconds")
    return value


@click.command("worker")
@click.option("--gpus", default=None, help="all, none, or GPU indices like 0,1 (default all).")
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="Jobs in parallel per worker process.",
)
@click.option("--cpu", "cpu_only", is_flag=True, help="Same as --gpus none.")
@click.option(
    "--chain",
    "chain_queue",
    is_flag=True,
    help="Also consume the chain queue (redemption, reward): one worker per cluster.",
)
@click.option(
    "--ai-models",
    default=None,
    metavar="JSON|PATH",
    help="AI models in go-livepeer's -aiModels shape: an AI worker on their ai.<pipeline> queues.",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker_cmd(
    gpus: str | None,
    concurrency: int | None,
    cpu_only: bool,
    chain_queue: bool,
    ai_models: str | None,
    loglevel: str,
) -> None:
    """Run a Celery worker on the queues this machine's GPUs and CPUs can serve."""
    from farm.worker import run_worker_group

    settings: WorkerSettings = _load(
        WorkerSettings,
        concurrency=concurrency,
        chain_queue=chain_queue or None,
        ai_models=ai_models,
    )
    spec = "none" if cpu_only else (gpus or settings.gpus)
    sys.exit(run_worker_group(settings, spec, loglevel=loglevel.upper()))


@click.command("node")
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default 8935).")
@click.option(
    "--tls/--no-tls",
    default=None,
    help="Serve HTTPS (HTTP/2 and HTTP/1.1); remote transcoders attach only over HTTPS.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Certificate (PEM) to serve instead of the node's own self-signed one.",
)
@click.option(
    "--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Its key."
)
def node_cmd(
    host: str | None,
    port: int | None,
    tls: bool | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Serve the orchestrator's node API: /healthz, /status, /metrics, transcoder attach."""
    from farm.node.serve import serve_node

    settings: NodeSettings = _load(
        NodeSettings, host=host, port=port, tls=tls, tls_cert=tls_cert, tls_key=tls_key
    )
    ensure_free(settings.host, settings.port, "farm node")
    serve_node(settings)


@click.command("beat")
@click.option(
    "--schedule",
    type=click.Path(path_type=Path),
    default=Path(".farm/beat-schedule"),
    show_default=True,
    help="Where beat keeps its schedule state.",
)
@click.option("--loglevel", default="INFO", show_default=True)
def beat_cmd(schedule: Path, loglevel: str) -> None:
    """Run celery beat: the reconciler (and, with a chain configured, rewards and redemption).

    One beat runs per cluster: a second one waits for the first's lock, and takes over when
    the first stops."""
    from farm.beatlock import BeatLock
    from farm.celery_app import create_app

    settings: ClusterSettings = _load(ClusterSettings)
    schedule.parent.mkdir(parents=True, exist_ok=True)
    lock = BeatLock(settings.redis_registry_url(), settings.beat_lock_s)
    lock.acquire()
    lock.keep()
    try:
        create_app(settings).start(["beat", f"--schedule={schedule}", f"--loglevel={loglevel}"])
    finally:
        lock.release()


@click.command("flower")
@click.option("--port", type=int, default=None, help="Listen port (default 5555).")
def flower_cmd(port: int | None) -> None:
    """Run Flower with the app's configuration and basic auth."""
    from farm.celery_app import create_app

    settings: FlowerSettings = _load(FlowerSettings, flower_port=port)
    ensure_free(settings.flower_host, settings.flower_port, "farm flower")
    app = create_app(settings)
    app.start(
        [
            "flower",
            f"--address={settings.flower_host}",
            f"--port={settings.flower_port}",
            f"--basic-auth={settings.flower_basic_auth.get_secret_value()}",
        ]
    )


@click.command("submit")
@click.argument("segment", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-p",
    "--profiles",
    "profile_names",
    default="P240p30fps16x9,P360p30fps16x9",
    show_default=True,
    help="Profile names, or a JSON profiles file.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the renditions here.",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    callback=lambda _ctx, _param, v: _seconds(v),
    help="Segment duration in seconds.",
)
@click.option("--no-wait", is_flag=True, help="Print the job id and return.")
@click.option("--timeout", type=float, default=120.0, show_default=True)
def submit_cmd(
    segment: Path,
    profile_names: str,
    out_dir: Path | None,
    duration: float | None,
    no_wait: bool,
    timeout: float,
) -> None:
    """Submit a segment to the cluster and wait for its renditions."""
    from farm.client import FarmClient
    from farm.media.profiles import parse_profiles

    spec = Path(profile_names)
    profiles = parse_profiles(spec if spec.suffix == ".json" else profile_names)
    client = FarmClient(_load(ClusterSettings))
    job = client.submit(segment.read_bytes(), profiles, duration=duration)
    click.echo(f"job {job.id} queued on {job.queue}", err=True)
    if no_wait:
        click.echo(job.id)
        return
    result = client.wait(job.id, timeout=timeout)
    for r in result.renditions:
        line = f"{r.name}: {r.width}x{r.height} {r.frames} frames {r.bytes} bytes ({r.encoder})"
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            target = out_dir / f"{r.name}_{segment.stem}.{r.key.rsplit('.', 1)[-1]}"
            target.write_bytes(client.rendition_bytes(r))
            line += f" -> {target}"
        click.echo(line)
    click.echo(f"done on {result.worker} in {result.timings.get('total', 0):.3f} s", err=True)


@click.command("job")
@click.argument("job_id")
def job_cmd(job_id: str) -> None:
    """Show a job, its result and every attempt."""
    from farm.jobs import JobStore

    settings: ClusterSettings = _load(ClusterSettings)
    store = JobStore(settings.database_url)
    store.create_schema()
    job = store.get(job_id, with_attempts=True)
    click.echo(
        json.dumps(
            {
                "id": job.id,
                "state": job.state,
                "queue": job.queue,
                "attempts": job.attempts,
                "publishes": job.publishes,
                "error_code": job.error_code,
                "error": job.error,
                "worker": job.worker,
                "completed_by": job.completed_by,
                "created_at": job.created_at.isoformat(),
                "finished_at": job.finished_at.isoformat() if job.finished_at else None,
                "result": job.result,
                "attempt_log": [
                    {
                        "task_id": a.task_id,
                        "worker": a.worker,
                        "outcome": a.outcome,
                        "error_code": a.error_code,
                        "error": a.error,
                        "started_at": a.started_at.isoformat(),
                        "finished_at": a.finished_at.isoformat() if a.finished_at else None,
                    }
                    for a in job.attempt_log
                ],
            },
            indent=2,
            default=str,
        )
    )


@click.command("up")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory for the embedded servers (default .farm).",
)
@click.option("--workers", type=click.IntRange(1), default=None, help="Worker processes.")
@click.option("--port", type=int, default=None, help="Node API port (default 8935).")
@click.option("--gateway-port", type=int, default=None, help="Gateway port (default 9935).")
def up_cmd(
    home: Path | None, workers: int | None, port: int | None, gateway_port: int | None
) -> None:
    """Start node API, worker, beat and gateway as one group (embedded servers by default)."""
    from farm.settings import UpSettings
    from farm.up import run_up

    settings: UpSettings = _load(
        UpSettings, home=home, workers=workers, port=port, gateway_port=gateway_port
    )
    # Every port is checked before anything starts: a clash is one line naming it.
    ensure_free(settings.host, settings.port, "farm up (node API)")
    ensure_free(settings.host, settings.gateway_port, "farm up (gateway)")
    # The embedded default applies only when no broker was configured (env or config.json).
    embedded = "broker_url" not in settings.model_fields_set
    sys.exit(run_up(settings, embedded=embedded))


@click.command("health")
@click.argument("role", type=click.Choice(["worker", "node"]))
@click.option("--url", default=None, help="Node API base URL (default http://127.0.0.1:8935).")
@NODE_FINGERPRINT
@NODE_CA
def health_cmd(
    role: str, url: str | None, node_cert_fingerprint: str | None, node_ca: str | None
) -> None:
    """Exit 0 when this host's worker heartbeats (worker) or the node API is healthy (node).

    For container health checks. An https URL is verified by --node-ca or
    --node-cert-fingerprint (the system's CAs without them).
    """
    import socket

    if role == "node":
        from farm.remote.tls import NodeHttp

        base = url or "http://127.0.0.1:8935"
        node = NodeHttp(base, node_ca, node_cert_fingerprint)
        try:
            ok = node.client().get(f"{base}/healthz").status_code == 200
        except httpx.HTTPError as e:
            raise click.ClickException(f"node API unreachable at {base}: {e}") from e
        finally:
            node.close()
        if not ok:
            raise click.ClickException(f"node API at {base} reports unhealthy")
        click.echo("node healthy")
        return
    from farm.registry import Registry

    settings: ClusterSettings = _load(ClusterSettings)
    registry = Registry(settings.redis_registry_url(), settings.heartbeat_s)
    try:
        host = socket.gethostname()
        mine = [w.worker for w in registry.live() if f"@{host}:" in w.worker]
    finally:
        registry.close()
    if not mine:
        raise click.ClickException(f"no live worker heartbeat from {host}")
    click.echo(", ".join(mine))
