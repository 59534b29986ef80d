"""Hybrid / vector / BM25 retrieval over the live index generation (resolved through the alias).

How a question is retrieved (mode, hybrid alpha, chunks per question) is resolved field by field:
an explicit argument, else the profile tuned on the generation being searched (`hybridops index tune`,
stored in its description so every process of the namespace sees it), else the settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from weaviate.classes.query import Filter, MetadataQuery

from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.knowledge.index import (
    Generation,
    IndexOperationError,
    alias_name,
    get_generation,
    live_name,
    meta_value,
)

Mode = Literal["hybrid", "vector", "bm25"]
MODES: tuple[str, ...] = ("hybrid", "vector", "bm25")
_RETURN = ["doc_id", "chunk_index", "title", "text", "metadata"]
_DIRECT_FILTERS = {"doc_id", "title"}
CANDIDATES = 50
"""Every query fetches at least this many candidates and cuts to k: Weaviate 1.35's BM25 top-k pruning was
seen to drop the best-scoring chunk at small limits (it came back with limit >= 20), and one candidate list
for every k <= CANDIDATES makes a query's top k the first k of the same query at any larger k (the
retrieval sweep scores k = 3, 5, 8 from one query)."""


class RetrievalProfile(BaseModel):
    """How questions are retrieved: mode, hybrid alpha (None unless hybrid) and chunks per question."""

    model_config = ConfigDict(frozen=True)

    mode: Mode
    alpha: float | None = None
    k: int

    def describe(self) -> str:
        alpha = f" alpha={self.alpha:g}" if self.alpha is not None else ""
        return f"{self.mode}{alpha} k={self.k}"


def check_profile(mode: str, alpha: float | None, k: int) -> RetrievalProfile:
    """Validate one (mode, alpha, k); a bad value is a BadInputError naming it. Alpha is dropped unless hybrid."""
    if mode not in MODES:
        raise BadInputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise BadInputError(f"alpha must be a number in [0, 1], not {alpha!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadInputError(f"k must be a whole number >= 1, not {k!r}")
    return RetrievalProfile(mode=mode, alpha=float(alpha) if mode == "hybrid" and alpha is not None else None, k=k)


def resolve_profile(
    settings: Settings, stored: dict[str, Any] | None = None, k: int | None = None, mode: str | None = None,
    alpha: float | None = None,
) -> RetrievalProfile:
    """Explicit argument > the generation's tuned profile (`stored`) > settings, field by field."""
    stored = stored or {}

    def pick(explicit: Any, key: str, default: Any) -> Any:
        if explicit is not None:
            return explicit
        return stored[key] if stored.get(key) is not None else default

    return check_profile(pick(mode, "mode", settings.search_mode), pick(alpha, "alpha", settings.hybrid_alpha),
                         pick(k, "k", settings.search_k))


class NoIndexError(IndexOperationError):
    """Nothing has been indexed yet (the alias does not exist)."""


class SearchHit(BaseModel):
    """One retrieved chunk, best first."""

    doc_id: str
    chunk_id: str
    score: float
    title: str
    text: str
    chunk_index: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)


def where_filter(where: dict[str, Any] | None):
    """{key: value} -> a Weaviate filter: doc_id/title match exactly, other keys match document metadata."""
    if not where:
        return None
    parts = []
    for key, value in where.items():
        if key in _DIRECT_FILTERS:
            parts.append(Filter.by_property(key).equal(str(value)))
        else:
            parts.append(Filter.by_property("meta_kv").contains_any([f"{key}={meta_value(value)}"]))
    return parts[0] if len(parts) == 1 else Filter.all_of(parts)


def embedder_for(settings: Settings, gen: Generation, preferred=None):
    """The embedder the generation was built with: queries must use the same model as the index."""
    candidate = preferred or load_embedder(settings)
    if candidate.model_id == gen.embedding_model:
        return candidate
    if gen.embedding_setting:
        other = load_embedder(settings.model_copy(update=gen.embedding_setting))
        if other.model_id == gen.embedding_model:
            return other
    raise IndexOperationError(
        f"{gen.name} was built with {gen.embedding_model!r} but this process embeds with "
        f"{candidate.model_id!r}; run `hybridops refresh` to rebuild"
    )


