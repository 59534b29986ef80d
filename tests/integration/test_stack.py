"""The real local stack: `up` is idempotent, `status` tells the truth, `down` stops exactly what it started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hybridops.tasks.core.settings import Settings
from tests.conftest import stack_settings


def _cli(cfg: Settings, child_env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hybridops.flows.cli", *args], env=child_env(cfg), capture_output=True, text=True, timeout=300
    )


def test_up_twice_status_down(tmp_path: Path, child_env) -> None:
    cfg = stack_settings(tmp_path / "home", namespace="stacktest")
    first = _cli(cfg, child_env, "up", "--json")
    assert first.returncode == 0, first.stderr
    try:
        started = json.loads(first.stdout)["services"]
        assert {info["action"] for info in started.values()} == {"started"}
        pids = {name: info["pid"] for name, info in started.items()}

        second = _cli(cfg, child_env, "up", "--json")
        assert second.returncode == 0, second.stderr
        assert {info["action"] for info in json.loads(second.stdout)["services"].values()} == {"already running"}

        healthy = _cli(cfg, child_env, "status", "--json")
        assert healthy.returncode == 0, healthy.stderr
        services = json.loads(healthy.stdout)["services"]
        assert set(services) == {"prefect", "weaviate", "s3"}
        assert all(s["healthy"] for s in services.values())
        major, minor = (int(x) for x in services["weaviate"]["version"].split(".")[:2])
        assert (major, minor) >= (1, 32)
        assert services["prefect"]["version"].startswith("3.")
        assert {name: s["managed_pid"] for name, s in services.items()} == pids
    finally:
        stopped = _cli(cfg, child_env, "down", "--json")
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]

    after = _cli(cfg, child_env, "status", "--json")
    assert after.returncode != 0
    assert not any(s["healthy"] for s in json.loads(after.stdout)["services"].values())


def test_up_reports_a_taken_port_clearly(tmp_path: Path, stack: Settings, child_env) -> None:
    # Reuse the running session's Weaviate port: hybridops did not start it under this home.
    cfg = stack_settings(tmp_path / "home", namespace="porttest", weaviate_url=stack.weaviate_url)
    result = _cli(cfg, child_env, "up")
    try:
        assert result.returncode != 0
        assert "already in use" in result.stderr and str(stack.weaviate_port) in result.stderr
    finally:
        _cli(cfg, child_env, "down")


def test_config_json_redacts_secrets(tmp_path: Path, child_env) -> None:
    cfg = stack_settings(tmp_path, s3_secret_key="super-secret-minio-pw")
    result = _cli(cfg, child_env, "config", "--json")
    assert result.returncode == 0, result.stderr
    assert "super-secret-minio-pw" not in result.stdout
    assert json.loads(result.stdout)["s3_secret_key"] == "**********"
