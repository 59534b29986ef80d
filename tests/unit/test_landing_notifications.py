"""Filesystem notifications for folder landing zones, and the fallback listing's rule (tmp folders, no servers)."""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from watchfiles import Change

from hybridops.tasks.core.object_store import TEMP_MARK, FolderStore, ObjectInfo, S3Store
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge import landing_notifications
from hybridops.tasks.knowledge.change_feed import FeedEntry, pending_changes
from hybridops.tasks.knowledge.landing_changes import (
    LandingChanges,
    Listing,
    WatchStats,
    load_cursor,
    save_cursor,
    watch,
)
from hybridops.tasks.knowledge.landing_notifications import (
    PathKeys,
    fallback_interval_s,
    first_listing_in_s,
    watch_notified,
)


@pytest.fixture
def landing(cfg: Settings) -> FolderStore:
    Path(cfg.landing_uri).mkdir(parents=True)
    return FolderStore(cfg.landing_uri)


def feed(store: FolderStore) -> list[FeedEntry]:
    return [FeedEntry.model_validate_json(store.get(key)) for key in pending_changes(store).entries]


def make_files(folder: Path, count: int, stem: str = "doc") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{stem}-{i:03d}.md").write_text(f"# {stem} {i}\n\nbody {i}\n")
    return folder


def watching(cfg: Settings, landing: FolderStore, store: FolderStore, actions: Callable[[], None],
             until: Callable[[list[LandingChanges]], bool], timeout_s: float = 8.0,
             **options) -> tuple[list[tuple[float, LandingChanges]], WatchStats]:
    """Run watch_notified in this thread; `actions` runs in another once the run's first listing is done (the
    notifier is up by then), and the run stops 1 s after `until(announced)` holds (anything more would have
    come by then) or after `timeout_s`. Returns (announce time, changes) pairs and the stats."""
    announced: list[tuple[float, LandingChanges]] = []
    started, stop = datetime.now(timezone.utc), threading.Event()

    def drive() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            cursor = load_cursor(store, cfg)
            if cursor and cursor.last_listing and cursor.last_listing.at >= started:
                break
            time.sleep(0.02)
        actions()
        while time.monotonic() < deadline and not until([c for _, c in announced]):
            time.sleep(0.05)
        stop.wait(1.0)
        stop.set()

    helper = threading.Thread(target=drive)
    helper.start()
    stats = watch_notified(cfg, landing, store, lambda c: announced.append((time.monotonic(), c)),
                           run_for_s=timeout_s + 2, stop=stop, **options)
    helper.join()
    return announced, stats


# path -> key mapping


def test_notified_paths_get_the_keys_the_folder_store_lists(landing: FolderStore) -> None:
    root = Path(landing.root)
    landing.put("top.md", b"a")
    landing.put("deep/er/nested.md", b"b")
    (root / "100%.md").write_bytes(b"c")
    bad = os.fsencode(root) + b"/caf\xe9-%.md"  # latin-1 bytes: not UTF-8
    with open(bad, "wb") as handle:
        handle.write(b"d")
    listed = {info.key for info in landing.list()}
    assert "caf%E9-%25.md" in listed
    keys = PathKeys(landing)
    walked = {keys.key(os.path.join(folder, name)) for folder, _, names in os.walk(root) for name in names}
    assert walked == listed


def test_temp_files_folders_below_symlinks_and_the_root_are_not_keys(landing: FolderStore, tmp_path: Path) -> None:
    root = Path(landing.root)
    make_files(root / "real", 1)
    (root / "linked").symlink_to(root / "real", target_is_directory=True)
    outside = make_files(tmp_path / "outside", 1)
    (root / "away").symlink_to(outside, target_is_directory=True)
    keys = PathKeys(landing)
    assert keys.key(str(root / f"{TEMP_MARK}abc")) is None
    assert keys.key(str(root / "real" / f"{TEMP_MARK}x")) is None
    assert keys.key(str(root / "linked" / "doc-000.md")) is None  # the store does not descend into it
    assert keys.key(str(root / "away" / "doc-000.md")) is None
    assert keys.key(str(root)) is None and keys.is_root(str(root))
    assert keys.key(str(tmp_path / "elsewhere.md")) is None
    assert {i.key for i in landing.list()} == {"real/doc-000.md", "away"}  # the link itself is listed (flagged)
    assert keys.key(str(root / "away")) == "away"


