"""Settings: env beats config.json, secrets stay hidden, default secrets refused in production."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from farm.settings import ClusterSettings, FlowerSettings, NodeSettings, WorkerSettings


def test_env_beats_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"region": "eu-west", "broker_url": "redis://file:6379/1", "max_attempts": 5})
    )
    monkeypatch.setenv("FARM_CONFIG", str(config))
    monkeypatch.setenv("FARM_BROKER_URL", "redis://env:6379/2")
    s = WorkerSettings()
    assert s.region == "eu-west" and s.max_attempts == 5
    assert s.broker_url == "redis://env:6379/2"
    assert s.result_backend == "redis://env:6379/2" == s.registry_url


def test_secrets_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_SECRET", "s3cr3t-value")
    monkeypatch.setenv("FARM_BROKER_URL", "amqp://user:hunter2@rabbit:5672//")
    s = ClusterSettings()
    text = repr(s) + str(s.public())
    assert "s3cr3t-value" not in text and "hunter2" not in text
    assert s.public()["broker_url"] == "amqp://user:***@rabbit:5672//"


def test_default_secrets_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="FARM_SECRET"):
        ClusterSettings()
    monkeypatch.setenv("FARM_SECRET", "a-real-one-at-last")
    with pytest.raises(ValidationError, match="FARM_FLOWER_BASIC_AUTH"):
        FlowerSettings()


def test_bad_broker_url_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_BROKER_URL", "kafka://x")
    with pytest.raises(ValidationError, match="unsupported broker"):
        ClusterSettings()


def test_placeholder_and_short_secrets_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.settings import GatewaySettings

    monkeypatch.setenv("FARM_ENVIRONMENT", "production")
    for value, why in (
        ("change-me", "placeholder"),
        ("Password123", "placeholder"),
        ("s3cr3t", "shorter than 12"),
    ):
        monkeypatch.setenv("FARM_SECRET", value)
        with pytest.raises(ValidationError, match=f"FARM_SECRET .*{why}"):
            ClusterSettings()
    monkeypatch.setenv("FARM_SECRET", "kq8-Zt2v-9xLw-44Hd")
    assert ClusterSettings().environment == "production"
    # The same one check covers every process's secrets.
    monkeypatch.setenv("FARM_ADMIN_TOKEN", "change-me")
    with pytest.raises(ValidationError, match="FARM_ADMIN_TOKEN"):
        NodeSettings()
    with pytest.raises(ValidationError, match="FARM_ADMIN_TOKEN"):
        GatewaySettings()
    monkeypatch.setenv("FARM_ADMIN_TOKEN", "t0k-9aa1-Qm2z-77")
    assert NodeSettings().admin_token.get_secret_value() == "t0k-9aa1-Qm2z-77"
    monkeypatch.setenv("FARM_FLOWER_BASIC_AUTH", "ops:change-me")
    with pytest.raises(ValidationError, match="FARM_FLOWER_BASIC_AUTH"):
        FlowerSettings()
    monkeypatch.setenv("FARM_FLOWER_BASIC_AUTH", "ops:Fl0wer-pw-8812")
    assert FlowerSettings().flower_port == 5555


def test_status_reads_the_gateway_with_the_development_token_in_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from farm.settings import DEV_SECRET, StatusSettings

    assert StatusSettings().gateway_token() == DEV_SECRET  # what farm up's gateway takes
    monkeypatch.setenv("FARM_ADMIN_TOKEN", "t0k-9aa1-Qm2z-77")
    assert StatusSettings().gateway_token() == "t0k-9aa1-Qm2z-77"
    monkeypatch.delenv("FARM_ADMIN_TOKEN")
    monkeypatch.setenv("FARM_ENVIRONMENT", "production")
    assert StatusSettings().gateway_token() is None


def test_each_process_has_only_the_fields_it_reads() -> None:
    from farm.settings import AIRunnerSettings, StatusSettings, TranscoderSettings

    # A remote transcoder gets its broker credential from the node and moves jobs and blobs
    # through the node API: no cluster URL, no cluster secret, no chain.
    assert set(TranscoderSettings.model_fields) == {
        "environment",
        "orch_addr",
        "orch_secret",
        "orch_cert_fingerprint",
        "orch_ca",
        "capacity",
        "max_backoff_s",
        "region",
        "task_events",
        "gpus",
        "codecs",
        "pool",
        "hostname",
        "static_gpus",
    }
    assert set(AIRunnerSettings.model_fields) == {
        "ai_runner_pipeline",
        "ai_runner_model_id",
        "ai_runner_host",
        "ai_runner_port",
        "ai_runner_token",
    }
    assert set(StatusSettings.model_fields) == {"environment", "admin_token"}
    assert "preset" not in WorkerSettings.model_fields  # nothing read it


def test_a_production_transcoder_needs_no_cluster_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.settings import TranscoderSettings

    monkeypatch.setenv("FARM_ENVIRONMENT", "production")
    monkeypatch.setenv("FARM_ORCH_SECRET", "kq8-Zt2v-9xLw-44Hd")
    assert TranscoderSettings().environment == "production"
    monkeypatch.setenv("FARM_ORCH_SECRET", "change-me")
    with pytest.raises(ValidationError, match=r"FARM_ORCH_SECRET .*placeholder"):
        TranscoderSettings()


def test_a_transcoders_worker_runs_with_what_the_node_granted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from farm.remote.transcoder import GrantedSettings

    monkeypatch.setenv("FARM_ENVIRONMENT", "production")
    monkeypatch.setenv("FARM_DATABASE_URL", "postgresql+psycopg://farm@db/farm")
    monkeypatch.setenv("FARM_MAX_ATTEMPTS", "9")
    granted = GrantedSettings(broker_url="redis://node:6379/0", result_backend=None)
    assert granted.database_url == ClusterSettings.model_fields["database_url"].default
    assert granted.max_attempts == 3 and granted.result_backend is None


def test_a_default_secret_is_refused_even_when_it_looks_strong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.settings import GatewaySettings

    monkeypatch.setenv("FARM_ENVIRONMENT", "production")
    monkeypatch.setenv("FARM_ADMIN_TOKEN", "t0k-9aa1-Qm2z-77")
    assert GatewaySettings().environment == "production"  # ticket payments off: unused
    monkeypatch.setenv("FARM_ETH_RPC_URL", "http://127.0.0.1:8545")
    with pytest.raises(ValidationError, match=r"FARM_TICKET_SECRET .*the default"):
        GatewaySettings()
    monkeypatch.setenv("FARM_TICKET_SECRET", "5e" * 32)
    assert GatewaySettings().ticket_secret.get_secret_value() == "5e" * 32


def test_exporter_settings_keep_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.settings import ExporterSettings

    assert ExporterSettings().node_url == "http://127.0.0.1:8935"
    monkeypatch.setenv("FARM_NODE_URL", "https://node:8935")
    monkeypatch.setenv("FARM_ETH_RPC_URL", "http://127.0.0.1:8545")
    with pytest.raises(ValidationError, match="Controller address"):
        ExporterSettings()
    monkeypatch.setenv("FARM_ETH_CONTROLLER", "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    monkeypatch.setenv("FARM_EXPORTER_ORCHESTRATOR", "0x" + "ab" * 20)
    monkeypatch.setenv("FARM_EXPORTER_SENDERS", '["0x' + "cd" * 20 + '"]')
    s = ExporterSettings()
    assert s.node_url == "https://node:8935" and s.exporter_senders == ("0x" + "cd" * 20,)
    assert s.chain().rpc_timeout_s == 5.0 and s.exporter_port == 9153


def test_farm_up_reads_what_it_hands_its_children(monkeypatch: pytest.MonkeyPatch) -> None:
    from farm.settings import UpSettings

    assert UpSettings().prometheus_multiproc_dir is None and UpSettings().ai_models is None
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/run/farm-metrics")
    monkeypatch.setenv("FARM_AI_MODELS", "[]")
    up = UpSettings()
    assert up.prometheus_multiproc_dir == Path("/run/farm-metrics") and up.ai_models == "[]"
