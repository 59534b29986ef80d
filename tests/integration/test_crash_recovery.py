"""SIGKILL a real `hybridops refresh` mid-way; the next run must converge exactly to the landing state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridops.tasks.knowledge.index import list_generations, live_name
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.knowledge.refresh import run_refresh
from hybridops.tasks.core.weaviate_connection import weaviate_session
from tests.integration.knowledge_support import REPO, assert_index_matches_landing, put, section_doc

SENTENCES = [
    "The ridge trail climbs steadily through a forest of lodgepole pine before it opens onto granite slabs.",
    "Water filters should be back-flushed after every trip so that sediment does not clog the hollow fibres.",
    "A three-season tent handles wind and rain well but is not designed to carry a heavy snow load.",
    "Merino base layers stay warm when damp and resist odour over several days of continuous wear.",
    "Trekking poles reduce the strain on knees during long descents and help with balance on river crossings.",
    "Stoves that burn canister fuel lose pressure in the cold, so keep the canister inside your jacket.",
    "Topographic maps show elevation with contour lines; closely spaced lines mean steep terrain.",
    "Bear canisters are required in many national parks and must be stored well away from the tent.",
    "Sleeping pads are rated by R-value, and a higher number means better insulation from the ground.",
    "Headlamps with a red-light mode preserve night vision and do not disturb other campers.",
    "Rain shells with pit zips let you dump heat on steep climbs without taking the jacket off.",
    "Blisters are easier to prevent than to treat: tape hot spots as soon as you feel them.",
]
N_DOCS = 90
MARK = "zqrevision"


def make_doc(i: int, revision: str = "") -> str:
    pick = lambda j: " ".join(SENTENCES[(i * 7 + j * 3 + k) % len(SENTENCES)] for k in range(4))  # noqa: E731
    sections = {f"Part {j}": f"Note {i}.{j}. {pick(j)}" for j in range(3)}
    if revision:
        sections["Revision"] = f"{revision} {MARK} {i}. {pick(5)}"
    return section_doc(f"Field note {i}", sections, title=f"Field note {i}", tags="[notes]")


def start_refresh(cfg) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDOPS_")}
    # a SIGKILLed run cannot release the index lock: its short lease lets the next run take over quickly
    env = clean | cfg.as_env() | {"HYBRIDOPS_REFRESH_BATCH_DOCS": "5", "HYBRIDOPS_LOCK_TTL_S": "3"}
    return subprocess.Popen([str(Path(sys.executable).parent / "hybridops"), "refresh", "--json"], env=env,
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the refresh as soon as `ready()` says it is mid-way; fail if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the refresh finished (rc={proc.returncode}) before it could be killed mid-way")
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the refresh never reached the kill point")


def building_objects(cfg) -> int:
    with weaviate_session(cfg) as client:
        return sum(client.collections.use(g.name).aggregate.over_all(total_count=True).total_count or 0
                   for g in list_generations(client, cfg))


def revised_objects(cfg) -> int:
    with weaviate_session(cfg) as client:
        col = client.collections.use(live_name(client, cfg))
        return len(col.query.bm25(query=MARK, query_properties=["text"], limit=1000).objects)


def test_sigkill_mid_refresh_then_rerun_converges_exactly(cfg):
    put(cfg, {f"notes/note-{i:03d}.md": make_doc(i) for i in range(N_DOCS)})

    # 1) Killed during the very first build (no alias yet), after the first batches landed in Weaviate.
    kill_when(start_refresh(cfg), lambda: building_objects(cfg) >= 15)
    assert 0 < building_objects(cfg) < N_DOCS * 3
    with weaviate_session(cfg) as client:
        assert live_name(client, cfg) is None  # readers never saw the half-built generation
    store = landing_zone(cfg)  # the landing zone changes while nobody is looking
    put(cfg, {f"notes/note-{i:03d}.md": make_doc(i, revision="Early fix") for i in range(3)})
    for i in range(3, 6):
        store.delete(f"notes/note-{i:03d}.md")
    put(cfg, {"notes/extra-a.md": make_doc(1000), "notes/extra-b.md": make_doc(1001)})
    healed = run_refresh(cfg)
    assert healed.alias_flipped and healed.chunks.embedded < healed.chunks.total  # killed work is reused
    assert len(list_generations_of(cfg)) == 1  # the crashed generation was resumed, not duplicated
    assert_index_matches_landing(cfg)

    # 2) Killed during an incremental update of every document (old and new chunks mixed in the live index).
    landed = {f"notes/note-{i:03d}.md": i for i in range(N_DOCS) if not 3 <= i < 6}
    landed |= {"notes/extra-a.md": 1000, "notes/extra-b.md": 1001}
    put(cfg, {doc_id: make_doc(i, revision="Second pass") for doc_id, i in landed.items()})
    kill_when(start_refresh(cfg), lambda: revised_objects(cfg) >= 10)
    assert 10 <= revised_objects(cfg) < len(landed)
    again = run_refresh(cfg)
    assert again.documents.updated > 0 and again.documents.added == 0
    assert_index_matches_landing(cfg)
    verify = run_refresh(cfg, verify=True)
    assert verify.verify.model_dump() == {"missing": 0, "extra": 0, "stale": 0}
    assert verify.chunks.embedded == 0


def list_generations_of(cfg):
    with weaviate_session(cfg) as client:
        return list_generations(client, cfg)
