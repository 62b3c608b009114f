"""The deployment files, checked without a Docker engine: what they reference must exist and agree, and
Debian's `docker-compose config` must accept every compose file and profile (and refuse the scale-out
stack without its required variables). The stack itself runs for real in test_stack.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from prometheus_client import generate_latest

from app.metrics import Metrics
from app.settings import Settings
from tests.helpers import exposed_metric_names, promql_metric_names, tool

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
GPU = ["docker-compose.gpu.yml"]
SCALE = ["docker-compose.scale.yml"]
SCALE_VARS = {"REWARD_REPLICAS": "3", "REWARD_API_KEYS": "key-1,key-2", "GRAFANA_ADMIN_PASSWORD": "pw"}


def test_dockerfile_copies_what_exists_and_runs_the_console_scripts():
    for source in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", DOCKERFILE, re.MULTILINE):
        for path in (p for p in source.split() if not p.startswith("--")):
            assert (REPO / path).exists(), path
    for package in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        name = package.removesuffix("*")
        assert f"COPY {name} ./{name}" in DOCKERFILE, f"the image would lack the {name} package"
    scripts = PROJECT["project"]["scripts"]
    assert 'ENTRYPOINT ["reward-serve"]' in DOCKERFILE and "reward-serve" in scripts
    assert 'CMD ["reward-healthcheck"]' in DOCKERFILE and "reward-healthcheck" in scripts
    for name in re.findall(r"\b(REWARD_[A-Z_]+)=", DOCKERFILE):
        field = name.removeprefix("REWARD_").lower()
        assert field in Settings.model_fields or name == "REWARD_DEMO_DIR", name


def test_dockerfile_builds_both_variants_from_the_lock():
    """VARIANT picks a base stage; both install the same pinned packages and the Makefile's torch."""
    assert re.search(r"^ARG VARIANT=cpu$", DOCKERFILE, re.MULTILINE)
    assert re.search(r"^FROM base-\$\{VARIANT\} AS server$", DOCKERFILE, re.MULTILINE)
    bases = {variant: image for image, variant in re.findall(r"^FROM (\S+) AS base-(\w+)$", DOCKERFILE, re.M)}
    assert set(bases) == {"cpu", "cuda"} and bases["cuda"].startswith("nvidia/cuda:")
    assert all(":" in image and not image.endswith(":latest") for image in bases.values()), bases
    # MODEL_SOURCE picks the image: the model from the volume (default) or baked from a build context
    assert re.search(r"^ARG MODEL_SOURCE=volume$", DOCKERFILE, re.MULTILINE)
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", DOCKERFILE, re.MULTILINE)
    assert stages[-1] == ("model-${MODEL_SOURCE}", "")
    assert {"model-volume", "model-baked", "model"} <= {alias for _, alias in stages}
    assert "COPY --from=model --chown=10001 / /opt/model/" in DOCKERFILE
    [torch] = re.findall(r"^ARG TORCH_VERSION=(\S+)$", DOCKERFILE, re.MULTILINE)
    makefile = (REPO / "Makefile").read_text()
    assert f"TORCH_SPEC ?= torch=={torch}" in makefile
    pins = {}
    for line in (REPO / "deploy/requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            [spec] = requirement.specifier
            assert spec.operator == "==", line
            pins[requirement.name.lower().replace("_", "-")] = spec.version
    assert pins["torch"] == torch
    for line in PROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"deploy/requirements.lock lacks {name}: `make lock`"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} breaks {line}: `make lock`"


