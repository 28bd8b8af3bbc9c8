"""ops/k8s and ops/systemd: every command they run is a farm command that parses."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import Any

import click
import yaml

from farm.blobstore import LocalBlobStore, blob_store_from_url
from farm.cli import cli
from farm.media.codecs import GPU_ENCODERS
from farm.queues import CODECS, transcode_queue
from farm.settings import WorkerSettings

OPS = Path(__file__).resolve().parents[2] / "ops"


def parses(argv: list[str], where: str) -> None:
    """``farm ARGV`` names a command and its options parse."""
    assert argv[0].endswith("farm"), f"{where}: runs {argv[0]}, not farm"
    name, *args = argv[1:]
    command = cli.commands.get(name)
    assert command is not None, f"{where}: `farm {name}` is not a command"
    try:
        command.make_context(name, args)
    except click.UsageError as e:
        raise AssertionError(f"{where}: `{' '.join(argv)}`: {e}") from e


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((OPS / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_k8s_containers_run_farm_commands() -> None:
    docs = k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert {
        "farm-node",
        "farm-gateway",
        "farm-worker-gpu",
        "farm-worker-cpu",
        "farm-beat",
        "farm-flower",
        "farm-exporter",
    } <= set(deployments)
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        assert d["spec"]["selector"]["matchLabels"].items() <= (
            d["spec"]["template"]["metadata"]["labels"].items()
        ), name
        for c in spec["containers"]:
            parses(c["command"], f"{name}/{c['name']}")
            probe = c.get("livenessProbe", {}).get("exec", {}).get("command")
            if probe:
                parses(probe, f"{name}/{c['name']} liveness")
    gpu = deployments["farm-worker-gpu"]["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["shareProcessNamespace"] is True
    assert deployments["farm-beat"]["spec"]["replicas"] == 1


def test_keda_scales_each_worker_on_its_queues() -> None:
    docs = k8s_documents()
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    assert set(scaled) == {"farm-worker-gpu", "farm-worker-cpu"} and set(scaled) <= deployments
    for target, gpu in (("farm-worker-gpu", True), ("farm-worker-cpu", False)):
        triggers = scaled[target]["spec"]["triggers"]
        assert all(t["type"] == "redis" for t in triggers)
        lists = {t["metadata"]["listName"] for t in triggers}
        assert transcode_queue("h264", gpu) in lists, target
        assert scaled[target]["spec"]["minReplicaCount"] >= 1


def test_keda_has_a_trigger_for_every_queue_a_worker_consumes() -> None:
    # A queue without a trigger grows without the workers ever scaling for it.
    scaled = {
        d["spec"]["scaleTargetRef"]["name"]: {
            t["metadata"]["listName"] for t in d["spec"]["triggers"]
        }
        for d in k8s_documents()
        if d["kind"] == "ScaledObject"
    }
    families = {codec: family for family, codec in CODECS.items()}
    codecs = WorkerSettings.model_fields["codecs"].default
    assert "av1" in codecs
    for codec in codecs:
        assert transcode_queue(codec, gpu=False) in scaled["farm-worker-cpu"], codec
        if families[codec] in GPU_ENCODERS:
            assert transcode_queue(codec, gpu=True) in scaled["farm-worker-gpu"], codec


def _env(container: dict[str, Any], config: dict[str, str]) -> dict[str, str]:
    env = dict(config) if any("configMapRef" in e for e in container.get("envFrom", [])) else {}
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def test_replicated_deployments_share_their_blob_stores() -> None:
    # Two gateway replicas each writing task outputs into an emptyDir answer half the GETs
    # with 404: every pod of a deployment that runs several must use a shared store.
    docs = k8s_documents()
    (config,) = [d["data"] for d in docs if d["kind"] == "ConfigMap"]
    scaled = {d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "ScaledObject"}
    checked = []
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        name = d["metadata"]["name"]
        if d["spec"].get("replicas", 1) < 2 and name not in scaled:
            continue
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"]:
            env = _env(c, config)
            for key in ("FARM_BLOB_URL", "FARM_GATEWAY_BLOB_URL"):
                if key in env:
                    store = blob_store_from_url(env[key])
                    assert not isinstance(store, LocalBlobStore), f"{name}: {key}={env[key]}"
                    checked.append((name, key))
        local = [v["name"] for v in spec.get("volumes", []) if "emptyDir" in v]
        mounted = {
            m["name"]: m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts", [])
        }
        for volume in local:
            assert "blob" not in mounted.get(volume, ""), f"{name} keeps blobs in an emptyDir"
    assert ("farm-gateway", "FARM_GATEWAY_BLOB_URL") in checked


def test_kustomization_lists_every_manifest() -> None:
    k = yaml.safe_load((OPS / "k8s" / "kustomization.yaml").read_text())
    on_disk = {p.name for p in (OPS / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) == on_disk


def units() -> dict[str, configparser.ConfigParser]:
    found = {}
    for path in sorted((OPS / "systemd").glob("farm*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(path.read_text())
        found[path.name] = parser
    return found


def test_systemd_units_run_farm_commands() -> None:
    found = units()
    assert {
        "farm-node.service",
        "farm-gateway.service",
        "farm-beat.service",
        "farm-exporter.service",
        "farm-worker@.service",
    } <= set(found)
    for name, unit in found.items():
        argv = shlex.split(unit["Service"]["ExecStart"].replace("%i", "0"))
        parses(argv, name)
        assert unit["Service"]["EnvironmentFile"] == "/etc/farm/farm.env"
        assert unit["Install"]["WantedBy"] == "farm.target"
    worker = found["farm-worker@.service"]["Service"]["ExecStart"]
    assert worker.endswith("farm worker --gpus %i")
    # Only the node and the workers share the metrics directory; the others unset it (an
    # empty PROMETHEUS_MULTIPROC_DIR would still put them in multiprocess mode).
    for name in ("farm-gateway.service", "farm-beat.service", "farm-exporter.service"):
        service = found[name]["Service"]
        assert service.get("UnsetEnvironment") == "PROMETHEUS_MULTIPROC_DIR", name
        assert "PROMETHEUS_MULTIPROC_DIR" not in service.get("Environment", ""), name
