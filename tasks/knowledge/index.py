"""Weaviate index generations behind one alias, and the chunk-object reads/writes the refresh builds on.

Each generation is a collection `<prefix>_Docs_<n>`; its description holds a small JSON record (embedding
model, state, eval figures, tuned retrieval profile) so the generation itself says what it is, to every
process of the namespace. The alias `<prefix>_Docs` names the live one. What is indexed is read back from
the objects' own properties: there is no separate ledger.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from weaviate.classes.config import Configure, DataType, Property, ReplicationDeletionStrategy, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter

from hybridops.tasks.core.errors import HybridopsError
from hybridops.tasks.core.settings import Settings

State = Literal["building", "ready", "rejected"]

CHUNK_NAMESPACE = uuid.UUID("8f0d3f8e-5b8a-4f55-9a55-6c1f2f0b9d17")
DELETE_BATCH = 2_000  # ids per delete_many filter
ID_BATCH = 500  # ids per fetch-by-id query
DOC_BATCH = 100  # document ids per doc_id filter
RECORD_DOC_GROUP = 20  # document ids per records_of_docs query (2_000 objects a page: 100 chunks a document)
ITERATOR_PAGE = 2_000  # objects per cursor page
WRITE_BATCH = 256


class IndexOperationError(HybridopsError):
    """An index operation failed (rejected objects, failed deletes, missing alias target...)."""


class Generation(BaseModel):
    """One index generation: its collection, embedding model and lifecycle state."""

    name: str
    number: int
    embedding_model: str
    dim: int
    state: State
    created_at: str
    chunking: str = ""
    embedding_setting: dict[str, Any] = Field(default_factory=dict)
    live: bool = False
    objects: int | None = None
    eval: dict[str, Any] = Field(default_factory=dict)
    retrieval: dict[str, Any] = Field(
        default_factory=dict, description="Tuned retrieval profile {mode, alpha, k} (`hybridops index tune`); "
        "empty: the settings apply. Read by every search of this generation (tasks/knowledge/search.py).")


class ChunkRecord(BaseModel):
    """What one indexed chunk object says about itself (no vector)."""

    uuid: str
    doc_id: str
    chunk_index: int
    chunk_count: int
    text_hash: str
    meta_hash: str
    doc_text_hash: str
    source_hash: str
    source_version: str
    chunking: str
    embedding_model: str
    text: str | None = None


class ChunkObject(BaseModel):
    """A chunk ready to be written: deterministic id, properties and its vector."""

    model_config = {"arbitrary_types_allowed": True}

    uuid: str
    properties: dict[str, Any]
    vector: Any  # numpy float32 array


RECORD_FIELDS = [f for f in ChunkRecord.model_fields if f not in {"uuid", "text"}]


# Names ------------------------------------------------------------------------------------------


def alias_name(settings: Settings) -> str:
    return f"{settings.collection_prefix}_Docs"


def generation_name(settings: Settings, number: int) -> str:
    return f"{alias_name(settings)}_{number}"


def meta_value(value: Any) -> str:
    """How a metadata value is spelled in the filterable `meta_kv` property (and in `--where`)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


LIST_KEYS = frozenset({"tags", "keywords", "labels"})
"""Metadata kept as one comma-joined string whose elements are filterable one by one (`--where tags=x`)."""


def meta_pairs(metadata: dict[str, Any]) -> list[str]:
    """`key=value` strings for filtering; lists and comma-joined tags also give one pair per element."""
    pairs: list[str] = []
    for key, value in sorted(metadata.items()):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if key in LIST_KEYS and isinstance(value, str):
            items += [part.strip() for part in value.split(",") if part.strip()]
        for item in items:
            pair = f"{key}={meta_value(item)}"
            if pair not in pairs:
                pairs.append(pair)
    return pairs


