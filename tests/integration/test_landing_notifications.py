"""watch-landing in notify mode against the REAL Prefect server (and MinIO for the S3 fallback).

The flow runs in-process for a few seconds; a helper thread changes the landing zone once the run's first
listing is done (the filesystem notifier is up by then). Events are read back from the server's event store.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hybridops.flows.orchestration.events import LANDING_CHANGED
from hybridops.flows.orchestration.run_control import prefect_client, read_events
from hybridops.tasks.core.object_store import artifact_store, landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.change_feed import FeedEntry, pending_changes
from hybridops.tasks.knowledge.landing_changes import LandingChanges, load_cursor
from hybridops.tasks.knowledge.landing_notifications import PathKeys
from tests.integration.knowledge_support import drop_namespace, wait_events


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def env(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[Settings], Settings]:
    """The flow builds its settings from the environment: make them these."""

    def use(cfg: Settings) -> Settings:
        for key, value in cfg.as_env().items():
            monkeypatch.setenv(key, value)
        return cfg

    return use


def watch_while(cfg: Settings, actions: Callable[[], None], run_for_s: float = 6.0, **params):
    """Run the watch_landing flow here; `actions` runs in another thread once its first listing is done."""
    from hybridops.flows.watch_landing import WatchParams, watch_landing

    started, store = now(), artifact_store(cfg)

    def when_up() -> None:
        deadline = time.monotonic() + run_for_s
        while time.monotonic() < deadline:
            cursor = load_cursor(store, cfg)
            if cursor and cursor.last_listing and cursor.last_listing.at >= started:
                return actions()
            time.sleep(0.02)
        raise AssertionError("the watcher never made its first listing")

    helper = threading.Thread(target=when_up)
    helper.start()
    stats = watch_landing(WatchParams(run_for_seconds=run_for_s, **params))
    helper.join()
    return stats


def landing_events(cfg: Settings, since: datetime, at_least: int) -> list:
    resource = f"hybridops.{cfg.namespace}.landing"
    wait_events(cfg, LANDING_CHANGED, resource, since, at_least=at_least)
    time.sleep(1.5)  # anything more would have arrived by now
    return read_events(cfg, LANDING_CHANGED, resource, since)


def feed_entries(cfg: Settings) -> list[FeedEntry]:
    store = artifact_store(cfg)
    return [FeedEntry.model_validate_json(store.get(key)) for key in pending_changes(store).entries]


def test_a_burst_of_20_copied_files_is_one_event_and_one_feed_entry(folder_cfg: Settings, env, tmp_path: Path) -> None:
    cfg = env(folder_cfg)
    Path(cfg.landing_uri).mkdir(parents=True)
    source = tmp_path / "incoming" / "burst"
    source.mkdir(parents=True)
    for i in range(20):
        (source / f"doc-{i:02d}.md").write_text(f"# Doc {i}\n\nBurst document number {i}.\n")
    copied: list[datetime] = []

    def copy() -> None:
        copied.append(now())
        shutil.copytree(source, Path(cfg.landing_uri) / "burst")

    stats = watch_while(cfg, copy)
    (event,) = landing_events(cfg, copied[0], at_least=1)
    keys = [f"burst/doc-{i:02d}.md" for i in range(20)]
    assert event.payload["keys"] == keys and event.payload["added"] == keys
    assert event.payload["source"] == "watchfiles"
    assert event.payload["counts"] == {"added": 20, "updated": 0, "removed": 0}
    latency_s = (event.occurred - copied[0]).total_seconds()
    assert latency_s < 3, latency_s
    (entry,) = feed_entries(cfg)
    assert entry.changed_keys == keys and entry.source == "watchfiles"
    assert stats.events == 1 and stats.keys_announced == 20 and stats.polls == 1 and stats.list_requests == 0
    print(f"burst of 20: event {latency_s:.2f} s after the copy started")


def test_a_removed_file_and_a_removed_folder_are_announced_as_removed_keys(folder_cfg: Settings, env) -> None:
    from hybridops.flows.watch_landing import WatchParams, watch_landing

    cfg = env(folder_cfg)
    landing = landing_zone(cfg)
    for key in ("old/a.md", "old/deeper/b.md", "old/deeper/c.md", "single.md", "kept.md"):
        landing.put(key, f"# {key}\n\ntext of {key}\n".encode())
    assert watch_landing(WatchParams(run_for_seconds=0)).added == 5  # known to the cursor
    removed_at: list[datetime] = []

    def remove() -> None:
        removed_at.append(now())
        shutil.rmtree(Path(cfg.landing_uri) / "old")
        landing.delete("single.md")

    stats = watch_while(cfg, remove)
    events = [e for e in landing_events(cfg, removed_at[0], at_least=1) if e.payload["removed"]]
    assert sorted(k for e in events for k in e.payload["removed"]) == [
        "old/a.md", "old/deeper/b.md", "old/deeper/c.md", "single.md"]
    assert {e.payload["source"] for e in events} == {"watchfiles"}
    assert stats.removed == 4 and stats.added == 0
    assert set(load_cursor(artifact_store(cfg), cfg).versions) == {"kept.md"}  # the cursor followed


def test_changes_notifications_missed_are_announced_by_the_fallback_listing(folder_cfg: Settings, env,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = env(folder_cfg)
    landing = landing_zone(cfg)
    since = now()
    landing.put("while-nobody-watched.md", b"# Gap\n\nlanded between two watcher runs\n")
    lost = LandingChanges(source="watchfiles")
    monkeypatch.setattr(PathKeys, "changes", lambda self, raw, known: (lost, {}))  # every notification is lost
    written: list[datetime] = []

    def write() -> None:
        written.append(now())
        landing.put("missed.md", b"# Missed\n\nits notification was lost\n")

    stats = watch_while(cfg, write, fallback_seconds=1.5)
    events = landing_events(cfg, since, at_least=2)
    assert [(e.payload["added"], e.payload["source"]) for e in events] == [
        (["while-nobody-watched.md"], "poll"), (["missed.md"], "poll")]  # the run's first listing, then the fallback
    delay_s = (events[1].occurred - written[0]).total_seconds()
    assert delay_s <= 1.5 + 1.5, delay_s  # the interval, plus one notifier tick and slack
    assert stats.notifications >= 1 and stats.sources == {"poll": 2}
    assert [e.source for e in feed_entries(cfg)] == ["poll", "poll"]
    print(f"lost notification: announced by the fallback {delay_s:.2f} s after the write (interval 1.5 s)")


def test_an_idle_s3_zone_is_listed_only_when_its_fallback_is_due(s3_settings: Settings, env) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from hybridops.flows.watch_landing import WatchParams, watch_landing

    cfg = env(s3_settings)
    landing = landing_zone(cfg)
    try:
        for i in range(3):
            landing.put(f"s3/doc-{i}.md", f"# Doc {i}\n\nan object\n".encode())
        first = watch_landing(WatchParams(run_for_seconds=0))
        assert (first.polls, first.list_requests, first.added) == (1, 1, 3)
        assert load_cursor(artifact_store(cfg), cfg).last_listing.requests == 1

        idle = watch_landing(WatchParams(run_for_seconds=3))  # listed a moment ago: next due in 300 s
        assert (idle.polls, idle.list_requests, idle.events, idle.mode) == (0, 0, 0, "fallback")
        assert idle.fallback_seconds == cfg.watch_fallback_seconds

        since = now()
        landing.put("s3/late.md", b"# Late\n\nits bucket notification was lost\n")
        caught = watch_landing(WatchParams(run_for_seconds=2.5, fallback_seconds=1))
        assert caught.sources == {"poll": 1} and caught.added == 1 and caught.list_requests == caught.polls >= 2
        (event,) = landing_events(cfg, since, at_least=1)
        assert event.payload["keys"] == ["s3/late.md"] and event.payload["source"] == "poll"

        key = f"{cfg.namespace.replace('_', '-')}-watch-stats"
        with prefect_client(cfg) as client:
            (latest,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                              limit=1, sort=ArtifactSort.CREATED_DESC)
        assert f"{caught.list_requests} LIST requests" in latest.description
    finally:
        for info in list(landing.list()):
            landing.delete(info.key)
        drop_namespace(cfg)
