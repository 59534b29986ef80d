"""The landing webhook: bucket notifications in, change-feed entries and `hybridops.landing.changed` out.

`hybridops serve` hosts it on 127.0.0.1 (infra/minio_notifications.py points the local MinIO at it), so
keeping the index fresh costs per changed object, not a listing of the corpus. A POST to /landing/minio
counts only with the shared token (constant-time compare; 401 otherwise, the token never logged). Its
records become landing keys: URL-decoded, in the landing bucket under the landing prefix, documents only.
The answer is 200 only once those keys are in the change feed; when the store is down the answer is 503
and MinIO keeps the event in its queue and sends it again.

Two copies of every event. MinIO sends each event through two targets (infra/minio_notifications.py): at once,
and again from its on-disk queue 0-3 s later (or whenever the webhook is back). The first copy is recorded;
a later one with the same bucket, key, event name and sequencer is answered 200 and dropped (`duplicates`).
A copy whose feed write failed is forgotten again, so the other copy still counts.

Coalescing. Feed writes are group commits: whatever arrives while one write is in flight goes into the
next entry, so parallel senders share entries without anyone waiting for a timer. Announcements wait for
a quiet `window_s` (at most `max_delay_s` after the first unannounced key) and send ONE event for all keys
recorded meanwhile. MinIO with a queue dir delivers one record per POST, the next only after the answer,
so a burst of N objects is N small feed entries (each acknowledged after it is written) but one event.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_plus

from pydantic import SecretStr

from hybridops.flows.orchestration.events import landing_changed
from hybridops.flows.orchestration.loopback_http import JsonHandler, LoopbackServer
from hybridops.infra.minio_notifications import HEALTH_PATH, NOTIFY_PATH, webhook_token
from hybridops.tasks.core.errors import BadInputError, HybridopsError, ServiceUnavailableError
from hybridops.tasks.core.object_store import S3Store, artifact_store
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.change_feed import record_changes
from hybridops.tasks.knowledge.landing import is_document_key
from hybridops.tasks.knowledge.landing_changes import EVENT_KEY_LIMIT, LandingChanges

log = logging.getLogger(__name__)

SOURCE = "minio"
MAX_BODY_BYTES = 1 << 20  # a MinIO record is ~1.5 kB
CONTENT_UNCHANGED = frozenset({"PutTagging", "DeleteTagging", "PutRetention", "PutLegalHold"})
"""ObjectCreated:* events that change metadata only: no document changed."""

Changes = dict[str, bool]
"""Landing key -> removed (the last record about a key wins)."""


@dataclass(frozen=True)
class ObjectEvent:
    """One notification record: which object, and whether it is gone now. `copy_id` is the same for every
    copy MinIO sends of one event (None when the record has no sequencer: never treated as a copy)."""

    bucket: str
    key: str  # decoded
    removed: bool
    copy_id: tuple[str, ...] | None = None


def parse_records(body: bytes) -> list[ObjectEvent]:
    """The object events of an S3-style notification body (MinIO's `s3:ObjectCreated:Put`, AWS's
    `ObjectCreated:Put`); records of other kinds are skipped. BadInputError says what is wrong, never
    quoting the body."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"not JSON ({exc.msg} at char {exc.pos})") from None
    except UnicodeDecodeError:
        raise BadInputError("not UTF-8") from None
    records = data.get("Records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise BadInputError("no Records list")
    events = []
    for i, record in enumerate(records):
        try:
            name, bucket, key = record["eventName"], record["s3"]["bucket"]["name"], record["s3"]["object"]["key"]
        except (KeyError, TypeError):
            raise BadInputError(f"Records[{i}] lacks eventName, s3.bucket.name or s3.object.key") from None
        if not all(isinstance(value, str) for value in (name, bucket, key)):
            raise BadInputError(f"Records[{i}]: eventName, bucket name and key must be strings")
        kind, _, detail = name.removeprefix("s3:").partition(":")
        sequencer = record["s3"]["object"].get("sequencer")
        copy_id = (bucket, key, name, sequencer) if isinstance(sequencer, str) and sequencer else None
        if kind == "ObjectRemoved" or (kind == "ObjectCreated" and detail not in CONTENT_UNCHANGED):
            events.append(ObjectEvent(bucket=bucket, key=unquote_plus(key), removed=kind == "ObjectRemoved",
                                      copy_id=copy_id))
    return events


class SeenEvents:
    """The ids of the events recorded lately (bounded): a second copy of one of them is dropped."""

    def __init__(self, limit: int = 10_000):
        self._seen: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def claim(self, events: list[ObjectEvent]) -> list[ObjectEvent]:
        """The events not seen before, now marked seen (so a copy arriving meanwhile is dropped)."""
        fresh = []
        with self._lock:
            for event in events:
                if event.copy_id is not None:
                    if event.copy_id in self._seen:
                        continue
                    self._seen[event.copy_id] = None
                    if len(self._seen) > self._limit:
                        self._seen.popitem(last=False)
                fresh.append(event)
        return fresh

    def release(self, events: list[ObjectEvent]) -> None:
        """Forget these (their feed write failed): the other copy, or MinIO's retry, must still count."""
        with self._lock:
            for event in events:
                self._seen.pop(event.copy_id, None)


@dataclass(frozen=True)
class LandingPrefix:
    """Where the landing zone lives in S3: object keys under it map back to landing keys."""

    bucket: str
    prefix: str  # "" or ending in "/", as S3Store has it

    def changes(self, events: list[ObjectEvent]) -> Changes:
        """Landing key -> removed, for the events about documents of this landing zone (in order)."""
        changes: Changes = {}
        for event in events:
            if event.bucket != self.bucket or not event.key.startswith(self.prefix):
                continue
            key = event.key[len(self.prefix):]
            if key and is_document_key(key):
                changes.pop(key, None)  # re-insert: the last record decides, in arrival order
                changes[key] = event.removed
        return changes


def announcement(changes: Changes, limit: int = EVENT_KEY_LIMIT) -> dict:
    """The landing.changed payload. S3 events do not tell a new object from a replaced one, so `added`
    holds both (updated stays empty); `keys` lists every changed key, the feed holds them all."""
    keys = sorted(changes)
    created, removed = [k for k in keys if not changes[k]], [k for k in keys if changes[k]]
    return LandingChanges(added=created, removed=removed, source=SOURCE).payload(limit) | {
        "reason": "bucket notification"}


@dataclass
class _Submission:
    changes: Changes
    done: threading.Event
    error: BaseException | None = None


class ChangeRecorder:
    """Writes submitted keys to the change feed (group commits) and announces them once per quiet window."""

    def __init__(self, record: Callable[[list[str]], object], announce: Callable[[Changes], object],
                 window_s: float = 0.2, max_delay_s: float = 2.0):
        self._record, self._announce = record, announce
        self.window_s, self.max_delay_s = window_s, max_delay_s
        self._queue: list[_Submission] = []
        self._unannounced: Changes = {}
        self._first_at = self._last_at = 0.0
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self.stats = {"feed_entries": 0, "keys_recorded": 0, "events": 0, "record_failures": 0}

    def start(self) -> ChangeRecorder:
        self._running = True
        context = contextvars.copy_context()  # the starter's Prefect settings (API URL) apply to announcements
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name="landing-recorder", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Write what was submitted, announce what was recorded, then stop."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, changes: Changes, timeout: float = 30.0) -> None:
        """Return once the keys are in the change feed; raise when they could not be written."""
        item = _Submission(changes, threading.Event())
        with self._cond:
            if not self._running:
                raise ServiceUnavailableError("the landing webhook is stopping")
            self._queue.append(item)
            self._cond.notify()
        if not item.done.wait(timeout):
            raise ServiceUnavailableError(f"the change feed was not written within {timeout:.0f} s")
        if item.error is not None:
            raise item.error

    def _announce_due_in(self) -> float | None:
        if not self._unannounced:
            return None
        now = time.monotonic()
        return max(0.0, min(self._last_at + self.window_s, self._first_at + self.max_delay_s) - now)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._queue:
                    due = self._announce_due_in()
                    if due == 0:
                        break
                    self._cond.wait(due)  # None: until a submission or stop
                batch, self._queue = self._queue, []
                stopping = not self._running
            if batch:
                self._write(batch)
                continue  # what arrived during the write is the next group
            if self._unannounced and (stopping or self._announce_due_in() == 0):
                self._flush_announcement()
            if stopping:
                return

    def _write(self, batch: list[_Submission]) -> None:
        keys = sorted({key for item in batch for key in item.changes})
        try:
            self._record(keys)
        except Exception as exc:  # the senders answer 503 and keep their events for a retry
            self.stats["record_failures"] += 1
            log.warning("landing webhook: change feed not written (%s): %d key(s) left to the sender's retry",
                        type(exc).__name__, len(keys))
            for item in batch:
                item.error = exc if isinstance(exc, HybridopsError) else ServiceUnavailableError(str(exc))
                item.done.set()
            return
        now = time.monotonic()
        if not self._unannounced:
            self._first_at = now
        self._last_at = now
        for item in batch:
            for key, removed in item.changes.items():
                self._unannounced.pop(key, None)
                self._unannounced[key] = removed
            item.done.set()
        self.stats["feed_entries"] += 1
        self.stats["keys_recorded"] += len(keys)

    def _flush_announcement(self) -> None:
        changes, self._unannounced = self._unannounced, {}
        try:
            self._announce(changes)
            self.stats["events"] += 1
        except Exception as exc:  # the feed has the keys: the next event or the fallback listing applies them
            log.warning("landing webhook: landing.changed not sent (%s); %d key(s) wait in the change feed",
                        type(exc).__name__, len(changes))


class _Handler(JsonHandler):
    server: _Server
    server_version = "hybridops-landing-webhook"
    max_body = MAX_BODY_BYTES

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        hook = self.server.webhook
        body = self.authorized_body(NOTIFY_PATH, hook.authorized)
        if body is None:
            return None
        try:
            events = parse_records(body)
        except BadInputError as exc:
            hook.count("malformed")
            log.warning("landing webhook: malformed notification from %s: %s", self.client_address[0], exc)
            return self.send_json(400, {"error": f"malformed notification: {exc}"})
        hook.count("received")
        fresh = hook.seen.claim(events)
        hook.count("duplicates", len(events) - len(fresh))
        changes = hook.landing.changes(fresh)
        if changes:
            try:
                hook.recorder.submit(changes)
            except HybridopsError as exc:
                hook.seen.release(fresh)
                return self.send_json(503, {"error": f"change feed unavailable: {type(exc).__name__}"})
        self.send_json(200, {"recorded": len(changes)})

    def do_HEAD(self) -> None:  # noqa: N802 (some MinIO releases probe the endpoint this way)
        self.send_json(200 if self.path == NOTIFY_PATH else 404, None)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == HEALTH_PATH:
            return self.send_json(200, self.server.webhook.health())
        self.send_json(404, {"error": "not found"})


class _Server(LoopbackServer):
    webhook: LandingWebhook


class LandingWebhook:
    """The receiver: an HTTP server on 127.0.0.1 in daemon threads plus its ChangeRecorder."""

    def __init__(self, settings: Settings, token: SecretStr, landing: LandingPrefix,
                 record: Callable[[list[str]], object], announce: Callable[[Changes], object],
                 window_s: float = 0.2, max_delay_s: float = 2.0):
        self.settings, self.landing = settings, landing
        self._expected = f"Bearer {token.get_secret_value()}".encode()
        self.recorder = ChangeRecorder(record, announce, window_s, max_delay_s)
        self.seen = SeenEvents()
        self._counts = {"received": 0, "rejected": 0, "malformed": 0, "duplicates": 0}
        self._lock = threading.Lock()
        self._server: _Server | None = None

    @classmethod
    def for_settings(cls, settings: Settings, token: SecretStr, **options) -> LandingWebhook:
        """Recording into this namespace's change feed, announcing with hybridops.landing.changed."""
        zone = S3Store(settings.landing_uri, settings)
        store = artifact_store(settings)
        return cls(settings, token, LandingPrefix(zone.bucket, zone.prefix),
                   record=lambda keys: record_changes(store, keys, SOURCE),
                   announce=lambda changes: landing_changed(settings, announcement(changes)), **options)

    @property
    def port(self) -> int:
        return self._server.port if self._server else self.settings.landing_webhook_port

    def authorized(self, header: str) -> bool:
        if hmac.compare_digest(header.encode(), self._expected):
            return True
        self.count("rejected")
        return False

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def health(self) -> dict:
        with self._lock:
            counts = dict(self._counts)
        return {"status": "ok", "namespace": self.settings.namespace, "landing": self.settings.landing_uri,
                "port": self.port} | counts | self.recorder.stats

    def start(self, port: int | None = None) -> LandingWebhook:
        """Listen on 127.0.0.1 (the settings' port unless given; 0 picks a free one). OSError if taken."""
        if self._server is not None:
            raise RuntimeError("the landing webhook is already started")
        self._server = _Server(self.settings.landing_webhook_port if port is None else port, _Handler)
        self._server.webhook = self
        self.recorder.start()
        self._server.start("landing-webhook")
        return self

    def stop(self) -> None:
        """Stop accepting, then record and announce what was accepted."""
        if self._server is not None:
            self._server.stop()
        self.recorder.stop()
        self._drain_events()

    @staticmethod
    def _drain_events() -> None:
        """Send queued Prefect events before the process may exit."""
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)

    def __enter__(self) -> LandingWebhook:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_landing_webhook(settings: Settings,
                          on_event: Callable[[str], None] = lambda _: None) -> LandingWebhook | None:
    """`serve`'s receiver, when the landing zone is on S3 and a token is known (never unauthenticated);
    None otherwise, with the reason told."""
    if not settings.landing_uri.startswith("s3://"):
        return None  # a folder landing zone is watched through filesystem notifications
    token = webhook_token(settings)
    if token is None:
        on_event("landing webhook off: no token (set HYBRIDOPS_LANDING_WEBHOOK_TOKEN, or `hybridops up` makes one)")
        return None
    try:
        hook = LandingWebhook.for_settings(settings, token).start()
    except OSError as exc:
        on_event(f"landing webhook off: port {settings.landing_webhook_port} on 127.0.0.1 unavailable ({exc}); "
                 "the watcher's fallback listing still notices every landing")
        return None
    on_event(f"landing webhook on 127.0.0.1:{hook.port}{NOTIFY_PATH}")
    return hook