def compose(*files: str, profile: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`docker-compose config` on these files (after docker-compose.yml); exit status and output."""
    command = [tool("docker-compose"), "-f", "docker-compose.yml"]
    for name in files:
        command += ["-f", name]
    if profile:
        command += ["--profile", profile]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REWARD_", "GRAFANA_"))}
    result = subprocess.run(
        [*command, "config"], cwd=REPO, env={**clean, **(env or {})}, capture_output=True, text=True
    )
    return result.returncode, result.stdout + result.stderr


def config(*files: str, profile: str | None = None, env: dict[str, str] | None = None) -> dict:
    status, output = compose(*files, profile=profile, env=env)
    assert status == 0, output
    return dict(yaml.safe_load(output))


@pytest.mark.parametrize(
    "files, env",
    [([], {}), (GPU, {}), (SCALE, SCALE_VARS), (GPU + SCALE, SCALE_VARS)],
    ids=["cpu", "gpu", "scale-out", "gpu-scale-out"],
)
def test_every_compose_variant_is_valid_and_wires_the_stack(files: list[str], env: dict[str, str]):
    services = config(*files, env=env)["services"]
    assert set(services) == {"demo", "reward", "lb", "prometheus", "grafana", "train"}
    assert [name for name, service in services.items() if "profiles" in service] == ["train"]
    reward = services["reward"]
    for name in reward["environment"]:
        assert name.removeprefix("REWARD_").lower() in Settings.model_fields, name
    assert "ports" not in reward, "replicas publish no port: the load balancer does"
    drain = float(reward["environment"]["REWARD_DRAIN_SECONDS"])
    assert int(reward["stop_grace_period"].removesuffix("s")) > drain + 5
    assert reward["depends_on"] == {"demo": {"condition": "service_completed_successfully"}}
    assert services["lb"]["depends_on"] == {"reward": {"condition": "service_healthy"}}
    assert services["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert reward["volumes"] == ["models:/models:ro"] and services["demo"]["volumes"] == ["models:/models:rw"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith("/") or Path(source).exists(), source
    gpu = [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    for name in ("reward", "demo"):
        devices = services[name].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        assert devices == (gpu if files[:1] == GPU else None), name
        assert services[name]["build"]["args"]["VARIANT"] == ("cuda" if files[:1] == GPU else "cpu")
    if files[-1:] == SCALE:
        assert reward["deploy"]["replicas"] == 3 and reward["environment"]["REWARD_API_KEYS"] == "key-1,key-2"
        assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


@pytest.mark.parametrize("missing", sorted(SCALE_VARS))
def test_the_scale_out_stack_refuses_to_start_without_its_required_settings(missing: str):
    status, output = compose(*SCALE, env={k: v for k, v in SCALE_VARS.items() if k != missing})
    assert status != 0 and f"set {missing}" in output, output
    status, output = compose(*SCALE, env={**SCALE_VARS, missing: ""})  # `:?` refuses empty too
    assert status != 0 and f"set {missing}" in output, output


@pytest.mark.parametrize("files", [[], GPU], ids=["cpu", "gpu"])
def test_the_train_profile_trains_into_the_shared_models_volume(files: list[str]):
    services = config(*files, profile="train")["services"]
    train = services["train"]
    assert train["entrypoint"] == ["reward-train"] and "reward-train" in PROJECT["project"]["scripts"]
    assert "models:/models:rw" in train["volumes"]
    output = next(arg for arg in train["command"] if arg.startswith("--output="))
    assert output == "--output=/models/my-rm"
    data = next(arg for arg in train["command"] if arg.startswith("--data="))
    assert (REPO / "data" / data.removeprefix("--data=/data/")).exists()


def test_prometheus_config_is_valid_for_promtool():
    result = subprocess.run(
        [tool("promtool"), "check", "config", "deploy/prometheus.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_dashboard_queries_only_metrics_the_service_exports():
    """Parsed from each query's PromQL; the running service's own exposition is checked in test_stack."""
    exported = exposed_metric_names(generate_latest(Metrics().registry).decode()) | {"up"}
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/reward-server.json").read_text())
    queries = [t["expr"].replace("$__rate_interval", "1m") for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*map(promql_metric_names, queries))
    assert used - exported == set()
    assert {"reward_ready", "reward_queue_depth_items", "reward_value_bucket"} <= used
    assert "reward_ensemble_disagreement_bucket" in used and "reward_batch_padded_tokens_total" in used


def test_an_empty_setting_from_compose_or_kubernetes_means_its_default(monkeypatch: pytest.MonkeyPatch):
    """`REWARD_MODEL: ${REWARD_MODEL:-}` passes "" when unset: the demo, not a checkpoint named ""."""
    for name in ("REWARD_MODEL", "REWARD_API_KEYS", "REWARD_DRAIN_SECONDS"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert settings.model is None and settings.api_keys is None
    assert settings.drain_seconds == Settings.model_fields["drain_seconds"].default
