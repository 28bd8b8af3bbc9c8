"""ops/prometheus and ops/grafana: the rules load, and every metric they query is exported."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client import REGISTRY

import farm.metrics
import gateway.metrics
from tests.conftest import need_tool

OPS = Path(__file__).resolve().parents[2] / "ops"
PROMETHEUS = OPS / "prometheus"
DASHBOARD = OPS / "grafana" / "dashboards" / "farm.json"
# The farm's and go-livepeer's prefixes; `up` and ALERTS are Prometheus's own.
METRIC = re.compile(r"\b(?:livepeer|farm)_[a-z0-9_]+\b")


def exported() -> set[str]:
    """Every sample name the farm's and the gateway's metrics modules can expose."""
    assert farm.metrics.render and gateway.metrics.segment_done  # both imported: registered
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    for family in REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def recorded() -> set[str]:
    """Names Prometheus itself records (livepeer-compat.yml), not the code."""
    text = (PROMETHEUS / "livepeer-compat.yml").read_text()
    return set(re.findall(r"record:\s*([a-z0-9_]+)", text))


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    return exprs


def test_every_queried_metric_is_exported() -> None:
    have = exported()
    rules = "\n".join(
        p.read_text() for p in sorted(PROMETHEUS.glob("*.yml")) if p.name != "prometheus.yml"
    )
    queried = {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    queried |= set(METRIC.findall(rules)) - recorded()
    missing = sorted(queried - have)
    assert not missing, f"queried but not exported: {missing}"
    # The shared go-livepeer names, and the farm's own, are all covered.
    for name in (
        "livepeer_segment_source_appeared_total",
        "livepeer_segment_transcoded_total",
        "livepeer_segment_transcode_failed_total",
        "livepeer_success_rate",
        "livepeer_transcode_time_seconds_bucket",
        "livepeer_transcode_overall_latency_seconds_bucket",
        "livepeer_ticket_value_sent",
        "livepeer_ticket_value_recv",
        "livepeer_winning_tickets_recv",
        "livepeer_value_redeemed",
        "livepeer_ticket_redemption_errors",
        "livepeer_reward_call_errors",
        "livepeer_transcoders_number",
        "livepeer_transcoders_capacity",
        "livepeer_transcoders_load",
        "livepeer_current_sessions_total",
        "farm_queue_depth",
        "farm_gpu_utilization_percent",
        "farm_gpu_encoder_sessions",
        "farm_jobs",
    ):
        assert name in have, name
        assert name in queried, f"{name} is exported but neither dashboard nor alert uses it"


def test_dashboard_panels_use_the_datasource_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "livepeer-farm"
    titles = " ".join(p["title"] for p in dash["panels"] if p["type"] == "row").lower()
    for topic in ("segments", "latency", "payments", "gpus", "queues"):
        assert topic in titles, topic
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_rules_and_config_pass_promtool() -> None:
    promtool = need_tool("promtool", hint="Debian: apt-get install prometheus")
    rules = [str(PROMETHEUS / "alerts.yml"), str(PROMETHEUS / "livepeer-compat.yml")]
    for args in (
        ["check", "rules", *rules],
        ["check", "config", str(PROMETHEUS / "prometheus.yml")],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_fire_on_the_conditions_they_name() -> None:
    promtool = need_tool("promtool", hint="Debian: apt-get install prometheus")
    done = subprocess.run(
        [promtool, "test", "rules", str(Path(__file__).with_name("alerts_test.yml"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
