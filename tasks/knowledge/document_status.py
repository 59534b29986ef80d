"""Where a document stands between the landing zone and the live index, and why it is not searchable.

An eval case whose gold document the live index lacks is a knowledge problem; the action depends on why:
never landed (land it), quarantined (fix what its contract said), deleted (restore it, or drop the case) or
landed after the last refresh (refresh). The answer is read from the three places that know it: the live
index (each chunk carries its source version), the landing zone (the current version of that one key) and
the artifact store (quarantine entries, and a small record per document a refresh deleted). The cost is per
asked document, never per corpus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

from hybridops.tasks.core.object_store import ObjectStore, artifact_store, landing_zone
from hybridops.tasks.core.quarantine import held_entry, slot
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.index import live_name, objects_of_docs

DELETED_PREFIX = "history/knowledge/deleted/"

Status = Literal["indexed", "never_landed", "deleted", "quarantined", "not_yet_indexed"]


class DocumentStatus(BaseModel):
    """One document's standing. `indexed` means the live index holds the version now in the landing zone
    (or holds it while its removal waits for the next refresh); anything else is a missing document, even
    when an older version is still searchable (`stale_version_indexed`)."""

    doc_id: str
    status: Status
    detail: str = ""
    stale_version_indexed: bool = False
    quarantine_reasons: list[str] = []
    quarantine_key: str | None = None  # the entry's reason.json in the artifact store
    deleted_at: str | None = None

    @property
    def missing(self) -> bool:
        return self.status != "indexed"

    @property
    def action(self) -> str:
        """What fixes it (never a retrain)."""
        return {
            "indexed": "",
            "never_landed": f"land {self.doc_id}",
            "deleted": f"restore {self.doc_id} in the landing zone (deleted {self.deleted_at}) or drop the case",
            "quarantined": f"fix {self.doc_id} ({'; '.join(self.quarantine_reasons)}) and land it again",
            "not_yet_indexed": "run `hybridops refresh` (it landed after the last refresh)",
        }[self.status]


def _deleted_key(doc_id: str) -> str:
    return f"{DELETED_PREFIX}{slot(doc_id)}.json"


def record_deletions(store: ObjectStore, doc_ids: Iterable[str]) -> None:
    """Note that a refresh removed these documents, written before their chunks go (a crash in between
    leaves a note about a document still indexed, which is only read once it is gone)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for doc_id in doc_ids:
        store.put(_deleted_key(doc_id), json.dumps({"doc_id": doc_id, "deleted_at": now}).encode())


def deleted_at(store: ObjectStore, doc_id: str) -> str | None:
    """When a refresh last removed this document (None: never, or the note is unreadable)."""
    try:
        note = json.loads(store.get(_deleted_key(doc_id)))
    except (KeyError, ValueError):
        return None
    return note.get("deleted_at") if isinstance(note, dict) and note.get("doc_id") == doc_id else None


def indexed_versions(settings: Settings, doc_ids: Iterable[str], client=None) -> dict[str, set[str]]:
    """The source versions the live index holds per document (absent: not indexed at all)."""
    if client is None:
        with weaviate_session(settings) as own:
            return indexed_versions(settings, doc_ids, own)
    name = live_name(client, settings)
    if name is None:
        return {}
    versions: dict[str, set[str]] = {}
    for _uuid, props in objects_of_docs(client.collections.use(name), doc_ids):
        versions.setdefault(props.get("doc_id") or "", set()).add(props.get("source_version") or "")
    return versions


def classify_document(
    doc_id: str, landed_version: str | None, indexed: set[str] | None, quarantined: tuple[str, list[str], str] | None,
    deleted: str | None,
) -> DocumentStatus:
    """The standing of one document from plain facts: the landing zone's version (None: not landed), the
    index's versions (None: not indexed), the quarantine entry of its current version (version, reasons,
    key) and the last deletion note."""
    if landed_version is None:
        if indexed:
            return DocumentStatus(doc_id=doc_id, status="indexed", detail="left the landing zone; the next "
                                  "refresh removes it from the index")
        if deleted:
            return DocumentStatus(doc_id=doc_id, status="deleted", deleted_at=deleted,
                                  detail=f"removed from the landing zone and the index at {deleted}")
        return DocumentStatus(doc_id=doc_id, status="never_landed", detail="not in the landing zone")
    if indexed and landed_version in indexed:
        return DocumentStatus(doc_id=doc_id, status="indexed")
    stale = bool(indexed)
    older = " (an older version is still searchable)" if stale else ""
    if quarantined is not None and quarantined[0] == landed_version:
        return DocumentStatus(doc_id=doc_id, status="quarantined", stale_version_indexed=stale,
                              quarantine_reasons=list(quarantined[1]), quarantine_key=quarantined[2],
                              detail=f"its landed version is quarantined: {'; '.join(quarantined[1])}{older}")
    return DocumentStatus(doc_id=doc_id, status="not_yet_indexed", stale_version_indexed=stale,
                          detail=f"landed after the last refresh{older}")


def document_status(settings: Settings, doc_ids: Iterable[str], client=None) -> dict[str, DocumentStatus]:
    """The standing of each document: one index query for all of them, then one landing look-up and at most
    two store reads per document."""
    wanted = list(dict.fromkeys(doc_ids))
    if not wanted:
        return {}
    indexed = indexed_versions(settings, wanted, client)
    landing, store = landing_zone(settings), artifact_store(settings)
    found = {}
    for doc_id in wanted:
        info = landing.info(doc_id)
        entry = held_entry(store, "documents", doc_id) if info is not None else None
        held = (entry.source_version, entry.reasons, entry.reason_key) if entry else None
        gone = deleted_at(store, doc_id) if info is None and not indexed.get(doc_id) else None
        found[doc_id] = classify_document(doc_id, info.version if info else None, indexed.get(doc_id), held, gone)
    return found
