"""docker-compose.gpu.yml: valid without an engine, secrets required, every command in the CLI."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from farm.cli import cli
from tests.conftest import need_tool

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.gpu.yml"
# Strong enough for FARM_ENVIRONMENT=production (farm.settings.weak_secret).
SECRETS = {
    "FARM_SECRET": "s-7Hq2-Lx9w-Pk41",
    "POSTGRES_PASSWORD": "p-2Vd8-Nw5r-Zc63",
    "FARM_FLOWER_BASIC_AUTH": "ops:a-4Tb9-Ky2m-Qe87",
    "FARM_ADMIN_TOKEN": "t-8Jf3-Ru6n-Wd25",
    "GRAFANA_ADMIN_PASSWORD": "g-5Mc1-Hs7p-Xa49",
}


def _compose() -> str:
    return need_tool("docker-compose", hint="Debian's validates files without an engine")


def _config(tool: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [tool, "-f", str(COMPOSE), *args, "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _resolved() -> dict[str, Any]:
    done = _config(_compose(), SECRETS, "--profile", "dev")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = yaml.safe_load(done.stdout)
    return data


def test_compose_file_validates() -> None:
    tool = _compose()
    ok = _config(tool, SECRETS)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_a_missing_secret_fails_with_its_name(secret: str) -> None:
    tool = _compose()
    missing = _config(tool, {k: v for k, v in SECRETS.items() if k != secret})
    assert missing.returncode != 0 and f"set {secret}" in missing.stderr


def test_every_compose_command_is_a_farm_command() -> None:
    text = COMPOSE.read_text()
    # Services on the farm image (the x-farm anchor) run farm subcommands.
    blocks = re.split(r"\n  (?=[a-z-]+:\n)", text.split("\nservices:\n", 1)[1])
    commands = [
        m
        for b in blocks
        if "<<: *farm" in b
        for m in re.findall(r'command:\s*\[?\s*\["?([a-z-]+)"', b)
    ]
    checks = re.findall(r'\["CMD", "farm", "([a-z-]+)"', text)
    assert {"gateway", "exporter", "node", "worker"} <= set(commands) and checks
    for name in {*commands, *checks}:
        assert name in cli.commands, f"compose runs `farm {name}`, which the CLI lacks"


def _parses(argv: list[str]) -> None:
    name, *args = argv
    command = cli.commands.get(name)
    assert command is not None, f"`farm {name}` is not a command"
    try:
        command.make_context(name, list(args))
    except click.UsageError as e:
        raise AssertionError(f"`farm {' '.join(argv)}`: {e}") from e


def test_every_farm_command_line_parses() -> None:
    services = _resolved()["services"]
    farm_image = [s for s in services.values() if s.get("image", "").startswith("livepeer-farm")]
    assert len(farm_image) >= 7
    for service in farm_image:
        _parses(service["command"])
        test = service.get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "farm"]:
            _parses(test[2:])


def test_services_gpu_health_and_dependencies() -> None:
    config = _resolved()
    services = config["services"]
    for name in (
        "redis",
        "postgres",
        "anvil",
        "gateway",
        "node",
        "worker-gpu",
        "worker-cpu",
        "beat",
        "flower",
        "exporter",
        "prometheus",
        "grafana",
    ):
        assert name in services, name
    gpu = services["worker-gpu"]
    assert "video" in gpu["environment"]["NVIDIA_DRIVER_CAPABILITIES"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "video" in device["capabilities"]
    assert services["anvil"]["profiles"] == ["dev"]
    # Every dependency waits for health, and every dependency has a health check.
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            assert how["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep], f"{name} waits on {dep}, which has no check"
    # Workers share the node's metrics directory and PID namespace (multiprocess files).
    for worker in ("worker-gpu", "worker-cpu"):
        assert services[worker]["pid"] == "service:node"
        assert (
            services[worker]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
            == (services["node"]["environment"]["PROMETHEUS_MULTIPROC_DIR"])
        )
    mounts = " ".join(map(str, services["prometheus"]["volumes"]))
    assert "ops/prometheus" in mounts
    assert "ops/grafana/dashboards" in " ".join(map(str, services["grafana"]["volumes"]))
    # The node serves HTTPS only (remote transcoders need it); whoever reads it verifies its
    # kept self-signed certificate from the volume it is kept in.
    assert "--tls" in services["node"]["command"]
    ca = "/var/lib/farm/tls/node.crt"
    assert ca in services["node"]["healthcheck"]["test"]
    gateway_env = services["gateway"]["environment"]
    assert (
        f'"node_url": "https://node:8935", "node_ca": "{ca}"' in gateway_env["FARM_ORCHESTRATORS"]
    )
    assert ca in services["exporter"]["command"]
    for name in ("node", "gateway", "exporter", "prometheus"):
        assert any(str(v).startswith("node-tls:") for v in services[name]["volumes"]), name


def test_every_farm_service_environment_is_accepted_by_its_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # FARM_ENVIRONMENT=production refuses development secrets: a service missing one (the node
    # without FARM_ADMIN_TOKEN) would exit at start, before its health check ever passes.
    from farm.settings import FlowerSettings, NodeSettings, WorkerSettings
    from gateway.settings import GatewaySettings

    services = _resolved()["services"]
    classes = {
        "node": NodeSettings,
        "gateway": GatewaySettings,
        "worker": WorkerSettings,
        "flower": FlowerSettings,
    }
    checked = set()
    for service in services.values():
        settings_class = classes.get(service.get("command", [""])[0])
        if settings_class is None:
            continue
        for key in list(os.environ):
            if key.startswith("FARM_"):
                monkeypatch.delenv(key)
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, str(value))
        monkeypatch.chdir(COMPOSE.parent)
        settings_class()  # raises on a refused development secret
        checked.add(service["command"][0])
    assert checked == set(classes)


def test_services_restart_and_report_their_health() -> None:
    # A crashed Redis or PostgreSQL would otherwise stay down while every farm service waits
    # on it; beat and Flower fail without anything noticing unless they have a check.
    services = _resolved()["services"]
    for name, service in services.items():
        if "dev" in service.get("profiles", []):
            continue
        assert service.get("restart") == "unless-stopped", f"{name} has no restart policy"
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    beat = " ".join(services["beat"]["healthcheck"]["test"])
    schedule = services["beat"]["command"][services["beat"]["command"].index("--schedule") + 1]
    assert Path(schedule).name + "*" in beat and Path(schedule).parent.as_posix() in beat
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])
