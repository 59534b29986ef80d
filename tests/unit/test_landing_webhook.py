"""The landing webhook on plain data: record parsing, key mapping, auth, group commits and coalesced
announcements, with the real HTTP server on a free port in this process (no MinIO, no Prefect)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from hybridops.flows.orchestration.landing_webhook import (
    LandingPrefix,
    LandingWebhook,
    ObjectEvent,
    announcement,
    parse_records,
)
from hybridops.infra.minio_notifications import (
    HEALTH_PATH,
    NOTIFY_PATH,
    FAST_TOKEN_VAR,
    TOKEN_VAR,
    ensure_webhook_token,
    token_file,
    webhook_token,
)
from hybridops.infra.services import landing_webhook_status, minio_service
from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.object_store import ObjectStoreError
from hybridops.tasks.core.settings import Settings

TOKEN = SecretStr("t0ken-for-unit-tests-only")
LANDING = LandingPrefix(bucket="lake", prefix="ns/landing/")


def minio_record(key: str, event: str = "s3:ObjectCreated:Put", bucket: str = "lake") -> dict:
    """A record as MinIO sends it: the key query-escaped (space -> '+', '/' -> %2F)."""
    from urllib.parse import quote_plus

    return {"eventVersion": "2.0", "eventSource": "minio:s3", "eventName": event,
            "userIdentity": {"principalId": "hybridops"},
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": quote_plus(key), "sequencer": "18ED82AD3B2ED1A9"}}}


def body(*records: dict) -> bytes:
    return json.dumps({"EventName": records[0]["eventName"] if records else "", "Records": list(records)}).encode()


# --- records and keys ---------------------------------------------------------------------------------------


def test_keys_are_decoded_as_minio_escapes_them() -> None:
    raw = {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "lake"}, "object": {
        "key": "ns%2Flanding%2Fa+dir%2Ff+0%2B%C3%A9.md"}}}]}  # verbatim from MinIO for 'ns/landing/a dir/f 0+é.md'
    assert parse_records(json.dumps(raw).encode()) == [ObjectEvent("lake", "ns/landing/a dir/f 0+é.md", False)]


def test_created_and_removed_kinds_in_minio_and_aws_spelling() -> None:
    events = parse_records(body(
        minio_record("ns/landing/a.md", "s3:ObjectCreated:Put"),
        minio_record("ns/landing/b.md", "ObjectCreated:CompleteMultipartUpload"),  # AWS: no "s3:" prefix
        minio_record("ns/landing/c.md", "s3:ObjectRemoved:Delete"),
        minio_record("ns/landing/d.md", "s3:ObjectRemoved:DeleteMarkerCreated"),
        minio_record("ns/landing/e.md", "s3:ObjectCreated:PutTagging"),  # metadata only
        minio_record("ns/landing/f.md", "s3:ObjectAccessed:Get"),
    ))
    assert [(e.key.rsplit("/", 1)[-1], e.removed) for e in events] == [
        ("a.md", False), ("b.md", False), ("c.md", True), ("d.md", True)]


@pytest.mark.parametrize("raw, reason", [
    (b"{not json, secret=hunter2", "not JSON"),
    (b"\xff\xfe", "not JSON|not UTF-8"),
    (b'["hunter2"]', "no Records"),
    (b'{"Records": {"hunter2": 1}}', "no Records"),
    (b'{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"object": {"key": "hunter2"}}}]}', "lacks"),
    (b'{"Records": [{"eventName": 7, "s3": {"bucket": {"name": "b"}, "object": {"key": "hunter2"}}}]}', "strings"),
])
def test_a_malformed_body_is_refused_without_quoting_it(raw: bytes, reason: str) -> None:
    with pytest.raises(BadInputError, match=reason) as caught:
        parse_records(raw)
    assert "hunter2" not in str(caught.value)


def test_only_documents_under_the_landing_prefix_of_the_landing_bucket_count() -> None:
    events = [ObjectEvent("lake", "ns/landing/policies/a.md", False),
              ObjectEvent("other", "ns/landing/b.md", False),          # another bucket
              ObjectEvent("lake", "ns/landing2/c.md", False),          # a sibling prefix
              ObjectEvent("lake", "ns/store/feed/landing/x.json", False),
              ObjectEvent("lake", "ns/landing/_training/examples.jsonl", False),  # the training area
              ObjectEvent("lake", "ns/landing/", False)]               # the prefix itself
    assert LANDING.changes(events) == {"policies/a.md": False}
    assert LandingPrefix("lake", "").changes([ObjectEvent("lake", "top.md", True)]) == {"top.md": True}


def test_the_last_record_about_a_key_decides() -> None:
    events = [ObjectEvent("lake", "ns/landing/a.md", False), ObjectEvent("lake", "ns/landing/b.md", True),
              ObjectEvent("lake", "ns/landing/a.md", True), ObjectEvent("lake", "ns/landing/b.md", False)]
    assert LANDING.changes(events) == {"a.md": True, "b.md": False}


def test_the_announcement_lists_created_as_added_and_cuts_long_lists() -> None:
    payload = announcement({"b.md": False, "a.md": True, "c.md": False})
    assert payload["added"] == ["b.md", "c.md"] and payload["updated"] == [] and payload["removed"] == ["a.md"]
    assert payload["keys"] == ["a.md", "b.md", "c.md"] and payload["source"] == "minio"
    assert payload["count"] == 3 and not payload["truncated"]
    cut = announcement({f"{i:02}.md": i % 2 == 0 for i in range(6)}, limit=4)
    assert len(cut["keys"]) == 4 and cut["truncated"] and cut["count"] == 6


# --- the server ---------------------------------------------------------------------------------------------


class Feed:
    """Stands in for the change feed and the event emitter; can be slowed down or made to fail."""

    def __init__(self, delay_s: float = 0.0):
        self.entries: list[list[str]] = []
        self.events: list[dict] = []
        self.delay_s = delay_s
        self.down = False

    def record(self, keys: list[str]) -> None:
        time.sleep(self.delay_s)
        if self.down:
            raise ObjectStoreError("S3 request failed: store unreachable")
        self.entries.append(keys)

    def announce(self, changes: dict[str, bool]) -> None:
        self.events.append(announcement(changes))


@pytest.fixture
def feed() -> Feed:
    return Feed()


@pytest.fixture
def hook(cfg: Settings, feed: Feed):
    webhook = LandingWebhook(cfg, TOKEN, LANDING, record=feed.record, announce=feed.announce, window_s=0.2)
    webhook.start(port=0)
    yield webhook
    webhook.stop()


def post(hook: LandingWebhook, data: bytes, token: str | None = TOKEN.get_secret_value(),
         path: str = NOTIFY_PATH) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"http://127.0.0.1:{hook.port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_notification_is_answered_200_only_after_its_keys_are_in_the_feed(hook, feed: Feed) -> None:
    status, answer = post(hook, body(minio_record("ns/landing/a b.md")))
    assert status == 200 and answer == {"recorded": 1}
    assert feed.entries == [["a b.md"]]  # written before the answer, not after
    wait_for(lambda: feed.events)
    assert feed.events[0]["added"] == ["a b.md"]


@pytest.mark.parametrize("token", [None, "wrong-token-of-the-same-kind", TOKEN.get_secret_value() + "x"])
def test_a_wrong_or_missing_token_gets_401_and_records_nothing(hook, feed: Feed, token,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    status, _ = post(hook, body(minio_record("ns/landing/a.md")), token=token)
    assert status == 401
    time.sleep(0.3)
    assert feed.entries == [] and feed.events == [] and hook.health()["rejected"] == 1
    assert "rejected" in caplog.text and TOKEN.get_secret_value() not in caplog.text
    assert token is None or token not in caplog.text


def test_the_token_must_be_sent_as_minio_sends_it(hook, feed: Feed) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{hook.port}{NOTIFY_PATH}",
                                     data=body(minio_record("ns/landing/a.md")),
                                     headers={"Authorization": TOKEN.get_secret_value()})  # no "Bearer "
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 401 and feed.entries == []


def test_a_malformed_body_is_400_and_logged_without_its_content(hook, feed: Feed,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    status, answer = post(hook, b'{"Records": [{"eventName": "s3:ObjectCreated:Put", "password": "hunter2"}]}')
    assert status == 400 and "malformed" in answer["error"]
    assert "hunter2" not in caplog.text and "malformed" in caplog.text
    assert feed.entries == [] and hook.health()["malformed"] == 1


def test_records_outside_the_landing_zone_are_acknowledged_and_ignored(hook, feed: Feed) -> None:
    status, answer = post(hook, body(minio_record("other-ns/landing/a.md"),
                                     minio_record("ns/landing/a.md", bucket="x")))
    assert (status, answer) == (200, {"recorded": 0})  # acknowledged: MinIO would otherwise resend it forever
    time.sleep(0.3)
    assert feed.entries == [] and feed.events == []


def test_a_store_that_is_down_gets_503_so_the_sender_retries(hook, feed: Feed) -> None:
    feed.down = True
    status, answer = post(hook, body(minio_record("ns/landing/a.md")))
    assert status == 503 and "ObjectStoreError" in answer["error"]
    time.sleep(0.3)
    assert feed.events == [] and hook.recorder.stats["record_failures"] == 1
    feed.down = False  # MinIO sends the same record again
    assert post(hook, body(minio_record("ns/landing/a.md")))[0] == 200
    wait_for(lambda: feed.events)
    assert feed.entries == [["a.md"]] and feed.events[0]["keys"] == ["a.md"]


def test_the_second_copy_of_an_event_is_acknowledged_and_dropped(hook, feed: Feed) -> None:
    """MinIO sends every event twice (at once, and from its queue): one feed entry, one event."""
    record = minio_record("ns/landing/a.md")
    assert post(hook, body(record)) == (200, {"recorded": 1})
    assert post(hook, body(record)) == (200, {"recorded": 0})  # the queued copy, 0-3 s later
    later = minio_record("ns/landing/a.md") | {"s3": record["s3"] | {"object": {"key": record["s3"]["object"]["key"],
                                                                              "sequencer": "18ED82AD3B2ED1B0"}}}
    assert post(hook, body(later)) == (200, {"recorded": 1})  # the next change of the same key is news
    wait_for(lambda: feed.events)
    assert feed.entries == [["a.md"], ["a.md"]] and hook.health()["duplicates"] == 1
    removal = minio_record("ns/landing/a.md", "s3:ObjectRemoved:Delete")  # same sequencer, other event
    assert post(hook, body(removal)) == (200, {"recorded": 1})


def test_one_sender_after_another_gets_one_entry_each_and_one_event(hook, feed: Feed) -> None:
    for i in range(10):  # MinIO's queue sends the next record only after the previous answer
        assert post(hook, body(minio_record(f"ns/landing/doc{i}.md")))[0] == 200
    wait_for(lambda: feed.events)
    time.sleep(0.3)
    assert len(feed.entries) == 10
    assert len(feed.events) == 1 and feed.events[0]["keys"] == [f"doc{i}.md" for i in range(10)]


def test_parallel_senders_share_feed_entries(cfg: Settings) -> None:
    feed = Feed(delay_s=0.15)  # a slow store: whatever arrives during one write joins the next
    with LandingWebhook(cfg, TOKEN, LANDING, record=feed.record, announce=feed.announce).start(port=0) as hook:
        answers: list[int] = []
        ready = threading.Barrier(10)

        def send(i: int) -> None:
            ready.wait()
            answers.append(post(hook, body(minio_record(f"ns/landing/doc{i}.md")))[0])

        senders = [threading.Thread(target=send, args=(i,)) for i in range(10)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        wait_for(lambda: feed.events)
    assert answers == [200] * 10
    assert len(feed.entries) <= 5
    assert sorted(k for entry in feed.entries for k in entry) == [f"doc{i}.md" for i in range(10)]
    assert len(feed.events) == 1 and len(feed.events[0]["keys"]) == 10


def test_a_steady_stream_is_still_announced_every_max_delay(cfg: Settings) -> None:
    feed = Feed()
    with LandingWebhook(cfg, TOKEN, LANDING, record=feed.record, announce=feed.announce, window_s=0.2,
                        max_delay_s=0.5).start(port=0) as hook:
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < 1.3:  # never quiet for 0.2 s
            post(hook, body(minio_record(f"ns/landing/doc{i}.md")))
            i += 1
            time.sleep(0.05)
        wait_for(lambda: len(feed.events) >= 2, timeout=1.0)  # before the stream ends: not held back by it
    assert 2 <= len(feed.events) <= 4
    assert sorted(k for event in feed.events for k in event["keys"]) == sorted(f"doc{j}.md" for j in range(i))


def test_stopping_announces_what_was_recorded(cfg: Settings) -> None:
    feed = Feed()
    hook = LandingWebhook(cfg, TOKEN, LANDING, record=feed.record, announce=feed.announce, window_s=30).start(port=0)
    assert post(hook, body(minio_record("ns/landing/a.md")))[0] == 200
    assert feed.events == []  # the quiet window has not passed
    hook.stop()
    assert [e["keys"] for e in feed.events] == [["a.md"]]


def test_health_head_and_unknown_paths(hook) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{hook.port}{HEALTH_PATH}", timeout=5) as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["port"] == hook.port and health["namespace"] == hook.settings.namespace
    head = urllib.request.Request(f"http://127.0.0.1:{hook.port}{NOTIFY_PATH}", method="HEAD")
    with urllib.request.urlopen(head, timeout=5) as response:
        assert response.status == 200
    assert post(hook, body(minio_record("ns/landing/a.md")), path="/elsewhere")[0] == 404


# --- status, token and MinIO's target -------------------------------------------------------------------------


def test_status_tells_up_taken_down_and_off(tmp_path: Path, feed: Feed) -> None:
    mine = Settings(home=tmp_path, namespace="mine", landing="s3://lake/mine/landing", _env_file=None)
    folder = Settings(home=tmp_path, namespace="mine", _env_file=None)
    hook = LandingWebhook(mine, TOKEN, LANDING, record=feed.record, announce=feed.announce).start(port=0)
    try:
        here = mine.model_copy(update={"landing_webhook_port": hook.port})
        assert landing_webhook_status(here)["state"] == "up" and landing_webhook_status(here)["port"] == hook.port
        other = here.model_copy(update={"namespace": "theirs"})
        assert landing_webhook_status(other)["state"] == "taken"
        assert landing_webhook_status(other)["serving_namespace"] == "mine"
    finally:
        hook.stop()
    assert landing_webhook_status(here)["state"] == "down"
    assert landing_webhook_status(folder)["state"] == "off"


def test_up_generates_the_token_once_into_a_private_file(cfg: Settings) -> None:
    assert webhook_token(cfg) is None
    token = ensure_webhook_token(cfg)
    assert stat.S_IMODE(os.stat(token_file(cfg)).st_mode) == 0o600
    assert ensure_webhook_token(cfg) == token == webhook_token(cfg) and len(token.get_secret_value()) >= 32
    configured = cfg.model_copy(update={"landing_webhook_token": SecretStr("configured-token-123456")})
    assert webhook_token(configured).get_secret_value() == "configured-token-123456"


@pytest.mark.parametrize("bad", ["two words-here-long-enough", "short", "tab\tseparated-long-enough"])
def test_a_token_minio_cannot_send_as_bearer_is_refused(cfg: Settings, bad: str) -> None:
    with pytest.raises(BadInputError, match="one word"):
        webhook_token(cfg.model_copy(update={"landing_webhook_token": SecretStr(bad)}))


def test_minio_gets_the_target_in_its_env_and_the_token_only_at_start(cfg: Settings) -> None:
    service = minio_service(cfg)
    endpoint = service.env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_HYBRIDOPS"]
    assert endpoint == f"http://127.0.0.1:{cfg.landing_webhook_port}{NOTIFY_PATH}"
    assert service.env["MINIO_NOTIFY_WEBHOOK_ENABLE_HYBRIDOPS"] == "on"
    queue_dir = Path(service.env["MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_HYBRIDOPS"])
    assert queue_dir.is_absolute() and queue_dir.parent == (cfg.home / "data" / "minio").resolve()
    assert "MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_HYBRIDOPSFAST" not in service.env  # the fast copy: sent at once
    assert service.env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_HYBRIDOPSFAST"] == endpoint
    assert TOKEN_VAR not in service.env and not token_file(cfg).exists()  # status/down never create it
    secrets = service.secret_env()  # made now, when MinIO starts
    token = webhook_token(cfg).get_secret_value()
    assert secrets == {TOKEN_VAR: token, FAST_TOKEN_VAR: token}


def test_config_output_redacts_the_token() -> None:
    cfg = Settings(landing_webhook_token="never-printed-token-42", _env_file=None)
    assert "never-printed-token-42" not in json.dumps(cfg.redacted()) + repr(cfg)
    assert cfg.redacted()["landing_webhook_token"] == "**********"
