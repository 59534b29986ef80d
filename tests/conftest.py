"""Shared fixtures: a REAL local stack (Weaviate, MinIO, Prefect server) on free ports, isolated per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hybridops.infra.services import private_stack_settings
from hybridops.tasks.core.settings import Settings

HERE = Path(__file__).parent
TRANSFER_SUITE_SMALL = HERE / "data" / "transfer_suite_small.yaml"
"""5 of the 20 transfer cases: a retrain's out-of-domain gate stays within the CI time budget."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


def stack_settings(home: Path, **overrides) -> Settings:
    """Settings for a private stack on fresh free ports under `home`."""
    return private_stack_settings(
        home, **({"s3_bucket": "hybridops-test", "transfer_suite": TRANSFER_SUITE_SMALL} | overrides))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Start the real services once per test session; stop exactly them afterwards."""
    from hybridops.infra.services import down, up

    base = stack_settings(tmp_path_factory.mktemp("stack"))
    up(base)
    try:
        yield base
    finally:
        down(base)


def _isolated(stack: Settings, tmp_path: Path, **overrides) -> Settings:
    namespace = "t" + uuid.uuid4().hex[:10]
    values = stack.model_dump() | {"home": tmp_path / "home", "namespace": namespace} | overrides
    return Settings(**values)


@pytest.fixture
def settings(stack: Settings, tmp_path: Path) -> Settings:
    """A unique namespace and home on the shared servers; landing zone and store are local folders."""
    return _isolated(stack, tmp_path)


@pytest.fixture
def s3_settings(stack: Settings, tmp_path: Path) -> Settings:
    """Like `settings`, but the landing zone (and so the store) live on the real MinIO server."""
    namespace_settings = _isolated(stack, tmp_path)
    return _isolated(
        stack, tmp_path,
        namespace=namespace_settings.namespace,
        landing=f"s3://{stack.s3_bucket}/{namespace_settings.namespace}/landing",
    )


@pytest.fixture
def prefect_api(stack: Settings) -> Iterator[str]:
    """Point the Prefect client of this process at the session's real Prefect server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
        yield stack.prefect_api_url


@pytest.fixture
def child_env():
    """Environment for a subprocess (e.g. the `hybridops` CLI) that reproduces the given settings."""

    def make(cfg: Settings) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDOPS_")}
        return clean | cfg.as_env() | {"PREFECT_API_URL": cfg.prefect_api_url}

    return make
