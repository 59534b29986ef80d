"""Helpers shared by the integration tests (real Weaviate, MinIO, Prefect, models)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from hybridops.flows.orchestration.run_control import read_events
from hybridops.tasks.knowledge.document_contract import make_candidate, validate_documents
from hybridops.tasks.knowledge.chunking import chunk_document
from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.core.locks import lock_alias, lock_collection
from hybridops.tasks.knowledge.index import chunk_uuid, drop_all_generations, list_generations, live_name, read_index_state
from hybridops.tasks.knowledge.landing import landed_documents
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.knowledge.rebuild import effective_max_tokens
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.search import NoIndexError, search

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "examples" / "corpus"
BAD = REPO / "examples" / "bad"


def put(settings: Settings, docs: dict[str, bytes | str]) -> None:
    store = landing_zone(settings)
    for doc_id, data in docs.items():
        store.put(doc_id, data.encode("utf-8") if isinstance(data, str) else data)


def index_state(settings: Settings) -> dict:
    with weaviate_session(settings) as client:
        name = live_name(client, settings)
        assert name is not None, "no live generation"
        return read_index_state(client.collections.use(name), with_text=True)


def expected_state(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    """What the index must hold for the current landing zone: doc id -> [(uuid, text)] of passing docs."""
    embedder = load_embedder(settings)
    store = landing_zone(settings)
    candidates = [make_candidate(o.key, store.get(o.key), o.version, settings) for o in landed_documents(store)]
    result = validate_documents(candidates, settings)
    max_tokens = effective_max_tokens(settings, embedder)
    expected = {}
    for doc in result.passed:
        chunks = chunk_document(doc, embedder.count_tokens, max_tokens, settings.chunk_overlap)
        expected[doc.doc_id] = [(chunk_uuid(doc.doc_id, i), c.text) for i, c in enumerate(chunks)]
    return expected


def assert_index_matches_landing(settings: Settings, allow_extra_docs: set[str] = frozenset()) -> None:
    """Exactly the landing state: every passing doc with exactly its chunks, no duplicates, no orphans."""
    state = index_state(settings)
    expected = expected_state(settings)
    assert set(state) - set(allow_extra_docs) == set(expected)
    for doc_id, chunks in expected.items():
        records = state[doc_id]
        assert [(r.uuid, r.text) for r in records] == chunks, doc_id
        assert len({r.chunk_index for r in records}) == len(records)


def generations(settings: Settings):
    with weaviate_session(settings) as client:
        return list_generations(client, settings, count=True)


def drop_namespace(settings: Settings) -> None:
    """Delete every collection (index generations, namespace locks) and the aliases this test's namespace created."""
    with weaviate_session(settings) as client:
        drop_all_generations(client, settings)
        for resource in ("index", "adapters", "watcher"):
            client.alias.delete(alias_name=lock_alias(settings, resource))
        if client.collections.exists(lock_collection(settings)):
            client.collections.delete(lock_collection(settings))


def cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real `hybridops` console script of this venv."""
    return subprocess.run([str(Path(sys.executable).parent / "hybridops"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def cli_json(env: dict[str, str], *args: str) -> dict:
    done = cli(env, *args, "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout  # exactly one JSON object on stdout
    return json.loads(lines[0])


def section_doc(heading: str, sections: dict[str, str], **front: str) -> str:
    """A markdown document: front matter (e.g. title), a '#' heading and one '##' section per entry."""
    head = "".join(f"{k}: {v}\n" for k, v in front.items())
    body = "".join(f"## {name}\n\n{text}\n\n" for name, text in sections.items())
    return f"---\n{head}---\n# {heading}\n\n{body}"


def wait_events(cfg: Settings, event: str, resource: str, since: datetime, at_least: int, timeout: float = 30):
    """Events arrive asynchronously: poll the server's event store until `at_least` are there."""
    deadline = time.monotonic() + timeout
    while True:
        events = read_events(cfg, event, resource, since)
        if len(events) >= at_least or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def land_and_refresh(cfg: Settings, doc_ids: list[str]) -> None:
    from hybridops.tasks.core.object_store import landing_zone
    from hybridops.tasks.knowledge.refresh import run_refresh

    landing = landing_zone(cfg)
    for doc_id in doc_ids:
        landing.put(doc_id, (CORPUS / doc_id).read_bytes())
    report = run_refresh(cfg)
    assert report.quarantined == [], report.quarantined


def wait_searchable(cfg: Settings, query: str, doc_id: str, timeout: float = 240, k: int = 5) -> float:
    """Seconds until hybrid search returns the document among the top k for the query (fails the test on
    timeout); before the namespace's first refresh there is no index yet, which counts as not yet."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if any(hit.doc_id == doc_id for hit in search(cfg, query, k=k)):
                return time.monotonic() - started
        except NoIndexError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{doc_id} not searchable for {query!r} after {timeout:.0f} s")