class Searcher:
    """Queries one generation (default: the alias target at construction) with that generation's embedder."""

    def __init__(self, settings: Settings, client, collection: str | None = None, embedder=None):
        self.settings = settings
        self.client = client
        name = collection or live_name(client, settings)
        if name is None:
            raise NoIndexError(f"no index yet: alias {alias_name(settings)} does not exist (run `hybridops refresh`)")
        self.generation = get_generation(client, settings, name)
        self.collection = client.collections.use(name)
        self._preferred = embedder
        self._embedder = None

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = embedder_for(self.settings, self.generation, self._preferred)
        return self._embedder

    def profile(self, k: int | None = None, mode: str | None = None, alpha: float | None = None) -> RetrievalProfile:
        """The effective retrieval of this generation, given what the caller fixed explicitly."""
        return resolve_profile(self.settings, self.generation.retrieval, k=k, mode=mode, alpha=alpha)

    def embed_query(self, query: str) -> list[float]:
        """The query vector, embedded alone (as every search does: batching pads and can move the floats)."""
        return self.embedder.embed([query])[0].tolist()

    def search(
        self, query: str, k: int | None = None, mode: str | None = None, alpha: float | None = None,
        where: dict[str, Any] | None = None, *, vector: Sequence[float] | None = None,
    ) -> list[SearchHit]:
        """Top-k chunks, best first; None for k/mode/alpha means the effective profile. `vector` is the
        query's embedding when the caller already has it (the sweep embeds each question once)."""
        profile = self.profile(k=k, mode=mode, alpha=alpha)
        if not query.strip():
            raise BadInputError("query is empty")
        limit = profile.k
        common = dict(limit=max(limit, CANDIDATES), filters=where_filter(where), return_properties=_RETURN)
        if profile.mode == "bm25":
            result = self.collection.query.bm25(
                query=query, query_properties=["text"], return_metadata=MetadataQuery(score=True), **common
            )
            return [_hit(o, o.metadata.score) for o in result.objects[:limit]]
        vector = self.embed_query(query) if vector is None else list(vector)
        if profile.mode == "vector":
            result = self.collection.query.near_vector(
                near_vector=vector, return_metadata=MetadataQuery(distance=True), **common
            )
            return [_hit(o, 1.0 - (o.metadata.distance or 0.0)) for o in result.objects[:limit]]
        result = self.collection.query.hybrid(
            query=query, vector=vector, alpha=profile.alpha, query_properties=["text"],
            return_metadata=MetadataQuery(score=True), **common,
        )
        return [_hit(o, o.metadata.score) for o in result.objects[:limit]]

    def chunks_for_docs(self, doc_ids: Sequence[str]) -> list[SearchHit]:
        """Every chunk of the given documents, in document and chunk order."""
        hits: list[SearchHit] = []
        ids = list(dict.fromkeys(doc_ids))
        for start in range(0, len(ids), 100):
            part = ids[start : start + 100]
            offset = 0
            while True:
                result = self.collection.query.fetch_objects(
                    filters=Filter.by_property("doc_id").contains_any(part), limit=1000, offset=offset,
                    return_properties=_RETURN,
                )
                hits.extend(_hit(o, 0.0) for o in result.objects)
                if len(result.objects) < 1000:
                    break
                offset += len(result.objects)
        order = {d: i for i, d in enumerate(ids)}
        return sorted(hits, key=lambda h: (order[h.doc_id], h.chunk_index))


def _hit(obj, score: float | None) -> SearchHit:
    p = obj.properties
    try:
        metadata = json.loads(p.get("metadata") or "{}")
    except ValueError:
        metadata = {}
    return SearchHit(
        doc_id=p.get("doc_id") or "", chunk_id=str(obj.uuid), score=float(score or 0.0),
        title=p.get("title") or "", text=p.get("text") or "", chunk_index=int(p.get("chunk_index") or 0),
        metadata=metadata,
    )


def search(
    settings: Settings, query: str, k: int | None = None, mode: str | None = None, alpha: float | None = None,
    where: dict[str, Any] | None = None, *, client=None,
) -> list[SearchHit]:
    """Top-k chunks for a query from the live generation, best first (None: the live retrieval profile)."""
    if client is not None:
        return Searcher(settings, client).search(query, k=k, mode=mode, alpha=alpha, where=where)
    with weaviate_session(settings) as own:
        return Searcher(settings, own).search(query, k=k, mode=mode, alpha=alpha, where=where)


def chunks_for_docs(settings: Settings, doc_ids: Sequence[str], *, client=None) -> list[SearchHit]:
    """All indexed chunks of these documents from the live generation (e.g. gold context for evals)."""
    if client is not None:
        return Searcher(settings, client).chunks_for_docs(doc_ids)
    with weaviate_session(settings) as own:
        return Searcher(settings, own).chunks_for_docs(doc_ids)
