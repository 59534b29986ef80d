"""MinIO bucket notifications, for real: the session stack's MinIO (started by `up` with the webhook target)
POSTs into the landing webhook, which writes the change feed and emits landing.changed to the real
Prefect server. No listing of the landing zone is involved anywhere here."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hybridops.flows.orchestration.events import LANDING_CHANGED
from hybridops.flows.orchestration.landing_webhook import LandingWebhook
from hybridops.flows.orchestration.serving import ServeProcess
from hybridops.infra.minio_notifications import (
    NOTIFY_PATH,
    FAST_WEBHOOK_ARN,
    TOKEN_VAR,
    WEBHOOK_ARN,
    configure_bucket_notifications,
    webhook_token,
)
from hybridops.infra.services import prepare_storage
from hybridops.tasks.core.object_store import S3Store, artifact_store, landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.change_feed import FEED_PREFIX, FeedEntry, pending_changes
from tests.integration.knowledge_support import cli_json, drop_namespace, read_events

MINIO_RETRY_S = 3.0
"""MinIO sends queued events every 3 s (its queue store's retry interval); the quick target sends at once."""


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def notified(s3_settings: Settings, stack: Settings) -> Settings:
    """An S3 landing namespace on the session's MinIO, configured by `prepare_storage` as `up` does it, with
    the token `up` generated for the stack."""
    cfg = s3_settings.model_copy(update={"landing_webhook_token": webhook_token(stack)})
    told: list[str] = []
    prepare_storage(cfg, told.append)
    assert f"bucket notifications for {cfg.landing_uri}: configured" in told, told
    return cfg


def feed_entries(cfg: Settings) -> list[FeedEntry]:
    store = artifact_store(cfg)
    return [FeedEntry.model_validate_json(store.get(info.key)) for info in store.list(FEED_PREFIX)]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def announced_keys(cfg: Settings, since: datetime, field: str = "keys") -> tuple[set[str], list]:
    events = read_events(cfg, LANDING_CHANGED, f"hybridops.{cfg.namespace}.landing", since)
    return {key for event in events for key in event.payload[field]}, events


def test_ten_landed_objects_become_feed_entries_and_one_event(notified: Settings, prefect_api: str) -> None:
    keys = {f"burst/doc {i}+{uuid.uuid4().hex[:4]}.md" for i in range(10)}  # spaces and '+' survive the escaping
    since = now()
    with LandingWebhook.for_settings(notified, notified.landing_webhook_token) as hook:
        landing = landing_zone(notified)
        started = time.monotonic()
        for key in sorted(keys):
            landing.put(key, f"# {key}\n\nLanded to be noticed.\n".encode())
        wait_until(lambda: set(pending_changes(artifact_store(notified)).changed_keys) >= keys, 4 * MINIO_RETRY_S,
                   "all 10 keys in the change feed")
        recorded_s = time.monotonic() - started
        got, events = wait_until(lambda: (found := announced_keys(notified, since))[0] >= keys and found, 20,
                                 "landing.changed carrying all 10 keys")
        # every event came twice (at once, and from MinIO's queue): the queued copies were dropped
        wait_until(lambda: hook.health()["duplicates"] >= 10, 4 * MINIO_RETRY_S, "the queued second copies")
    entries = feed_entries(notified)
    assert {entry.source for entry in entries} == {"minio"} and set().union(*(e.changed_keys for e in entries)) == keys
    assert sorted(key for e in entries for key in e.changed_keys) == sorted(keys)  # each key recorded once
    assert len(events) <= 3 and got == keys
    assert all(set(e.payload["added"]) <= keys and e.payload["source"] == "minio" for e in events)
    latency = [(e.occurred - since).total_seconds() for e in events]
    print(f"\n10 puts -> feed in {recorded_s:.2f} s; {len(entries)} entries; events at {latency} s after the first put")
    assert recorded_s < 2 * MINIO_RETRY_S


def test_a_removed_object_arrives_as_a_removed_key(notified: Settings, prefect_api: str) -> None:
    landing = landing_zone(notified)
    landed_at = now()
    with LandingWebhook.for_settings(notified, notified.landing_webhook_token):
        landing.put("gone.md", b"# Gone\n\nSoon removed.\n")
        wait_until(lambda: "gone.md" in announced_keys(notified, landed_at, "added")[0], 20, "the landing announced")
        since = now()
        landing.delete("gone.md")
        removed, events = wait_until(lambda: (found := announced_keys(notified, since, "removed"))[0] and found, 20,
                                     "landing.changed with the removal")
    assert removed == {"gone.md"} and all(e.payload["added"] == [] for e in events)
    assert sum(entry.changed_keys == ["gone.md"] for entry in feed_entries(notified)) == 2  # landed, then removed


def test_a_wrong_token_gets_401_and_records_nothing(notified: Settings, prefect_api: str) -> None:
    record = {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": notified.s3_bucket},
              "object": {"key": f"{notified.namespace}%2Flanding%2Fforged.md"}}}
    with LandingWebhook.for_settings(notified, notified.landing_webhook_token) as hook:
        request = urllib.request.Request(
            f"http://127.0.0.1:{hook.port}{NOTIFY_PATH}", data=json.dumps({"Records": [record]}).encode(),
            headers={"Authorization": "Bearer not-the-token-at-all-1234", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
        time.sleep(0.5)
        assert hook.health()["rejected"] == 1 and hook.recorder.stats["feed_entries"] == 0
    assert not pending_changes(artifact_store(notified))


def test_events_raised_while_the_receiver_is_down_arrive_once_it_starts(notified: Settings, prefect_api: str) -> None:
    landing = landing_zone(notified)
    keys = {f"while-down/{i}.md" for i in range(3)}
    for key in sorted(keys):
        landing.put(key, b"# Landed while nobody listened\n")
    time.sleep(MINIO_RETRY_S + 1)  # MinIO tried (and failed) to deliver at least once
    assert not pending_changes(artifact_store(notified))
    since = now()
    with LandingWebhook.for_settings(notified, notified.landing_webhook_token):
        started = time.monotonic()
        wait_until(lambda: set(pending_changes(artifact_store(notified)).changed_keys) >= keys, 4 * MINIO_RETRY_S,
                   "the queued events, from MinIO's queue dir")
        print(f"\nqueued events delivered {time.monotonic() - started:.2f} s after the receiver started")
        wait_until(lambda: announced_keys(notified, since)[0] >= keys, 20, "landing.changed for the queued events")


def test_the_configuration_is_idempotent_and_keeps_other_namespaces(notified: Settings, stack: Settings) -> None:
    other = notified.model_copy(update={"namespace": notified.namespace + "b",
                                        "landing": f"s3://{stack.s3_bucket}/{notified.namespace}b/landing"})
    assert configure_bucket_notifications(notified) == "unchanged"
    assert configure_bucket_notifications(other) == "configured"
    assert configure_bucket_notifications(notified) == "unchanged"
    zone = S3Store(notified.landing_uri, notified)
    queues = zone.client.get_bucket_notification_configuration(Bucket=zone.bucket)["QueueConfigurations"]
    mine = {q["Id"]: q for q in queues}
    for cfg in (notified, other):
        for suffix, arn in (("", WEBHOOK_ARN), ("-fast", FAST_WEBHOOK_ARN)):  # the queued target and the quick one
            entry = mine[f"hybridops-{cfg.namespace}-landing{suffix}"]
            assert entry["QueueArn"] == arn
            assert set(entry["Events"]) == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
            assert entry["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": f"{cfg.namespace}/landing/"}]


def test_up_gives_minio_the_token_in_its_environment_only(stack: Settings) -> None:
    token = webhook_token(stack).get_secret_value()
    pid = int((stack.run_dir / "s3.pid").read_text())
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"{TOKEN_VAR}={token}".encode() in environ
    assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert all(token not in log.read_text(errors="replace") for log in (stack.home / "logs").glob("*.log"))


def test_serve_hosts_the_webhook_and_status_reports_it(s3_settings: Settings, stack: Settings, child_env) -> None:
    # the stack's home: `serve` finds the token `up` generated there, as it does for a user
    cfg = s3_settings.model_copy(update={"home": stack.home})
    prepare_storage(cfg)
    assert cli_json(child_env(cfg), "status")["landing_webhook"]["state"] == "down"
    serve = ServeProcess(cfg).start()
    try:
        hook = cli_json(child_env(cfg), "status")["landing_webhook"]
        assert hook["state"] == "up" and hook["port"] == cfg.landing_webhook_port
        landing_zone(cfg).put("served.md", b"# Served\n\nThrough serve's receiver.\n")
        wait_until(lambda: "served.md" in pending_changes(artifact_store(cfg)).changed_keys, 4 * MINIO_RETRY_S,
                   "serve's receiver writing the feed")
    finally:
        serve.stop()
        drop_namespace(cfg)  # the event may have started a refresh
    assert cli_json(child_env(cfg), "status")["landing_webhook"]["state"] == "down"
    assert webhook_token(stack).get_secret_value() not in serve.log_path.read_text(errors="replace")
