"""Noticing landing-zone changes from notifications, with a slow fallback listing for whatever they miss.

Why: polling lists the whole landing zone every half second, so the cost of freshness grew with the corpus.
A folder zone is watched with `watchfiles` (inotify on Linux): a burst (`cp -r` of 200 files) arrives as
ONE change set, mapped to landing keys without listing the corpus (only a folder that appeared is walked,
since its first files land before its watch exists). Notifications can be lost: nothing watches between two
runs, an NFS/SMB mount never reports remote writes, the kernel queue can overflow, and watchfiles fails the
whole batch on a name that is not UTF-8. So the cursor diff of landing_changes runs as a fallback: at the
start of each run and every `watch_fallback_seconds`. An S3 zone's notifications reach `hybridops serve`'s
webhook, not this watcher; here it only gets the fallback listing, spaced by the last listing's page count
so an idle bucket averages at most `watch_s3_lists_per_minute` LIST requests per minute.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

import watchfiles
from watchfiles import Change

from hybridops.tasks.knowledge.landing import is_document_key
from hybridops.tasks.knowledge.landing_changes import Announcer, LandingChanges, Listing, Snapshot, WatchStats
from hybridops.tasks.core.object_store import (
    TEMP_MARK,
    FolderStore,
    ObjectStore,
    ObjectStoreError,
    StoreRootUnavailable,
    encode_name,
)
from hybridops.tasks.core.settings import Settings

SOURCE = "watchfiles"

BURST_MAX_S = 2.0
"""A burst still going on after this long is announced in parts (each part one event; the feed coalesces)."""

RETRY_S = 5.0
"""After a failed announcement or listing, list again this soon (never later than the regular interval)."""


def fallback_interval_s(settings: Settings, landing: ObjectStore, last_listing: Listing | None) -> float:
    """Seconds between fallback listings. A folder: `watch_fallback_seconds` (a walk sends no requests). S3: a
    listing of N pages waits N / `watch_s3_lists_per_minute` minutes, never less than `watch_fallback_seconds`,
    so 100k keys (100 pages) are listed every 100 min at the default 1 LIST/min."""
    floor = settings.watch_fallback_seconds
    if isinstance(landing, FolderStore):
        return floor
    pages = max(1, last_listing.requests if last_listing else 1)
    return max(floor, pages * 60.0 / settings.watch_s3_lists_per_minute)


def first_listing_in_s(landing: ObjectStore, last_listing: Listing | None, interval_s: float) -> float:
    """When a run's first fallback listing is due. A folder: now (nothing watched it since the last run). S3:
    one interval after the last listing, whichever run made it (the webhook covers the time between)."""
    if isinstance(landing, FolderStore) or last_listing is None:
        return 0.0
    since = (datetime.now(timezone.utc) - last_listing.at).total_seconds()
    return max(0.0, interval_s - since)


class PathKeys:
    """Notified paths -> landing keys exactly as FolderStore.list names them: relative, '/'-separated,
    encode_name'd segments; the store's temp files, folders and anything below a symlinked folder (the store
    does not descend into those) are not keys."""

    def __init__(self, landing: FolderStore):
        self.landing = landing
        self.roots = tuple(dict.fromkeys((os.path.abspath(landing.root), os.path.realpath(landing.root))))

    def key(self, path: str) -> str | None:
        """The key a path would have (None: the root itself, outside it, a temp file, below a symlinked folder)."""
        for root in self.roots:
            rel = os.path.relpath(path, root)
            if rel != os.curdir and rel != os.pardir and not rel.startswith(os.pardir + os.sep):
                parts = rel.split(os.sep)
                if any(part.startswith(TEMP_MARK) for part in parts) or self._below_symlink(root, parts):
                    return None
                return "/".join(encode_name(part) for part in parts)
        return None

    def is_root(self, path: str) -> bool:
        return any(os.path.relpath(path, root) == os.curdir for root in self.roots)

    @staticmethod
    def _below_symlink(root: str, parts: list[str]) -> bool:
        folder = root
        for part in parts[:-1]:
            folder = os.path.join(folder, part)
            if os.path.islink(folder):
                return True
        return False

    def changes(self, raw: Iterable[tuple[Change, str]], known: Snapshot) -> tuple[LandingChanges, Snapshot]:
        """What the notified paths changed compared with `known`, and the new versions of added/updated keys.

        A notified file is looked up on its own (FolderStore.info reads its folder, never the tree). A folder
        that appeared (created, moved in, replaced) is listed whole: its first files landed before its watch
        existed. So is a folder with more than LOOKUPS_PER_LISTING changed keys, cheaper than reading it once
        per key. A path that vanished and was no key we knew is a removed folder: its known keys go. A folder
        only modified (chmod) has no keys."""
        walk, keys = self._plan(raw, known)
        walk |= {parent for parent, members in _by_parent(keys).items() if len(members) > LOOKUPS_PER_LISTING}
        walk = _outermost(walk)
        listed = {info.key: info for folder in walk for info in self.landing.list(folder)}
        added, updated, removed, versions = [], [], [], {}
        for key in sorted(k for k in keys | set(listed) if is_document_key(k)):
            info = listed.get(key) if _covered(key, walk) else self.landing.info(key)
            if info is None:
                if key in known:
                    removed.append(key)
            elif key not in known:
                added.append(key)
                versions[key] = info.version
            elif known[key] != info.version:
                updated.append(key)
                versions[key] = info.version
        return LandingChanges(added=added, updated=updated, removed=removed, source=SOURCE), versions

    def _plan(self, raw: Iterable[tuple[Change, str]], known: Snapshot) -> tuple[set[str], set[str]]:
        """(folder keys to list whole, keys to look at) for one change set."""
        by_path: dict[str, set[Change]] = {}
        for change, path in raw:
            by_path.setdefault(path, set()).add(change)
        walk, keys = set(), set()
        below = _KnownBelow(known)
        for path, changes in by_path.items():
            key = self.key(path)
            if key is None:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                if changes != {Change.modified}:
                    walk.add(key)
                    keys.update(below(key))
            elif key in known or os.path.lexists(path):
                keys.add(key)
            else:  # vanished, and no key we knew: a removed folder
                keys.update(below(key))
        return walk, keys


LOOKUPS_PER_LISTING = 32
"""A folder with more changed keys than this in one change set is listed once instead of read once per key."""


def _by_parent(keys: Iterable[str]) -> dict[str, list[str]]:
    """Keys by the folder key holding them ('' for the root)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.rpartition("/")[0], []).append(key)
    return groups


