"""Fixtures the integration tests share: both landing backends, a small indexed corpus, clean-up after each."""

from __future__ import annotations

import pytest

from tests.integration.knowledge_support import drop_namespace, land_and_refresh


@pytest.fixture(params=["settings", "s3_settings"])
def cfg(request):
    """Both landing backends: a local folder and a real MinIO bucket prefix."""
    settings = request.getfixturevalue(request.param)
    yield settings
    drop_namespace(settings)


@pytest.fixture
def folder_cfg(settings):
    """A folder landing zone (what only a filesystem can hold: symlinks, FIFOs, odd names, mtimes)."""
    yield settings
    drop_namespace(settings)


@pytest.fixture
def indexed(settings, request):
    """The test module's DOCS (example-corpus ids) indexed under the test's own namespace, dropped afterwards."""
    land_and_refresh(settings, request.module.DOCS)
    yield settings
    drop_namespace(settings)
