"""Deployment files are data a user relies on: they must parse and stay consistent with the settings."""

from __future__ import annotations

from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_docker_compose_is_valid_and_local_only() -> None:
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"weaviate", "minio", "prefect"}
    for name, service in compose["services"].items():
        assert ":" in service["image"] and not service["image"].endswith(":latest"), name
        assert all(str(port).startswith("127.0.0.1:") for port in service["ports"]), name
    text = (INFRA / "docker-compose.yml").read_text()
    assert "HYBRIDOPS_S3_SECRET_KEY" in text and "HYBRIDOPS_S3_ACCESS_KEY" in text


def test_compose_pins_the_weaviate_version_hybridops_builds() -> None:
    from hybridops.infra.binaries import WEAVIATE_VERSION

    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    assert compose["services"]["weaviate"]["image"].endswith(":" + WEAVIATE_VERSION.lstrip("v"))


def test_docker_compose_config_accepts_the_file() -> None:
    import shutil
    import subprocess

    import pytest

    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    result = subprocess.run(
        ["docker-compose", "-f", str(INFRA / "docker-compose.yml"), "config", "--quiet"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
