"""The landing zone must be trustworthy before anything is deleted (real Weaviate, MinIO, Prefect).

    missing folder root / mistyped bucket ... refresh exits non-zero, index unchanged, no bucket created
    mass deletion ........................... blocked (exit 5, event on the Prefect server), then confirmed
    --full on an emptied landing zone ....... never flips the alias (story guard and the gate's count check)
    rebuild + removal + refresh ............. the index lock serialises them: nothing is resurrected
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from hybridops.flows.orchestration.events import MASS_DELETE_BLOCKED
from hybridops.tasks.core.locks import current_holder
from hybridops.tasks.core.object_store import landing_zone, s3_client
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.knowledge.index import live_name
from hybridops.tasks.knowledge.landing_changes import snapshot
from hybridops.tasks.knowledge.rebuild import choose_target, gate_rebuild
from hybridops.tasks.knowledge.refresh import MassDeletionBlocked, run_refresh
from tests.integration.knowledge_support import (
    REPO,
    assert_index_matches_landing,
    cli,
    drop_namespace,
    index_state,
    put,
    wait_events,
)

TIMEOUT_S = 180


def docs(n: int, prefix: str = "notes") -> dict[str, str]:
    return {f"{prefix}/note-{i:02d}.md": f"# Note {i}\n\nField note number {i} about trail {i * 7}." for i in range(n)}


def fingerprint(cfg) -> tuple[str | None, dict[str, list[str]]]:
    """The live collection and every indexed chunk id by document: what must not change."""
    with weaviate_session(cfg) as client:
        name = live_name(client, cfg)
    return name, {doc: [r.uuid for r in recs] for doc, recs in index_state(cfg).items()}


def error_of(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout[-2000:]
    return json.loads(lines[0])["error"]


def test_a_missing_landing_root_or_bucket_is_an_error_and_nothing_is_deleted(cfg, child_env, tmp_path):
    put(cfg, docs(3))
    run_refresh(cfg)
    before = fingerprint(cfg)
    if cfg.landing_uri.startswith("s3://"):
        typo = f"typo-{cfg.namespace}"
        broken = cfg.model_copy(update={"landing": f"s3://{typo}/{cfg.namespace}/landing"})
        code, says = 2, "does not exist"
    else:
        typo = None
        broken = cfg.model_copy(update={"landing": str(tmp_path / "unmounted" / "landing")})
        code, says = 3, "does not exist"
    started = time.monotonic()
    done = cli(child_env(broken), "refresh", "--json", timeout=TIMEOUT_S)
    assert done.returncode == code, done.stderr[-2000:]
    assert says in error_of(done) and broken.landing_uri in error_of(done)
    assert fingerprint(cfg) == before  # nothing deleted, the alias did not move
    with pytest.raises(Exception, match="does not exist"):  # the watcher never reads it as 'all removed'
        snapshot(landing_zone(broken))
    if typo:
        with pytest.raises(ClientError):
            s3_client(cfg).head_bucket(Bucket=typo)  # never created
    else:
        assert not (tmp_path / "unmounted").exists()
    assert time.monotonic() - started < TIMEOUT_S


def test_a_mass_deletion_is_blocked_until_confirmed(cfg, child_env, prefect_api):
    put(cfg, docs(12))
    run_refresh(cfg)
    before = fingerprint(cfg)
    store = landing_zone(cfg)
    for i in range(1, 12):
        store.delete(f"notes/note-{i:02d}.md")  # 11 of 12 (92% > 20%, more than 10)
    env = child_env(cfg)
    since = datetime.now(timezone.utc) - timedelta(seconds=2)
    done = cli(env, "refresh", "--json", timeout=TIMEOUT_S)
    assert done.returncode == 5, done.stderr[-2000:]
    message = error_of(done)
    assert "11 of 12" in message and "hybridops refresh --allow-mass-delete" in message
    assert "params.allow_mass_delete=true" in message
    assert fingerprint(cfg) == before  # stopped after planning: nothing written

    (event,) = wait_events(cfg, MASS_DELETE_BLOCKED, f"hybridops.{cfg.namespace}.index", since, at_least=1)
    assert event.payload["would_remove"] == 11 and event.payload["live_documents"] == 12
    assert event.payload["mode"] == "refresh" and "--allow-mass-delete" in event.payload["command"]

    done = cli(env, "refresh", "--allow-mass-delete", "--json", timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["documents"]["deleted"] == 11
    assert_index_matches_landing(cfg)
    assert set(index_state(cfg)) == {"notes/note-00.md"}


def test_a_full_rebuild_of_an_emptied_landing_zone_never_flips(settings, prefect_api, monkeypatch):
    from hybridops.flows.rebuild_index import RebuildParams, rebuild_index

    cfg = settings
    try:
        put(cfg, docs(3))
        run_refresh(cfg)
        before = fingerprint(cfg)
        store = landing_zone(cfg)
        for doc_id in docs(3):
            store.delete(doc_id)
        with pytest.raises(MassDeletionBlocked, match="none of the 3 live documents"):
            run_refresh(cfg, full=True)
        assert fingerprint(cfg) == before

        # the flow fails the same way and says so on the event stream
        for key, value in cfg.as_env().items():
            monkeypatch.setenv(key, value)
        since = datetime.now(timezone.utc) - timedelta(seconds=2)
        with pytest.raises(MassDeletionBlocked):
            rebuild_index(RebuildParams())
        (event,) = wait_events(cfg, MASS_DELETE_BLOCKED, f"hybridops.{cfg.namespace}.index", since, at_least=1)
        assert event.payload["mode"] == "rebuild" and "--full --allow-mass-delete" in event.payload["command"]
        assert fingerprint(cfg) == before

        # and the gate itself counts documents: an empty generation fails it unless confirmed
        embedder = load_embedder(cfg)
        with weaviate_session(cfg) as client:
            target = choose_target(client, cfg, embedder, full=True)
            gate = gate_rebuild(cfg, client, embedder, target, store)
            assert gate.status == "failed" and "document count" in gate.reason
            assert "--allow-mass-delete" in gate.reason
            confirmed = gate_rebuild(cfg, client, embedder, target, store, allow_mass_delete=True)
            assert confirmed.status != "failed" or "document count" not in confirmed.reason
        assert fingerprint(cfg) == before
    finally:
        drop_namespace(cfg)


def test_a_removal_during_a_rebuild_is_never_resurrected(settings, child_env):
    cfg = settings
    try:
        put(cfg, docs(4))
        run_refresh(cfg)
        env = child_env(cfg)
        exe = str(Path(sys.executable).parent / "hybridops")
        rebuild = subprocess.Popen([exe, "refresh", "--full", "--json"], env=env, cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + TIMEOUT_S
        while (holder := current_holder(cfg, "index")) is None and rebuild.poll() is None:
            assert time.monotonic() < deadline, "the rebuild never took the index lock"
            time.sleep(0.05)
        landing_zone(cfg).delete("notes/note-01.md")  # removed while the rebuild holds the lock
        refresh = subprocess.Popen([exe, "refresh", "--json"], env=env, cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err_rebuild = rebuild.communicate(timeout=TIMEOUT_S)
        _, err_refresh = refresh.communicate(timeout=TIMEOUT_S)
        assert rebuild.returncode == 0, err_rebuild[-2000:]
        assert refresh.returncode == 0, err_refresh[-2000:]
        assert holder is None or "rebuild" in holder.holder
        assert "notes/note-01.md" not in index_state(cfg)
        assert_index_matches_landing(cfg)
    finally:
        drop_namespace(cfg)
