"""The landing change feed: which landing keys changed, written by whoever noticed, consumed by a refresh.

A notifier (filesystem notifications, MinIO bucket notifications, the fallback poll) records the keys it saw
change as one small object in the artifact store BEFORE it emits `hybridops.landing.changed`; a targeted
refresh plans the union of every pending entry's keys and deletes the entries it applied only after they
are applied. So the event only says "look now": a lost event, a crash mid-refresh or many events while a
refresh runs all end the same way, with the next refresh applying everything pending once (coalescing).
The cost is per pending change, never per corpus: listing `feed/landing/` sees pending entries only.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone

from pydantic import BaseModel

from hybridops.tasks.core.object_store import ObjectStore

log = logging.getLogger(__name__)

FEED_PREFIX = "feed/landing/"


class FeedEntry(BaseModel):
    """One notification's worth of changed keys."""

    id: str
    changed_keys: list[str]
    source: str
    at: str


class PendingChanges(BaseModel):
    """Every entry waiting to be applied, and the union of their keys (sorted)."""

    entries: list[str] = []
    changed_keys: list[str] = []
    unreadable: list[str] = []  # entries that do not parse: only a full reconcile covers (and consumes) them

    def __bool__(self) -> bool:
        return bool(self.entries)


def _entry_id(now: datetime) -> str:
    """Sorts by time; unique across processes."""
    return f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def record_changes(store: ObjectStore, keys: Iterable[str], source: str) -> FeedEntry | None:
    """Durably note that these landing keys changed (None when there are none)."""
    wanted = sorted(set(keys))
    if not wanted:
        return None
    now = datetime.now(timezone.utc)
    entry = FeedEntry(id=_entry_id(now), changed_keys=wanted, source=source, at=now.isoformat(timespec="milliseconds"))
    store.put(f"{FEED_PREFIX}{entry.id}.json", entry.model_dump_json().encode())
    return entry


def pending_changes(store: ObjectStore) -> PendingChanges:
    """All entries not yet applied (an unreadable one is kept aside by name and logged, never guessed at)."""
    entries, keys, unreadable = [], set(), []
    for info in sorted(store.list(FEED_PREFIX), key=lambda i: i.key):
        if not info.key.endswith(".json"):
            continue
        try:
            entry = FeedEntry.model_validate(json.loads(store.get(info.key)))
        except KeyError:  # consumed by another run meanwhile
            continue
        except ValueError as exc:
            log.warning("unreadable change-feed entry %s (%s): left for the full reconcile", info.key, exc)
            unreadable.append(info.key)
            continue
        entries.append(info.key)
        keys.update(entry.changed_keys)
    return PendingChanges(entries=entries, changed_keys=sorted(keys), unreadable=unreadable)


def consume(store: ObjectStore, entries: Iterable[str]) -> int:
    """Delete applied entries (after their keys were applied, never before)."""
    done = 0
    for key in entries:
        store.delete(key)
        done += 1
    return done