def chunk_uuid(doc_id: str, index: int) -> str:
    """Deterministic object id of a document's n-th chunk, so re-runs upsert instead of duplicating."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{doc_id}\x00{index}"))


# Generations ------------------------------------------------------------------------------------


def _property_config():
    def plain(name: str, dtype=DataType.TEXT, filterable: bool = False) -> Property:
        return Property(
            name=name, data_type=dtype, index_filterable=filterable, index_searchable=False,
            index_range_filters=False, skip_vectorization=True,
            tokenization=Tokenization.FIELD if dtype in (DataType.TEXT, DataType.TEXT_ARRAY) else None,
        )

    return [
        plain("doc_id", filterable=True),
        plain("chunk_index", DataType.INT),
        plain("chunk_count", DataType.INT),
        Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD,
                 index_searchable=True, index_filterable=False, skip_vectorization=True),
        plain("title", filterable=True),
        plain("metadata"),
        plain("meta_kv", DataType.TEXT_ARRAY, filterable=True),
        plain("text_hash"),
        plain("meta_hash"),
        plain("doc_text_hash"),
        plain("source_hash"),
        plain("source_version"),
        plain("chunking"),
        plain("embedding_model"),
    ]


def _describe(gen: Generation) -> str:
    record = gen.model_dump(include={"number", "embedding_model", "dim", "state", "created_at", "chunking",
                                     "embedding_setting", "eval", "retrieval"})
    return json.dumps({"hybridops_generation": record}, sort_keys=True)


def _parse(name: str, number: int, description: str | None) -> Generation | None:
    try:
        record = json.loads(description or "")["hybridops_generation"]
        return Generation(name=name, **{**record, "number": number})
    except (ValueError, KeyError, TypeError):
        return None


def list_generations(client, settings: Settings, count: bool = False) -> list[Generation]:
    """All generations of this namespace, oldest first, marking the live one."""
    pattern = re.compile(rf"^{re.escape(alias_name(settings))}_(\d+)$")
    live = live_name(client, settings)
    found = []
    for name, config in client.collections.list_all(simple=True).items():
        match = pattern.match(name)
        if not match:
            continue
        gen = _parse(name, int(match.group(1)), config.description)
        if gen is None:  # a collection with our name but no record: half-created; treat as building
            gen = Generation(name=name, number=int(match.group(1)), embedding_model="", dim=0,
                             state="building", created_at="")
        gen.live = name == live
        if count:
            gen.objects = count_objects(client.collections.use(name))
        found.append(gen)
    return sorted(found, key=lambda g: g.number)


def get_generation(client, settings: Settings, name: str) -> Generation:
    """The record of one generation collection (by its name)."""
    match = re.match(rf"^{re.escape(alias_name(settings))}_(\d+)$", name)
    gen = _parse(name, int(match.group(1)), client.collections.use(name).config.get(simple=True).description) if match else None
    if gen is None:
        raise IndexOperationError(f"{name} is not an index generation of namespace {settings.namespace}")
    return gen


def live_name(client, settings: Settings) -> str | None:
    alias = client.alias.get(alias_name=alias_name(settings))
    return alias.collection if alias else None


def create_generation(
    client, settings: Settings, embedding_model: str, dim: int, chunking: str, embedding_setting: dict[str, Any],
    retrieval: dict[str, Any] | None = None,
) -> Generation:
    """A new, empty collection numbered after every existing generation, in state 'building'; `retrieval`
    is the tuned profile it starts with (carried from the live generation when the embedding model is the same)."""
    existing = list_generations(client, settings)
    number = max((g.number for g in existing), default=0) + 1
    gen = Generation(
        name=generation_name(settings, number), number=number, embedding_model=embedding_model, dim=dim,
        state="building", created_at=datetime.now(UTC).isoformat(timespec="seconds"), chunking=chunking,
        embedding_setting=embedding_setting, retrieval=dict(retrieval or {}),
    )
    client.collections.create(
        name=gen.name,
        description=_describe(gen),
        properties=_property_config(),
        vector_config=Configure.Vectors.self_provided(),
        inverted_index_config=Configure.inverted_index(bm25_b=0.75, bm25_k1=1.2),
        replication_config=_replication_config(settings),
    )
    return gen


def _replication_config(settings: Settings):
    """None for one replica (the server's default). Several: async replication repairs a replica that was down
    (Weaviate 1.35 still needs it asked for; the client flags the field as deprecated for servers >= 1.38, where
    it is always on), and the newest write wins a conflict between a deletion and an update."""
    if settings.weaviate_replicas <= 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return Configure.replication(factor=settings.weaviate_replicas, async_enabled=True,
                                     deletion_strategy=ReplicationDeletionStrategy.TIME_BASED_RESOLUTION)


def save_generation(client, gen: Generation) -> None:
    """Persist a changed state/eval/retrieval record into the collection's description."""
    client.collections.use(gen.name).config.update(description=_describe(gen))


def point_alias(client, settings: Settings, target: str) -> None:
    """Make the alias name `target` (create or update); raise if Weaviate did not take it."""
    name = alias_name(settings)
    if client.alias.get(alias_name=name) is None:
        client.alias.create(alias_name=name, target_collection=target)
    elif not client.alias.update(alias_name=name, new_target_collection=target):
        raise IndexOperationError(f"alias {name} could not be pointed at {target}")
    if live_name(client, settings) != target:
        raise IndexOperationError(f"alias {name} does not point at {target} after the update")


def drop_generation(client, settings: Settings, gen: Generation) -> None:
    if gen.name == live_name(client, settings):
        raise IndexOperationError(f"refusing to delete the live generation {gen.name}")
    client.collections.delete(gen.name)


def drop_all_generations(client, settings: Settings) -> list[str]:
    """Remove this namespace's alias and every index generation (a reset: demo, tests, benchmarks)."""
    if client.alias.get(alias_name=alias_name(settings)):
        client.alias.delete(alias_name=alias_name(settings))
    dropped = [gen.name for gen in list_generations(client, settings)]
    for name in dropped:
        client.collections.delete(name)
    return dropped


def prune_generations(client, settings: Settings, keep: set[str]) -> list[str]:
    """Delete every generation except the live one and `keep` (the one it replaced, for rollback)."""
    doomed = [g for g in list_generations(client, settings) if not g.live and g.name not in keep]
    for gen in doomed:
        drop_generation(client, settings, gen)
    return [g.name for g in doomed]


def rollback_target(client, settings: Settings) -> tuple[Generation, Generation]:
    """(live, previous ready generation) for `index rollback`; raise if there is nothing to go back to."""
    gens = list_generations(client, settings)
    live = next((g for g in gens if g.live), None)
    if live is None:
        raise IndexOperationError("there is no live index generation")
    previous = [g for g in gens if g.number < live.number and g.state == "ready"]
    if not previous:
        raise IndexOperationError(f"no earlier ready generation to roll back to from {live.name}")
    return live, previous[-1]


# Chunk objects ----------------------------------------------------------------------------------


def count_objects(collection) -> int:
    return int(collection.aggregate.over_all(total_count=True).total_count or 0)


def _record(uuid_: str, p: dict[str, Any], with_text: bool = False) -> ChunkRecord:
    """A chunk object's self-description from its properties (a missing one reads as empty)."""
    return ChunkRecord(
        uuid=uuid_,
        text=p.get("text") if with_text else None,
        **{f: (p.get(f) if p.get(f) is not None else (0 if f in {"chunk_index", "chunk_count"} else ""))
           for f in RECORD_FIELDS},
    )


def iter_records(collection, with_text: bool = False) -> Iterator[ChunkRecord]:
    """Every chunk object's self-description, by cursor (no vectors)."""
    props = RECORD_FIELDS + (["text"] if with_text else [])
    for obj in collection.iterator(return_properties=props, cache_size=ITERATOR_PAGE):
        yield _record(str(obj.uuid), obj.properties, with_text)


def _by_document(records: Iterable[ChunkRecord]) -> dict[str, list[ChunkRecord]]:
    """Records grouped by document id, each document's in chunk order."""
    state: dict[str, list[ChunkRecord]] = {}
    for record in records:
        state.setdefault(record.doc_id, []).append(record)
    for found in state.values():
        found.sort(key=lambda r: (r.chunk_index, r.uuid))
    return state


def read_index_state(collection, with_text: bool = False) -> dict[str, list[ChunkRecord]]:
    """Indexed chunks grouped by document id: the truth the refresh diffs against."""
    return _by_document(iter_records(collection, with_text=with_text))


def fetch_vectors(collection, uuids: Sequence[str]) -> dict[str, np.ndarray]:
    """Stored vectors of the given objects (used to reuse vectors when the local cache lost them)."""
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(uuids), ID_BATCH):
        part = list(uuids[start : start + ID_BATCH])
        result = collection.query.fetch_objects(
            filters=Filter.by_id().contains_any(part), include_vector=True, limit=len(part),
            return_properties=["text_hash"],
        )
        for obj in result.objects:
            vector = obj.vector.get("default") if isinstance(obj.vector, dict) else obj.vector
            if vector is not None:
                found[str(obj.uuid)] = np.asarray(vector, dtype=np.float32)
    return found


