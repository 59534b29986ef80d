"""Fixtures the unit tests share: settings on a private home and its folder store (no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridops.tasks.core.object_store import FolderStore
from hybridops.tasks.core.settings import Settings


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", _env_file=None)


@pytest.fixture
def store(cfg: Settings) -> FolderStore:
    return FolderStore(cfg.store_uri)
