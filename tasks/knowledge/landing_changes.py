"""Noticing landing-zone changes by listing: a snapshot (key -> version) compared with what was announced.

Works the same for a folder and an S3 prefix (both list key, size and a version token). What was announced
is persisted as the cursor in the artifact store, so a restarted watcher resumes where the last one stopped
and reports what changed meanwhile; the first listing of a fresh namespace reports everything as added.
Every announcement goes through `publish`: its keys into the change feed first, then the event. Both
watch modes use this module: `watch` polls every few seconds (watch_mode "poll"); the notification
watcher (landing_notifications) uses `Announcer.poll` as its slow fallback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from hybridops.tasks.knowledge.change_feed import FeedEntry, record_changes
from hybridops.tasks.knowledge.landing import is_document_key, require_landing_root
from hybridops.tasks.core.object_store import ObjectStore, ObjectStoreError, S3Store
from hybridops.tasks.core.settings import Settings

CURSOR_KEY = "watch/landing-cursor.json"
"""Where the watcher keeps what it last announced, in the artifact store."""

EVENT_KEY_LIMIT = 200
"""At most this many keys per list in one event payload (the counts are always exact)."""

CURSOR_SAVE_EVERY_S = 10.0
"""Announcements from notifications move the persisted cursor at most this often (a listing or the end of a
run always moves it): a 100k-key cursor is megabytes, and a crash only repeats these seconds' announcements."""

Snapshot = dict[str, str]


class LandingChanges(BaseModel):
    """What differs between two snapshots of the landing zone's documents, and who noticed it."""

    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    source: str = "poll"

    @property
    def count(self) -> int:
        return len(self.added) + len(self.updated) + len(self.removed)

    @property
    def changed_keys(self) -> list[str]:
        """Every changed key, sorted (what the change feed records)."""
        return sorted({*self.added, *self.updated, *self.removed})

    def __bool__(self) -> bool:
        return self.count > 0

    def payload(self, limit: int = EVENT_KEY_LIMIT) -> dict:
        """Event payload: exact counts, the first `limit` keys of each kind and of all, who noticed, and whether
        lists were cut."""
        return {
            "count": self.count,
            "counts": {"added": len(self.added), "updated": len(self.updated), "removed": len(self.removed)},
            "added": self.added[:limit],
            "updated": self.updated[:limit],
            "removed": self.removed[:limit],
            "keys": self.changed_keys[:limit],
            "source": self.source,
            "truncated": self.count > limit,
        }


class Listing(BaseModel):
    """When the landing zone was last listed in full, and how many LIST requests that took (S3 pages)."""

    at: datetime
    requests: int = 0


class Cursor(BaseModel):
    """The watcher's persisted position: the snapshot it last announced, and its last full listing."""

    versions: Snapshot
    polled_at: datetime
    landing: str
    last_listing: Listing | None = None


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


def save_cursor(store: ObjectStore, settings: Settings, versions: Snapshot, last_listing: Listing | None = None) -> None:
    cursor = Cursor(versions=versions, polled_at=datetime.now(timezone.utc), landing=settings.landing_uri,
                    last_listing=last_listing)
    store.put(CURSOR_KEY, json.dumps(cursor.model_dump(mode="json"), sort_keys=True).encode())


def publish(store: ObjectStore, changes: LandingChanges, emit: Callable[[LandingChanges], None]) -> FeedEntry | None:
    """Record the keys in the change feed, THEN emit the event: the event only says "look now", the feed says
    what to look at, so a lost event costs latency, never a change."""
    entry = record_changes(store, changes.changed_keys, changes.source)
    emit(changes)
    return entry


class ListRequests:
    """LIST requests sent to the landing zone: an S3 store's ListObjectsV2 calls (boto3's before-call hook on
    this store's own client); a folder sends none."""

    def __init__(self, landing: ObjectStore):
        self.count = 0
        if isinstance(landing, S3Store):
            landing.client.meta.events.register("before-call.s3.ListObjectsV2", self._sent,
                                                unique_id=f"hybridops-list-requests-{id(self)}")

    def _sent(self, **_) -> None:
        self.count += 1


class WatchStats(BaseModel):
    """What one watch run saw and announced."""

    mode: str = "poll"
    seconds: float = 0.0
    polls: int = Field(0, description="Full listings of the landing zone.")
    list_requests: int = Field(0, description="LIST requests those listings sent (0 for a folder).")
    notifications: int = Field(0, description="Change sets the filesystem notifier delivered.")
    notifier_restarts: int = 0
    fallback_seconds: float | None = Field(None, description="The fallback listing's interval at the end of the run.")
    events: int = 0
    keys_announced: int = Field(0, description="Keys announced, summed over events.")  # `keys` would make Prefect
    # take the flow's result for a mapping
    sources: dict[str, int] = Field(default_factory=dict, description="Events per source (watchfiles, poll).")
    added: int = 0
    updated: int = 0
    removed: int = 0
    errors: int = 0
    announced: list[dict] = Field(default_factory=list, description="One row per announcement (for the artifact).")
    skipped_reason: str | None = None