def test_a_folder_that_appeared_brings_all_its_keys_and_a_removed_one_takes_its_known_keys(
        landing: FolderStore) -> None:
    root = Path(landing.root)
    make_files(root / "new" / "sub", 3)  # as if its files landed before its watch existed: none notified
    known = {"gone/a.md": "1", "gone/b/c.md": "2", "gonezo.md": "3", "kept.md": "4"}
    raw = {(Change.added, str(root / "new")), (Change.deleted, str(root / "gone"))}
    changes, versions = PathKeys(landing).changes(raw, known)
    assert changes.added == sorted(versions) == ["new/sub/doc-000.md", "new/sub/doc-001.md", "new/sub/doc-002.md"]
    assert changes.removed == ["gone/a.md", "gone/b/c.md"] and changes.source == "watchfiles"


def test_only_real_changes_of_document_keys_are_announced(landing: FolderStore) -> None:
    root = Path(landing.root)
    landing.put("same.md", b"unchanged bytes")
    landing.put("edited.md", b"new bytes")
    landing.put("_training/examples.jsonl", b"{}")
    make_files(root / "big", 2)
    known = {info.key: info.version for info in landing.list()} | {"edited.md": "old"}
    raw = {(Change.modified, str(root / "same.md")), (Change.modified, str(root / "edited.md")),
           (Change.added, str(root / "_training" / "examples.jsonl")),
           (Change.modified, str(root / "big"))}  # a chmod of a folder: no keys of its own
    changes, _ = PathKeys(landing).changes(raw, known)
    assert changes == LandingChanges(updated=["edited.md"], source="watchfiles")


