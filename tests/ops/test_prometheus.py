"""ops/prometheus and ops/grafana: the rules load, and every metric they query is exported."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

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
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    for registry in (farm.metrics.REGISTRY, gateway.metrics.REGISTRY):
        for family in registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


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
    queried |= set(METRIC.findall(rules))
    missing = sorted(queried - have)
    assert not missing, f"queried but not exported: {missing}"
    # The issue's shared go-livepeer names, and the farm's own, are all covered.
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
    rules = [str(PROMETHEUS / "alerts.yml")]
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


# go-livepeer's metric names (monitor/census.go) that the farm shares, exactly as exported.
GO_LIVEPEER = {
    "livepeer_segment_source_appeared_total",
    "livepeer_segment_source_emerged_total",
    "livepeer_segment_transcoded_total",
    "livepeer_segment_transcode_failed_total",
    "livepeer_segment_transcoded_all_appeared_total",
    "livepeer_success_rate",
    "livepeer_transcode_time_seconds",
    "livepeer_transcode_overall_latency_seconds",
    "livepeer_current_sessions_total",
    "livepeer_transcoders_number",
    "livepeer_transcoders_capacity",
    "livepeer_transcoders_load",
    "livepeer_orchestrator_swaps",
    "livepeer_mil_pixels_processed",
    "livepeer_ticket_value_sent",
    "livepeer_tickets_sent",
    "livepeer_payment_create_errors",
    "livepeer_gateway_deposit",
    "livepeer_gateway_reserve",
    "livepeer_ticket_value_recv",
    "livepeer_tickets_recv",
    "livepeer_payment_recv_errors",
    "livepeer_winning_tickets_recv",
    "livepeer_value_redeemed",
    "livepeer_ticket_redemption_errors",
    "livepeer_reward_call_errors",
    "livepeer_ai_models_requested",
    "livepeer_ai_request_errors",
    "livepeer_ai_request_price",
}


def _families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


def test_livepeer_names_are_go_livepeers_exactly() -> None:
    farm.metrics.segment_transcoded(["P144p30fps16x9"], 0.1, 2_000_000)
    farm.metrics.ai_job_failed("upscale", "m/x", "runner_failed")
    gateway.metrics.orchestrator_swap("orch-a: timeout: slow")
    text = farm.metrics.render().decode() + gateway.metrics.render().decode()
    livepeer = {f for f in _families(text) if f.startswith("livepeer_")}
    assert livepeer <= GO_LIVEPEER, f"not go-livepeer's names: {sorted(livepeer - GO_LIVEPEER)}"
    for name in (
        "livepeer_orchestrator_swaps",
        "livepeer_mil_pixels_processed",
        "livepeer_ai_request_errors",
    ):
        assert re.search(rf"^{name}(\{{| )", text, flags=re.MULTILINE), name
        assert f"{name}_total" not in text
    assert "farm_ai_request_latency_seconds" in _families(gateway.metrics.render().decode())


def test_gateway_and_farm_serve_their_own_metrics() -> None:
    gw = _families(gateway.metrics.render().decode())
    farm_side = _families(farm.metrics.render().decode())
    assert "livepeer_success_rate" in gw and "livepeer_success_rate" not in farm_side
    assert "farm_workers_live" in farm_side and "farm_workers_live" not in gw
    assert not gw & farm_side - {
        # Both sides report these, each for its own work: a gateway's segments and AI
        # requests, a node's attempts and AI jobs.
        "livepeer_segment_transcode_failed_total",
        "livepeer_ai_request_errors",
        # Tickets received: by a node on /segment, by a gateway from its ticket payers.
        "livepeer_ticket_value_recv",
        "livepeer_tickets_recv",
        "livepeer_payment_recv_errors",
        "livepeer_winning_tickets_recv",
    }


def test_client_garbage_stays_outside_the_success_rate() -> None:
    for _ in range(30):
        gateway.metrics.segment_done(True, 0.1, "orch-a")
    failed = gateway.metrics.REGISTRY.get_sample_value
    before = failed("livepeer_segment_transcode_failed_total", {"error_code": "input_invalid"})
    for _ in range(10):
        gateway.metrics.segment_done(False, 0.1, error_code="transcode_failed")
    assert gateway.metrics.REGISTRY.get_sample_value("livepeer_success_rate") == 1.0
    after = failed("livepeer_segment_transcode_failed_total", {"error_code": "input_invalid"})
    assert after == (before or 0) + 10
    gateway.metrics.segment_done(False, 0.1, error_code="no_orchestrators")
    assert gateway.metrics.REGISTRY.get_sample_value("livepeer_success_rate") == 29 / 30


def test_a_job_whose_input_is_gone_stays_outside_the_success_rate() -> None:
    for _ in range(30):
        gateway.metrics.segment_done(True, 0.1, "orch-a")
    gateway.metrics.segment_done(False, 0.1, error_code="input_missing")
    assert gateway.metrics.REGISTRY.get_sample_value("livepeer_success_rate") == 1.0