class Announcer:
    """One watch run's announcements: what has been announced (`known`, starting from the persisted cursor),
    the run's counters, and the cursor that follows `known`."""

    def __init__(self, settings: Settings, landing: ObjectStore, store: ObjectStore,
                 emit: Callable[[LandingChanges], None], log: Callable[[str], None] = lambda _: None,
                 mode: str = "poll"):
        self.settings, self.landing, self.store, self.emit, self.log = settings, landing, store, emit, log
        cursor = load_cursor(store, settings)
        self.known: Snapshot = dict(cursor.versions) if cursor else {}
        self.last_listing = cursor.last_listing if cursor else None
        self.requests = ListRequests(landing)
        self.stats = WatchStats(mode=mode)
        self._started = time.monotonic()
        self._dirty, self._saved_at = False, time.monotonic()

    def announce(self, changes: LandingChanges, versions: Snapshot) -> None:
        """Publish the changes, then take them into `known` (`versions`: every added/updated key's version)."""
        publish(self.store, changes, self.emit)
        for key in changes.removed:
            self.known.pop(key, None)
        for key in (*changes.added, *changes.updated):
            self.known[key] = versions[key]
        self._dirty = True
        stats = self.stats
        stats.events += 1
        stats.keys_announced += changes.count
        stats.sources[changes.source] = stats.sources.get(changes.source, 0) + 1
        stats.added += len(changes.added)
        stats.updated += len(changes.updated)
        stats.removed += len(changes.removed)
        stats.announced.append(_row(changes))
        self.log(f"announced {changes.count} change(s) ({changes.source}): {stats.announced[-1]['keys']}")

    def poll(self, settle_s: float = 0.0, settle_max_s: float = 0.0) -> LandingChanges:
        """List everything, announce what differs from `known` (source 'poll'); with `settle_s`, wait for a
        burst's tail first. Raises ObjectStoreError when the landing zone cannot be listed."""
        before = self.requests.count
        try:
            current = snapshot(self.landing)
            self.last_listing = Listing(at=datetime.now(timezone.utc), requests=self.requests.count - before)
            self.stats.polls += 1
            changes = diff(self.known, current)
            if changes and settle_s > 0:
                current = settle(self.landing, current, settle_s, settle_max_s)
                changes = diff(self.known, current)
        finally:  # a listing that failed half-way sent requests too
            self.stats.list_requests += self.requests.count - before
        if changes:
            self.announce(changes, current)
        return changes

    def save(self) -> None:
        """Persist `known` (and the last listing) as the cursor."""
        save_cursor(self.store, self.settings, self.known, self.last_listing)
        self._dirty, self._saved_at = False, time.monotonic()

    def save_if_due(self, every_s: float = CURSOR_SAVE_EVERY_S) -> None:
        if self._dirty and time.monotonic() - self._saved_at >= every_s:
            self.save()

    def finish(self) -> WatchStats:
        """Persist what is not yet persisted; the run's stats."""
        if self._dirty:
            self.save()
        self.stats.seconds = round(time.monotonic() - self._started, 3)
        return self.stats


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
    """Pure polling (watch_mode "poll"): list every `poll_s` until `run_for_s` has passed (0: one poll);
    announce each poll's changes once, then move the cursor.

    The cursor moves only after the announcement, so a crash in between repeats an event (harmless: the
    refresh is idempotent) rather than losing one.
    """
    announcer = Announcer(settings, landing, store, announce, log, mode="poll")
    deadline = time.monotonic() + run_for_s
    while True:
        try:
            if announcer.poll(settle_s, poll_s):
                announcer.save()
        except ObjectStoreError as exc:  # an S3 blip, or the artifact store: keep the cursor, try again next poll
            announcer.stats.errors += 1
            log(f"landing zone or store unreachable, retrying: {exc}")
        if time.monotonic() + poll_s > deadline:
            return announcer.finish()
        time.sleep(poll_s)


def _row(changes: LandingChanges) -> dict:
    keys = changes.changed_keys[:5]
    return {"at": datetime.now(timezone.utc).strftime("%H:%M:%S"), "source": changes.source,
            "added": len(changes.added), "updated": len(changes.updated), "removed": len(changes.removed),
            "keys": ", ".join(keys) + (" ..." if changes.count > 5 else "")}
