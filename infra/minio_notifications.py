"""How the local MinIO reaches the landing webhook: its notification targets, the shared secret, and which
objects notify (the bucket notification configuration).

MinIO takes notification targets from its environment only at start, so the targets are part of how `up`
starts MinIO. Two targets, both posting to the webhook `hybridops serve` hosts with the same token:
- HYBRIDOPS has a queue dir: events raised while nothing listens wait on disk and are sent oldest first, one
  per POST. That store is replayed on a fixed 3 s ticker (MinIO's internal/store), so every event waits
  0-3 s even when the webhook is up: durable but slow.
- HYBRIDOPSFAST has none: MinIO sends at once, and an event the webhook misses is gone.
Every event goes to both; the webhook records the first copy and drops the other (same bucket, key, event
and sequencer), so a landing is noticed at once when `serve` is up and still arrives from the queue when it
was not. Which objects notify is per bucket: each namespace adds its two queue configurations (its landing
prefix, one per target) and keeps the other namespaces' entries.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from hybridops.infra.local_secrets import create_secret_file
from hybridops.tasks.core.errors import BadInputError, ServiceUnavailableError
from hybridops.tasks.core.settings import Settings

WEBHOOK_ID = "HYBRIDOPS"
FAST_WEBHOOK_ID = "HYBRIDOPSFAST"
WEBHOOK_ARN = f"arn:minio:sqs::{WEBHOOK_ID}:webhook"
FAST_WEBHOOK_ARN = f"arn:minio:sqs::{FAST_WEBHOOK_ID}:webhook"
NOTIFY_PATH = "/landing/minio"
HEALTH_PATH = "/landing/health"
NOTIFY_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
QUEUE_LIMIT = 100_000
"""Events MinIO keeps while the webhook is down (its own default, stated); beyond it MinIO drops new events
and the watcher's fallback listing finds those changes."""
TOKEN_VAR = f"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{WEBHOOK_ID}"
FAST_TOKEN_VAR = f"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{FAST_WEBHOOK_ID}"


def webhook_url(settings: Settings, path: str = NOTIFY_PATH) -> str:
    return f"http://127.0.0.1:{settings.landing_webhook_port}{path}"


def token_file(settings: Settings) -> Path:
    return settings.run_dir / "landing-webhook.token"


def _checked(token: str, origin: str) -> SecretStr:
    """MinIO sends a one-word token as `Bearer <token>` and a longer one differently (or not at all)."""
    if not re.fullmatch(r"[!-~]{16,}", token):
        raise BadInputError(f"the landing webhook token ({origin}) must be one word of at least 16 printable "
                            "ASCII characters")
    return SecretStr(token)


def webhook_token(settings: Settings) -> SecretStr | None:
    """The shared secret: configured, else the one `up` generated under $HOME/run; None when neither exists."""
    if settings.landing_webhook_token is not None:
        return _checked(settings.landing_webhook_token.get_secret_value(), "HYBRIDOPS_LANDING_WEBHOOK_TOKEN")
    try:
        return _checked(token_file(settings).read_text().strip(), str(token_file(settings)))
    except FileNotFoundError:
        return None


def ensure_webhook_token(settings: Settings) -> SecretStr:
    """The shared secret, generated once into a file only this user may read when none is configured."""
    existing = webhook_token(settings)
    if existing is not None:
        return existing
    create_secret_file(token_file(settings))
    return webhook_token(settings)


def minio_target_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    """Both webhook targets' settings for MinIO's environment, except the token (see minio_token_env)."""
    return {
        f"MINIO_NOTIFY_WEBHOOK_ENABLE_{WEBHOOK_ID}": "on",
        f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{WEBHOOK_ID}": webhook_url(settings),
        # a dot folder inside the data dir: kept with MinIO's data, never listed as a bucket
        f"MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{WEBHOOK_ID}": str((data_dir / ".hybridops-notify").resolve()),
        f"MINIO_NOTIFY_WEBHOOK_QUEUE_LIMIT_{WEBHOOK_ID}": str(QUEUE_LIMIT),
        f"MINIO_NOTIFY_WEBHOOK_ENABLE_{FAST_WEBHOOK_ID}": "on",
        f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{FAST_WEBHOOK_ID}": webhook_url(settings),
    }


def minio_token_env(token: SecretStr) -> dict[str, str]:
    """The shared secret for both targets (MinIO's environment only: never argv, never a log)."""
    return {TOKEN_VAR: token.get_secret_value(), FAST_TOKEN_VAR: token.get_secret_value()}


def notifies(settings: Settings) -> bool:
    """The landing zone is an S3 prefix on the MinIO `hybridops up` runs (AWS: see infra/PRODUCTION.md)."""
    return settings.landing_uri.startswith("s3://") and settings.s3_endpoint_is_local


def _queue_config_ids(settings: Settings) -> dict[str, str]:
    """Queue configuration id -> target ARN, for this namespace's landing prefix."""
    base = f"hybridops-{settings.namespace}-landing"
    return {base: WEBHOOK_ARN, f"{base}-fast": FAST_WEBHOOK_ARN}


def _shape(entry: dict) -> tuple[str, tuple[str, ...], str]:
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    prefix = next((r["Value"] for r in rules if r["Name"].lower() == "prefix"), "")
    return entry["QueueArn"], tuple(sorted(entry["Events"])), prefix


def configure_bucket_notifications(settings: Settings) -> str:
    """Make the landing bucket notify the webhook target about this namespace's landing prefix; idempotent,
    other namespaces' entries kept. 'configured' or 'unchanged'; ServiceUnavailableError when MinIO refuses
    (e.g. a MinIO started before it had the target: restart it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from hybridops.tasks.core.object_store import S3Store

    landing = S3Store(settings.landing_uri, settings)
    ids = _queue_config_ids(settings)
    rules = {"Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": landing.prefix}]}}} if landing.prefix else {}
    wanted = [{"Id": config_id, "QueueArn": arn, "Events": list(NOTIFY_EVENTS)} | rules for config_id, arn in ids.items()]
    try:
        current = landing.client.get_bucket_notification_configuration(Bucket=landing.bucket)
        queues = current.get("QueueConfigurations", [])
        mine = {q.get("Id"): q for q in queues if q.get("Id") in ids}
        if len(mine) == len(wanted) and all(_shape(mine[w["Id"]]) == _shape(w) for w in wanted):
            return "unchanged"
        others = [q for q in queues if q.get("Id") not in ids]
        landing.client.put_bucket_notification_configuration(
            Bucket=landing.bucket, NotificationConfiguration={"QueueConfigurations": [*others, *wanted]})
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailableError(
            f"bucket notifications for {settings.landing_uri} not configured ({exc}); if MinIO was started "
            f"before it had the webhook target, restart it (`hybridops down && hybridops up`)") from exc
    return "configured"
