"""Embedding cache keyed by (model id, chunk text hash), so unchanged text is never embedded twice.

The cache is disposable: a file SQLite reports as corrupt (not a database, malformed) is moved aside as
`<name>.corrupt-<timestamp>` with a warning and an empty cache takes its place; vectors are recomputed (or
read back from the index) on the next refresh.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from hybridops.tasks.core.settings import Settings

_LOOKUP_BATCH = 500  # stays well below SQLite's host-parameter limit
log = logging.getLogger(__name__)


def is_corruption(exc: BaseException) -> bool:
    """Whether a SQLite error means the file itself is broken (not "locked", "busy" or "disk full")."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def text_hash(text: str) -> str:
    """The cache / index key of a chunk text (sha256 hex of its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path(settings: Settings) -> Path:
    return settings.home / "cache" / "embeddings.sqlite3"


class EmbeddingCache:
    """A local SQLite table (WAL) of float32 vectors; safe for several processes on one machine."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.moved_aside: list[Path] = []  # corrupt files this instance replaced
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self._move_aside(exc)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings ("
                " model_id TEXT NOT NULL, text_hash TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,"
                " PRIMARY KEY (model_id, text_hash)) WITHOUT ROWID"
            )
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: BaseException) -> Path:
        """Rename the corrupt file (and its -wal/-shm) to <name>.corrupt-<timestamp>[-wal|-shm]."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:
                pass
        self.moved_aside.append(aside)
        log.warning("embedding cache %s is corrupt (%s); moved it aside to %s and starting an empty cache",
                    self.path, exc, aside.name)
        return aside

    def _repair(self, exc: BaseException) -> None:
        """Replace a cache found corrupt while in use with an empty one."""
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._move_aside(exc)
        self._db = self._connect()

    def get_many(self, model_id: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the given text hashes (missing ones are simply absent)."""
        try:
            return self._get_many(model_id, hashes)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self._repair(exc)
            return {}  # the fresh cache is empty: everything is recomputed or read back

    def _get_many(self, model_id: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(wanted), _LOOKUP_BATCH):
            part = wanted[start : start + _LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT text_hash, dim, vector FROM embeddings WHERE model_id = ? AND text_hash IN ({marks})",
                [model_id, *part],
            )
            for key, dim, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape[0] == dim:  # a torn row is ignored and recomputed
                    found[key] = vector
        return found

    def put_many(self, model_id: str, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors in one transaction (idempotent); a corrupt cache is replaced and written once more."""
        try:
            self._put_many(model_id, vectors)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self._repair(exc)
            self._put_many(model_id, vectors)

    def _put_many(self, model_id: str, vectors: dict[str, np.ndarray]) -> None:
        rows = [
            (model_id, key, int(vec.shape[0]), np.asarray(vec, dtype=np.float32).tobytes())
            for key, vec in vectors.items()
        ]
        if not rows:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings (model_id, text_hash, dim, vector) VALUES (?, ?, ?, ?)", rows
            )
        except BaseException:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self._db.execute("COMMIT")

    def count(self, model_id: str | None = None) -> int:
        try:
            return self._count(model_id)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self._repair(exc)
            return 0

    def _count(self, model_id: str | None) -> int:
        if model_id is None:
            return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM embeddings WHERE model_id = ?", [model_id]).fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(settings: Settings) -> EmbeddingCache:
    return EmbeddingCache(cache_path(settings))


@dataclass(frozen=True)
class EmbedStats:
    """How many distinct texts were computed by the model and how many came from elsewhere."""

    embedded: int
    reused: int


def embed_cached(
    embedder,
    cache: EmbeddingCache,
    texts: Sequence[str],
    recover: Callable[[list[str]], dict[str, np.ndarray]] | None = None,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], EmbedStats]:
    """Vectors by text hash: from the cache, else `recover` (e.g. read back from the index), else the model."""
    by_hash = {text_hash(t): t for t in texts}
    vectors = cache.get_many(embedder.model_id, by_hash)
    recovered = recover([h for h in by_hash if h not in vectors]) if recover else {}
    recovered = {h: v for h, v in recovered.items() if h in by_hash and h not in vectors}
    missing = [h for h in by_hash if h not in vectors and h not in recovered]
    fresh: dict[str, np.ndarray] = {}
    if missing:
        computed = embedder.embed([by_hash[h] for h in missing], progress=progress)
        fresh = {h: np.asarray(computed[i], dtype=np.float32) for i, h in enumerate(missing)}
    cache.put_many(embedder.model_id, {**recovered, **fresh})  # index read-backs re-warm a lost cache
    vectors.update(recovered)
    vectors.update(fresh)
    return vectors, EmbedStats(embedded=len(missing), reused=len(by_hash) - len(missing))
