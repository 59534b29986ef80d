"""Putting documents into the landing zone and listing the ones the refresh owns (not `_training/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybridops.tasks.core.object_store import ObjectInfo, ObjectStore

TRAINING_PREFIX = "_training/"
"""The landing zone's training area (JSONL examples for the behaviour loop), never indexed."""


@dataclass(frozen=True)
class LandedFile:
    source: str
    doc_id: str
    size: int


def is_document_key(key: str) -> bool:
    return not key.startswith(TRAINING_PREFIX)


def landed_documents(store: ObjectStore) -> list[ObjectInfo]:
    """Every document object in the landing zone, by id."""
    return sorted((o for o in store.list() if is_document_key(o.key)), key=lambda o: o.key)


def landed_doc_ids(store: ObjectStore) -> set[str]:
    return {o.key for o in landed_documents(store)}


def plan_landing(paths: list[Path], prefix: str = "") -> list[tuple[Path, str]]:
    """(file, doc id) pairs: a file lands under its name, a folder's files under their path relative to it."""
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    pairs: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                pairs.append((file, prefix + file.relative_to(path).as_posix()))
        elif path.is_file():
            pairs.append((path, prefix + path.name))
        else:
            raise FileNotFoundError(f"{path} does not exist")
    ids = [doc_id for _, doc_id in pairs]
    duplicates = sorted({d for d in ids if ids.count(d) > 1})
    if duplicates:
        raise ValueError(f"several inputs would land as the same document id: {', '.join(duplicates)}")
    return pairs


def land(store: ObjectStore, paths: list[Path], prefix: str = "") -> list[LandedFile]:
    """Copy files/folders into the landing zone keeping relative paths (atomic puts; existing ids are replaced)."""
    landed = []
    for file, doc_id in plan_landing(paths, prefix):
        data = file.read_bytes()
        store.put(doc_id, data)
        landed.append(LandedFile(source=str(file), doc_id=doc_id, size=len(data)))
    return landed


def remove(store: ObjectStore, doc_id: str) -> bool:
    """Delete one document from the landing zone; False if it was not there."""
    if not store.exists(doc_id):
        return False
    store.delete(doc_id)
    return True
