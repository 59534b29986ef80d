"""State files: corrupt means repairable, never a dead command (hardening §4), end to end on the real stack.

A corrupt embedding cache is moved aside by `hybridops refresh`; a corrupt champion pointer makes `ask` answer
with the base model (and say so), `adapters list` flags a corrupt manifest and `adapters promote` repairs the
pointer. The registry holds fake adapter files (no training: nothing here loads an adapter)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridops.tasks.core.settings import Settings
from tests.integration.knowledge_support import cli, cli_json
from tests.integration.knowledge_support import CORPUS, drop_namespace
from tests.unit.test_adapters_registry import adapter_folder, register

pytestmark = pytest.mark.slow


def test_corrupt_state_files_are_repaired_not_fatal(settings: Settings, child_env, tmp_path: Path) -> None:
    from hybridops.tasks.behaviour import adapters
    from hybridops.tasks.core.object_store import artifact_store, landing_zone
    from hybridops.tasks.knowledge.embedding_cache import cache_path, open_cache

    cfg = settings
    env = child_env(cfg)

    # 1. a corrupt embedding cache: the refresh succeeds, the file is moved aside and rebuilt
    cache = cache_path(cfg)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"\x00not sqlite\xff" * 512)
    landing_zone(cfg).put("policies/refunds.md", (CORPUS / "policies/refunds.md").read_bytes())
    try:
        refreshed = cli_json(env, "refresh")
        assert refreshed["quarantined"] == [], refreshed
        aside = list(cache.parent.glob("embeddings.sqlite3.corrupt-*"))
        assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))], list(cache.parent.iterdir())
        assert aside[0].read_bytes().startswith(b"\x00not sqlite")
        with open_cache(cfg) as rebuilt:
            assert rebuilt.count() > 0 and rebuilt.moved_aside == []

        # 2. a registry with one good version, one with a corrupt manifest, and a corrupt champion pointer
        store = artifact_store(cfg)
        good = register(cfg, store, adapter_folder(tmp_path, b"good"))
        bad = register(cfg, store, adapter_folder(tmp_path, b"bad"))
        store.put(f"adapters/{bad.version}/manifest.json", b'{"version": "' + bad.version.encode() + b'", "files": {"')
        store.put(adapters.CHAMPION_KEY, b"")

        answer = cli_json(env, "ask", "How many days do I have to return an item?")
        assert answer["adapter"] is None and answer["fallback"] is True
        assert "champion pointer" in answer["warning"] and "base model" in answer["warning"]
        assert answer["answer"] is None or isinstance(answer["answer"], str)

        strict = cli({**env, "HYBRIDOPS_ALLOW_BASE_FALLBACK": "false"}, "ask", "How many days?", "--json")
        assert strict.returncode == 4, strict.stderr[-2000:]
        assert "champion pointer" in json.loads(strict.stdout)["error"]

        listed = cli_json(env, "adapters", "list")
        assert listed["champion"] is None and "is empty" in listed["champion_error"]
        rows = {row["version"]: row for row in listed["adapters"]}
        assert rows[good.version]["valid"] is True and rows[good.version]["reason"] is None
        assert rows[bad.version]["valid"] is False and "manifest is corrupt" in rows[bad.version]["reason"]

        refused = cli(env, "adapters", "promote", bad.version, "--json")
        assert refused.returncode == 4, refused.stderr[-2000:]

        promoted = cli_json(env, "adapters", "promote", good.version)
        assert promoted["champion"] == good.version and promoted["history"] == [None]
        assert adapters.champion_version(cfg) == good.version  # a valid pointer again
        assert cli_json(env, "adapters", "list")["champion_error"] is None
    finally:
        drop_namespace(cfg)
