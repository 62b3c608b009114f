"""The deployment files, checked without a Docker engine: what they reference must exist and agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from app.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def test_dockerfile_copies_what_exists_and_runs_the_console_script():
    dockerfile = (REPO / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", dockerfile, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), path
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        name = package.removesuffix("*")
        assert f"COPY {name} ./{name}" in dockerfile, f"the image would lack the {name} package"
    scripts = project["project"]["scripts"]
    assert 'ENTRYPOINT ["reward-serve"]' in dockerfile and "reward-serve" in scripts
    for name in re.findall(r"^\s+(REWARD_[A-Z_]+)=", dockerfile, re.MULTILINE):
        field = name.removeprefix("REWARD_").lower()
        assert field in Settings.model_fields or name == "REWARD_DEMO_DIR", name


def test_compose_wires_the_server_to_prometheus_and_grafana():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"reward", "prometheus", "grafana"}
    for env in services["reward"]["environment"]:
        assert env.removeprefix("REWARD_").lower() in Settings.model_fields, env
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    prometheus = yaml.safe_load((REPO / "deploy/prometheus.yml").read_text())
    [target] = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == "reward:8000" and services["reward"]["ports"] == ["8000:8000"]


def test_grafana_dashboard_queries_metrics_the_service_exports():
    from app.metrics import Metrics

    exported = {m.name for m in Metrics().registry.collect()}
    dashboard = (REPO / "deploy/grafana/dashboards/reward-server.json").read_text()
    used = set(re.findall(r"reward_[a-z_]+", dashboard))
    for name in used:
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        assert base in exported or name in exported, name
