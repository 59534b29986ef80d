"""How the local MinIO reaches the landing webhook: its notification target, the shared secret, and which
objects notify (the bucket notification configuration).

MinIO takes notification targets from its environment only at start, so the target is part of how `up`
starts MinIO: id HYBRIDOPS, endpoint = the webhook `hybridops serve` hosts, the token, and a queue dir, so
events raised while nothing listens wait on disk (MinIO sends them oldest first, one per POST, retrying
every 3 s). Which objects notify is per bucket: each namespace adds one queue configuration (its landing
prefix) to the bucket's configuration and keeps the other namespaces' entries.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from hybridops.infra.local_secrets import create_secret_file
from hybridops.tasks.core.errors import BadInputError, ServiceUnavailableError
from hybridops.tasks.core.settings import Settings

WEBHOOK_ID = "HYBRIDOPS"
WEBHOOK_ARN = f"arn:minio:sqs::{WEBHOOK_ID}:webhook"
NOTIFY_PATH = "/landing/minio"
HEALTH_PATH = "/landing/health"
NOTIFY_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
QUEUE_LIMIT = 100_000
"""Events MinIO keeps while the webhook is down (its own default, stated); beyond it MinIO drops new events
and the watcher's fallback listing finds those changes."""
TOKEN_VAR = f"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{WEBHOOK_ID}"


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
    """The webhook target's settings for MinIO's environment, except the token (see TOKEN_VAR)."""
    return {
        f"MINIO_NOTIFY_WEBHOOK_ENABLE_{WEBHOOK_ID}": "on",
        f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{WEBHOOK_ID}": webhook_url(settings),
        # a dot folder inside the data dir: kept with MinIO's data, never listed as a bucket
        f"MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{WEBHOOK_ID}": str((data_dir / ".hybridops-notify").resolve()),
        f"MINIO_NOTIFY_WEBHOOK_QUEUE_LIMIT_{WEBHOOK_ID}": str(QUEUE_LIMIT),
    }


def notifies(settings: Settings) -> bool:
    """The landing zone is an S3 prefix on the MinIO `hybridops up` runs (AWS: see infra/PRODUCTION.md)."""
    return settings.landing_uri.startswith("s3://") and settings.s3_endpoint_is_local


def _queue_config_id(settings: Settings) -> str:
    return f"hybridops-{settings.namespace}-landing"


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
    wanted = {"Id": _queue_config_id(settings), "QueueArn": WEBHOOK_ARN, "Events": list(NOTIFY_EVENTS)}
    if landing.prefix:
        wanted["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": landing.prefix}]}}
    try:
        current = landing.client.get_bucket_notification_configuration(Bucket=landing.bucket)
        queues = current.get("QueueConfigurations", [])
        mine = [q for q in queues if q.get("Id") == wanted["Id"]]
        if len(mine) == 1 and _shape(mine[0]) == _shape(wanted):
            return "unchanged"
        others = [q for q in queues if q.get("Id") != wanted["Id"]]
        landing.client.put_bucket_notification_configuration(
            Bucket=landing.bucket, NotificationConfiguration={"QueueConfigurations": [*others, wanted]})
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailableError(
            f"bucket notifications for {settings.landing_uri} not configured ({exc}); if MinIO was started "
            f"before it had the webhook target, restart it (`hybridops down && hybridops up`)") from exc
    return "configured"