def _outermost(folders: set[str]) -> set[str]:
    """Folder keys not inside another of them ('' is the root, which holds every other)."""
    kept: list[str] = []
    for folder in sorted(folders):  # a folder sorts before the folders inside it
        if not _covered(folder, kept):
            kept.append(folder)
    return set(kept)


def _covered(key: str, folders: Iterable[str]) -> bool:
    return any(folder == "" or key.startswith(folder + "/") for folder in folders)


class _KnownBelow:
    """Known keys below a folder key, by bisection over the sorted keys (sorted once, only when needed)."""

    def __init__(self, known: Snapshot):
        self.known, self.sorted = known, None

    def __call__(self, folder_key: str) -> list[str]:
        if self.sorted is None:
            self.sorted = sorted(self.known)
        prefix, keys = folder_key + "/", []
        for i in range(bisect.bisect_left(self.sorted, prefix), len(self.sorted)):
            if not self.sorted[i].startswith(prefix):
                break
            keys.append(self.sorted[i])
        return keys


class _Restart(Exception):
    """The landing root vanished or was replaced: its watch is useless, start a new one when it is back."""


def watch_notified(
    settings: Settings,
    landing: ObjectStore,
    store: ObjectStore,
    announce: Callable[[LandingChanges], None],
    run_for_s: float,
    stop: threading.Event | None = None,
    settle_s: float = 0.2,
    burst_max_s: float = BURST_MAX_S,
    fallback_s: float | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> WatchStats:
    """Watch until `run_for_s` has passed or `stop` is set (0: one fallback listing, no notifications).

    A folder: filesystem notifications, each change set (quiet for `settle_s`, at most `burst_max_s`) one
    event, plus the fallback listing. Any other store (S3): the fallback listing only. `fallback_s`
    overrides the interval rule (tests)."""
    stop = threading.Event() if stop is None else stop
    notified = isinstance(landing, FolderStore) and run_for_s > 0
    announcer = Announcer(settings, landing, store, announce, log, mode="notify" if notified else "fallback")
    timer = threading.Timer(run_for_s, stop.set)
    timer.daemon = True
    timer.start()
    fallback = _Fallback(settings, announcer, fallback_s, log)
    try:
        if run_for_s <= 0:
            fallback.run()
        elif notified:
            _watch_folder(landing, announcer, fallback, stop, settle_s, burst_max_s, log)
        else:
            fallback.after(first_listing_in_s(landing, announcer.last_listing, fallback.interval_s()))
            while not stop.wait(fallback.wait_s()):
                fallback.run()
    finally:  # also on Ctrl-C: the cursor keeps what was announced
        timer.cancel()
        stats = announcer.finish()
    stats.fallback_seconds = fallback.interval_s()
    return stats


class _Fallback:
    """The fallback listing: when it is due, and running it (failures counted and retried soon)."""

    def __init__(self, settings: Settings, announcer: Announcer, fixed_s: float | None, log: Callable[[str], None]):
        self.settings, self.announcer, self.fixed_s, self.log = settings, announcer, fixed_s, log
        self.due = time.monotonic()

    def interval_s(self) -> float:
        if self.fixed_s is not None:
            return self.fixed_s
        return fallback_interval_s(self.settings, self.announcer.landing, self.announcer.last_listing)

    def after(self, seconds: float) -> None:
        self.due = time.monotonic() + seconds

    def wait_s(self) -> float:
        return max(0.0, self.due - time.monotonic())

    def run_if_due(self) -> ObjectStoreError | None:
        return self.run() if time.monotonic() >= self.due else None

    def run(self) -> ObjectStoreError | None:
        """List, announce what notifications missed, persist the cursor; a failure is counted, retried soon
        and returned (StoreRootUnavailable: the folder's watch must be renewed once it is back)."""
        try:
            self.announcer.poll()
            self.announcer.save()
        except ObjectStoreError as exc:  # S3 blip, a missing root, the artifact store: known did not move
            self.failed("fallback listing", exc)
            return exc
        self.after(self.interval_s())
        return None

    def failed(self, what: str, exc: Exception) -> None:
        """Count a failure and list again soon: `known` did not move, so the listing announces what was lost."""
        retry_s = min(RETRY_S, self.interval_s())
        self.announcer.stats.errors += 1
        self.log(f"{what} failed, listing again in {retry_s:.0f} s: {exc}")
        self.after(retry_s)


def _watch_folder(landing: FolderStore, announcer: Announcer, fallback: _Fallback, stop: threading.Event,
                  settle_s: float, burst_max_s: float, log: Callable[[str], None]) -> None:
    """Notifications until `stop`. When watchfiles fails (it drops the whole batch) or the root vanishes, a new
    notifier starts and the landing zone is listed again; one that cannot start at all (missing root, the
    inotify watch limit) is retried every few seconds, each time after the due listing (the zone stays
    watched by listing)."""
    notifier = _Notifier(landing, announcer, fallback, stop, settle_s, burst_max_s)
    while not stop.is_set():
        try:
            notifier.run()
        except _Restart as exc:
            announcer.stats.notifier_restarts += 1
            log(f"filesystem notifier restarts, then the landing zone is listed again: {exc}")
            fallback.after(0)
            if not notifier.up:
                fallback.run_if_due()
                stop.wait(min(RETRY_S, fallback.interval_s()))


class _Notifier:
    """One watchfiles notifier at a time over the folder, announcing each change set it delivers."""

    def __init__(self, landing: FolderStore, announcer: Announcer, fallback: _Fallback, stop: threading.Event,
                 settle_s: float, burst_max_s: float):
        self.landing, self.announcer, self.fallback, self.stop = landing, announcer, fallback, stop
        self.paths = PathKeys(landing)
        self.settle_ms, self.burst_max_ms = max(1, int(settle_s * 1000)), max(1, int(burst_max_s * 1000))
        self.up = False

    def run(self) -> None:
        """Until `stop`. The watches exist before the first yield, so the listing made then (the run's first)
        misses nothing; a change both see is announced once, since both compare with `known`."""
        self.up = False
        tick_ms = int(max(0.05, min(1.0, self.fallback.interval_s())) * 1000)
        root_id = _identity(self.landing.root)
        if root_id is None:  # watchfiles would watch nothing, silently
            raise _Restart(f"{self.landing.root} does not exist")
        notifications = watchfiles.watch(Path(self.landing.root), watch_filter=None, debounce=self.burst_max_ms,
                                         step=self.settle_ms, stop_event=self.stop, rust_timeout=tick_ms,
                                         yield_on_timeout=True, ignore_permission_denied=True)
        try:
            while True:
                try:
                    raw = next(notifications)
                except StopIteration:  # stopped
                    return
                except (OSError, RuntimeError) as exc:  # RuntimeError: watchfiles' internal error (non-UTF-8 name)
                    raise _Restart(f"the notifier failed: {exc}") from exc
                self.up = True
                if raw:
                    self.announcer.stats.notifications += 1
                    if any(self.paths.is_root(path) for _, path in raw) and _identity(self.landing.root) != root_id:
                        raise _Restart(f"{self.landing.root} was removed or replaced")
                    self.announce(raw)
                if isinstance(self.fallback.run_if_due(), StoreRootUnavailable):
                    raise _Restart(f"{self.landing.root} cannot be listed")
        finally:
            notifications.close()  # ends its inotify watches now, not when collected

    def announce(self, raw: set[tuple[Change, str]]) -> None:
        """Announce one change set. Removals only while the root is there: files vanishing with their root (an
        unmount, `rm -rf` of the zone) are left to the listing, which never reads that as 'all removed'."""
        try:
            changes, versions = self.paths.changes(raw, self.announcer.known)
            if changes.removed:
                self.landing.check_root()
            if changes:
                self.announcer.announce(changes, versions)
                self.announcer.save_if_due()
        except StoreRootUnavailable as exc:
            raise _Restart(str(exc)) from exc
        except ObjectStoreError as exc:  # the change feed could not be written: known did not move, list again soon
            self.fallback.failed("announcing notified changes", exc)


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino
