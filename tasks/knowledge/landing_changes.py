"""Noticing landing-zone changes by polling: a snapshot (key -> version) compared with a persisted cursor.

Works the same for a folder and an S3 prefix (both list key, size and a version token). The cursor lives in
the artifact store, so a restarted watcher resumes where the last one stopped and reports what changed
meanwhile; the first poll of a fresh namespace reports everything present as added.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from hybridops.tasks.knowledge.landing import is_document_key, require_landing_root
from hybridops.tasks.core.object_store import ObjectStore, ObjectStoreError
from hybridops.tasks.core.settings import Settings

CURSOR_KEY = "watch/landing-cursor.json"
"""Where the watcher keeps its last snapshot, in the artifact store."""

EVENT_KEY_LIMIT = 200
"""At most this many keys per list in one event payload (the counts are always exact)."""

"""The event a landing change sends; refresh-index is triggered by it."""

Snapshot = dict[str, str]


class LandingChanges(BaseModel):
    """What differs between two snapshots of the landing zone's documents."""

    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.added) + len(self.updated) + len(self.removed)

    def __bool__(self) -> bool:
        return self.count > 0

    def payload(self, limit: int = EVENT_KEY_LIMIT) -> dict:
        """Event payload: exact counts, the first `limit` keys of each kind, and whether lists were cut."""
        return {
            "count": self.count,
            "counts": {"added": len(self.added), "updated": len(self.updated), "removed": len(self.removed)},
            "added": self.added[:limit],
            "updated": self.updated[:limit],
            "removed": self.removed[:limit],
            "truncated": max(len(self.added), len(self.updated), len(self.removed)) > limit,
        }


class Cursor(BaseModel):
    """The watcher's persisted position: the last snapshot it reported."""

    versions: Snapshot
    polled_at: datetime
    landing: str


def snapshot(landing: ObjectStore) -> Snapshot:
    """Document key -> version token of everything in the landing zone (the training area excluded).

    A missing or unlistable root raises (a watcher retries; it never announces everything as removed)."""
    require_landing_root(landing)
    return {info.key: info.version for info in landing.list() if is_document_key(info.key)}


def diff(before: Snapshot, after: Snapshot) -> LandingChanges:
    """Added, updated (new version token) and removed keys, each sorted."""
    return LandingChanges(
        added=sorted(k for k in after if k not in before),
        updated=sorted(k for k, v in after.items() if k in before and before[k] != v),
        removed=sorted(k for k in before if k not in after),
    )


def load_cursor(store: ObjectStore, settings: Settings) -> Cursor | None:
    """The last persisted snapshot, or None (first poll, or the landing zone setting changed)."""
    try:
        cursor = Cursor.model_validate_json(store.get(CURSOR_KEY))
    except KeyError:
        return None
    except ValueError:  # a corrupt cursor: start over, which reports everything once (never loses a change)
        return None
    return cursor if cursor.landing == settings.landing_uri else None


def save_cursor(store: ObjectStore, settings: Settings, versions: Snapshot) -> None:
    cursor = Cursor(versions=versions, polled_at=datetime.now(timezone.utc), landing=settings.landing_uri)
    store.put(CURSOR_KEY, json.dumps(cursor.model_dump(mode="json"), sort_keys=True).encode())


class WatchStats(BaseModel):
    """What one watch run saw and announced."""

    polls: int = 0
    events: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    errors: int = 0
    announced: list[dict] = Field(default_factory=list, description="One row per announcement (for the artifact).")
    skipped_reason: str | None = None


def settle(landing: ObjectStore, first: Snapshot, settle_s: float, max_s: float) -> Snapshot:
    """Re-list until nothing changed for `settle_s` (at most `max_s`): the tail of a burst joins its event."""
    current, deadline = first, time.monotonic() + max_s
    while settle_s > 0 and time.monotonic() < deadline:
        time.sleep(settle_s)
        latest = snapshot(landing)
        if latest == current:
            break
        current = latest
    return current


def watch(
    settings: Settings,
    landing: ObjectStore,
    store: ObjectStore,
    announce: Callable[[LandingChanges], None],
    run_for_s: float,
    poll_s: float,
    settle_s: float = 0.1,
    log: Callable[[str], None] = lambda _: None,
) -> WatchStats:
    """Poll until `run_for_s` has passed (0: one poll); announce each poll's changes once, then move the cursor.

    The cursor moves only after the announcement, so a crash in between repeats an event (harmless: the
    refresh is idempotent) rather than losing one.
    """
    stats = WatchStats()
    cursor = load_cursor(store, settings)
    previous = cursor.versions if cursor else {}
    deadline = time.monotonic() + run_for_s
    while True:
        try:
            current = snapshot(landing)
            if diff(previous, current):
                current = settle(landing, current, settle_s, poll_s)
                changes = diff(previous, current)
                announce(changes)
                save_cursor(store, settings, current)
                stats.events += 1
                stats.added += len(changes.added)
                stats.updated += len(changes.updated)
                stats.removed += len(changes.removed)
                stats.announced.append(_row(changes))
                log(f"announced {changes.count} change(s): {stats.announced[-1]['keys']}")
            previous = current
        except ObjectStoreError as exc:  # an S3 blip: keep the cursor, try again next poll
            stats.errors += 1
            log(f"landing zone unreachable, retrying: {exc}")
        stats.polls += 1
        if time.monotonic() + poll_s > deadline:
            return stats
        time.sleep(poll_s)


def _row(changes: LandingChanges) -> dict:
    keys = (changes.added + changes.updated + changes.removed)[:5]
    return {"at": datetime.now(timezone.utc).strftime("%H:%M:%S"), "added": len(changes.added),
            "updated": len(changes.updated), "removed": len(changes.removed),
            "keys": ", ".join(keys) + (" ..." if changes.count > 5 else "")}