def test_many_changed_keys_in_one_folder_cost_one_listing_of_it_not_one_read_per_key(
        landing: FolderStore, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(landing.root)
    make_files(root / "flat", 100, stem="old")
    known = {info.key: info.version for info in landing.list()}
    make_files(root / "flat", 40, stem="new")
    (root / "flat" / "old-000.md").unlink()
    raw = {(Change.added, str(root / "flat" / f"new-{i:03d}.md")) for i in range(40)}
    raw.add((Change.deleted, str(root / "flat" / "old-000.md")))
    reads: list[str] = []
    look_up = FolderStore.info
    monkeypatch.setattr(FolderStore, "info", lambda self, key: reads.append(key) or look_up(self, key))
    changes, _ = PathKeys(landing).changes(raw, known)
    assert changes.added == [f"flat/new-{i:03d}.md" for i in range(40)] and changes.removed == ["flat/old-000.md"]
    assert reads == []
    few = {(Change.added, str(root / "flat" / "new-000.md"))}
    assert PathKeys(landing).changes(few, known)[0].added == ["flat/new-000.md"] and reads == ["flat/new-000.md"]


# the watcher, against a real tmp folder


def test_a_burst_copied_with_cp_r_is_one_change_set_and_one_feed_entry(cfg: Settings, landing: FolderStore,
                                                                       store: FolderStore, tmp_path: Path) -> None:
    source = make_files(tmp_path / "incoming" / "burst", 200)
    announced, stats = watching(cfg, landing, store, lambda: shutil.copytree(source, Path(landing.root) / "burst"),
                                until=lambda changes: sum(c.count for c in changes) >= 200)
    assert [c.source for _, c in announced] == ["watchfiles"]
    (_, changes), = announced
    assert changes.added == [f"burst/doc-{i:03d}.md" for i in range(200)]
    (entry,) = feed(store)
    assert entry.source == "watchfiles" and entry.changed_keys == changes.changed_keys
    assert stats.events == 1 and stats.keys_announced == 200 and stats.polls == 1 and stats.list_requests == 0


def test_removed_files_and_folders_are_announced_and_a_restart_announces_nothing_again(
        cfg: Settings, landing: FolderStore, store: FolderStore) -> None:
    root = Path(landing.root)
    make_files(root / "folder" / "inner", 5)
    landing.put("single.md", b"bye")
    landing.put("stays.md", b"here")
    first = watch_notified(cfg, landing, store, lambda c: None, run_for_s=0)
    assert first.events == 1 and first.added == 7 and first.mode == "fallback"

    def remove() -> None:
        shutil.rmtree(root / "folder")
        landing.delete("single.md")

    announced, stats = watching(cfg, landing, store, remove, until=lambda changes: sum(c.count for c in changes) >= 6)
    removed = sorted(key for _, c in announced for key in c.removed)
    assert removed == ["folder/inner/doc-000.md", "folder/inner/doc-001.md", "folder/inner/doc-002.md",
                       "folder/inner/doc-003.md", "folder/inner/doc-004.md", "single.md"]
    assert {c.source for _, c in announced} == {"watchfiles"} and stats.polls == 1
    again = watch_notified(cfg, landing, store, lambda c: None, run_for_s=0)  # the cursor followed
    assert again.events == 0


def test_a_lost_notification_is_announced_by_the_fallback_listing_within_its_interval(
        cfg: Settings, landing: FolderStore, store: FolderStore, monkeypatch: pytest.MonkeyPatch) -> None:
    lost = LandingChanges(source="watchfiles")
    monkeypatch.setattr(PathKeys, "changes", lambda self, raw, known: (lost, {}))  # every notification lost
    written: list[float] = []

    def write() -> None:
        written.append(time.monotonic())
        landing.put("missed.md", b"nobody told")

    announced, stats = watching(cfg, landing, store, write, until=bool, fallback_s=1.0)
    ((at, changes),) = announced
    assert changes == LandingChanges(added=["missed.md"], source="poll")
    assert at - written[0] <= 1.0 + 1.0  # the interval, plus at most one notifier tick
    assert stats.notifications >= 1 and stats.polls >= 2


def test_a_name_watchfiles_cannot_decode_restarts_the_notifier_and_the_listing_announces_it(
        cfg: Settings, landing: FolderStore, store: FolderStore) -> None:
    def write() -> None:
        with open(os.fsencode(landing.root) + b"/r\xe9sum\xe9.md", "wb") as handle:
            handle.write(b"latin-1 name")

    announced, stats = watching(cfg, landing, store, write, until=bool)
    assert [(c.added, c.source) for _, c in announced] == [(["r%E9sum%E9.md"], "poll")]
    assert stats.notifier_restarts == 1


def test_a_poll_mode_watch_records_the_feed_before_its_event(cfg: Settings, landing: FolderStore,
                                                             store: FolderStore) -> None:
    landing.put("a.md", b"a")
    seen: list[list[str]] = []
    watch(cfg, landing, store, lambda c: seen.append([e.id for e in feed(store)]), run_for_s=0, poll_s=0.05)
    assert len(seen) == 1 and len(seen[0]) == 1  # the entry existed when the event went out
    assert feed(store)[0].source == "poll"


def test_event_payload_carries_keys_and_source_with_todays_fields() -> None:
    payload = LandingChanges(added=["b.md"], removed=["a.md"], source="watchfiles").payload()
    assert payload["keys"] == ["a.md", "b.md"] and payload["source"] == "watchfiles"
    assert payload["counts"] == {"added": 1, "updated": 0, "removed": 1} and payload["truncated"] is False


# the fallback rule


def s3_landing(cfg: Settings) -> S3Store:
    return S3Store("s3://bucket/landing", cfg, client=object())  # never called: the rule only reads settings


def listing(pages: int, minutes_ago: float = 0) -> Listing:
    return Listing(at=datetime.now(timezone.utc) - timedelta(minutes=minutes_ago), requests=pages)


def test_folders_are_listed_every_watch_fallback_seconds_and_at_every_start(cfg: Settings,
                                                                           landing: FolderStore) -> None:
    assert fallback_interval_s(cfg, landing, listing(0)) == cfg.watch_fallback_seconds == 300
    assert first_listing_in_s(landing, listing(0, minutes_ago=0), 300) == 0


@pytest.mark.parametrize("keys", [1, 999, 1_000, 5_000, 100_000, 1_000_000])
def test_an_idle_s3_zone_costs_at_most_the_list_budget(cfg: Settings, keys: int) -> None:
    pages = math.ceil(keys / 1000)
    interval = fallback_interval_s(cfg, s3_landing(cfg), listing(pages))
    assert interval >= cfg.watch_fallback_seconds
    assert pages / (interval / 60) <= cfg.watch_s3_lists_per_minute == 1.0
    if keys == 100_000:
        assert interval == 100 * 60  # every 100 min


def test_the_s3_budget_setting_and_the_last_listing_decide_when_a_run_lists(cfg: Settings) -> None:
    doubled = cfg.model_copy(update={"watch_s3_lists_per_minute": 2.0})
    assert fallback_interval_s(doubled, s3_landing(cfg), listing(100)) == 50 * 60
    interval = fallback_interval_s(cfg, s3_landing(cfg), listing(100))
    assert first_listing_in_s(s3_landing(cfg), None, interval) == 0  # never listed: now
    assert first_listing_in_s(s3_landing(cfg), listing(100, minutes_ago=30), interval) == pytest.approx(70 * 60, abs=2)
    assert first_listing_in_s(s3_landing(cfg), listing(100, minutes_ago=300), interval) == 0


class MemoryZone:
    """A non-folder landing zone (what the S3 path sees), counting its listings."""

    uri = "memory://zone"

    def __init__(self, keys: dict[str, str]):
        self.keys, self.listings = keys, 0

    def check_root(self) -> None:
        pass

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.listings += 1
        return iter([ObjectInfo(k, 1, v) for k, v in sorted(self.keys.items()) if k.startswith(prefix)])


def test_a_non_folder_zone_is_only_listed_when_its_fallback_is_due(cfg: Settings, store: FolderStore) -> None:
    cfg = cfg.model_copy(update={"landing": "memory://zone"})
    zone = MemoryZone({"a.md": "1"})
    save_cursor(store, cfg, {"a.md": "1"}, listing(1, minutes_ago=1))  # the last run listed a minute ago
    idle = watch_notified(cfg, zone, store, lambda c: None, run_for_s=1.0)
    assert zone.listings == 0 and idle.polls == 0 and idle.mode == "fallback"

    zone.keys["b.md"] = "1"  # its notification was lost: the fallback finds it
    announced: list[LandingChanges] = []
    stats = watch_notified(cfg, zone, store, announced.append, run_for_s=1.5, fallback_s=0.4)
    assert announced == [LandingChanges(added=["b.md"], source="poll")]
    assert 3 <= stats.polls <= 5 and zone.listings == stats.polls


def test_a_vanished_root_is_never_read_as_all_removed_and_is_watched_again_once_back(
        cfg: Settings, landing: FolderStore, store: FolderStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landing_notifications, "RETRY_S", 0.3)
    landing.put("a.md", b"a")
    assert watch_notified(cfg, landing, store, lambda c: None, run_for_s=0).added == 1
    root, away = Path(landing.root), Path(f"{landing.root}.away")

    def unmount_and_back() -> None:
        root.rename(away)  # an unmount, as the watcher sees it
        time.sleep(1.5)
        away.rename(root)
        time.sleep(2.0)  # a new notifier is up and has listed
        landing.put("b.md", b"b")

    announced, stats = watching(cfg, landing, store, unmount_and_back, until=bool, timeout_s=10)
    assert [(c.added, c.removed) for _, c in announced] == [(["b.md"], [])]
    assert stats.notifier_restarts >= 1 and stats.errors >= 1  # listings failed while it was gone