def stored_texts(collection, uuids: Sequence[str]) -> dict[str, str]:
    """The text property actually stored in each of these objects (a deep verify catches edited objects).

    Asked for by id, ID_BATCH ids per query, so every page is complete by construction."""
    found: dict[str, str] = {}
    for start in range(0, len(uuids), ID_BATCH):
        part = list(uuids[start : start + ID_BATCH])
        result = collection.query.fetch_objects(filters=Filter.by_id().contains_any(part), limit=len(part),
                                                return_properties=["text"])
        found.update({str(o.uuid): o.properties.get("text") or "" for o in result.objects})
    return found


def objects_of_docs(collection, doc_ids: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    """(uuid, properties) of every chunk object of these documents (no vectors).

    One filtered query per group of documents; a group whose answer fills a whole page is read again with
    the collection's cursor instead (a cursor cannot take a filter, and offset paging of a filtered query
    stops at Weaviate's QUERY_MAXIMUM_RESULTS), so nothing is silently cut off."""
    wanted = sorted(set(doc_ids))
    found: list[tuple[str, dict[str, Any]]] = []
    overflow: set[str] = set()
    for start in range(0, len(wanted), DOC_BATCH):
        group = wanted[start : start + DOC_BATCH]
        result = collection.query.fetch_objects(filters=Filter.by_property("doc_id").contains_any(group),
                                                limit=ITERATOR_PAGE)
        if len(result.objects) >= ITERATOR_PAGE:
            overflow.update(group)
        else:
            found += [(str(o.uuid), dict(o.properties)) for o in result.objects]
    if overflow:
        found += [(str(o.uuid), dict(o.properties)) for o in collection.iterator(cache_size=ITERATOR_PAGE)
                  if o.properties.get("doc_id") in overflow]
    return found


def records_of_docs(collection, doc_ids: Iterable[str]) -> dict[str, list[ChunkRecord]]:
    """read_index_state for just these documents (a targeted refresh: the cost follows the change, not the
    corpus). Asked RECORD_DOC_GROUP documents at a time, so a group of long documents still fits one page
    of objects_of_docs (a full page would fall back to a cursor over the whole collection)."""
    wanted = sorted(set(doc_ids))
    found: list[ChunkRecord] = []
    for start in range(0, len(wanted), RECORD_DOC_GROUP):
        group = wanted[start : start + RECORD_DOC_GROUP]
        found += [_record(uuid_, p) for uuid_, p in objects_of_docs(collection, group)]
    return _by_document(found)


def upsert_chunks(collection, objects: Iterable[ChunkObject], batch_size: int = WRITE_BATCH) -> int:
    """Insert-or-replace objects by id, `batch_size` per request; any rejected object fails the whole call.

    One synchronous batch request per slice (`insert_many`), not the client's background batcher: closing
    that waits about a second even for one object (measured: 1.04 s to write 1 chunk, most of a one-document
    refresh), and the refresh already overlaps its writes with embedding."""
    written = 0
    for part in batched(objects, batch_size):
        result = collection.data.insert_many(
            [DataObject(properties=obj.properties, uuid=obj.uuid, vector=obj.vector) for obj in part])
        if result.errors:
            sample = "; ".join(f"{part[i].uuid}: {e.message}" for i, e in list(result.errors.items())[:3])
            raise IndexOperationError(f"{len(result.errors)} of {len(part)} objects were rejected by Weaviate "
                                      f"({sample}); {written} written before")
        written += len(part)
    return written


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last may be shorter); itertools.batched is Python 3.12+."""
    it = iter(items)
    while part := list(islice(it, size)):
        yield part


def update_properties(collection, changes: dict[str, dict[str, Any]]) -> int:
    """Change some properties of many objects in bulk (read back with vectors, re-upsert in batches)."""
    written = 0
    uuids = list(changes)
    for start in range(0, len(uuids), ID_BATCH):
        part = uuids[start : start + ID_BATCH]
        result = collection.query.fetch_objects(filters=Filter.by_id().contains_any(part), limit=len(part),
                                                include_vector=True)
        objects = [
            ChunkObject(uuid=str(o.uuid), properties={**o.properties, **changes[str(o.uuid)]},
                        vector=o.vector.get("default") if isinstance(o.vector, dict) else o.vector)
            for o in result.objects
        ]
        written += upsert_chunks(collection, objects)
    return written


def _delete_where(collection, where) -> int:
    """delete_many deletes a bounded number per call: loop until nothing matches."""
    deleted = 0
    while True:
        result = collection.data.delete_many(where=where)
        if result.failed:
            raise IndexOperationError(f"Weaviate failed to delete {result.failed} objects")
        if result.matches and not result.successful:
            raise IndexOperationError(f"Weaviate matched {result.matches} objects to delete but deleted none")
        deleted += result.successful
        if result.matches == 0:
            return deleted


def delete_objects(collection, uuids: Sequence[str]) -> int:
    deleted = 0
    uuids = list(uuids)
    for start in range(0, len(uuids), DELETE_BATCH):
        deleted += _delete_where(collection, Filter.by_id().contains_any(uuids[start : start + DELETE_BATCH]))
    return deleted


def delete_docs(collection, doc_ids: Sequence[str]) -> int:
    """Remove every chunk of these documents."""
    deleted = 0
    doc_ids = list(doc_ids)
    for start in range(0, len(doc_ids), 200):
        where = Filter.by_property("doc_id").contains_any(doc_ids[start : start + 200])
        deleted += _delete_where(collection, where)
    return deleted
