"""Bucket versioning for the production topology's MinIO, so the adapter registry can be restored.

An overwritten or deleted object (the champion pointer, an adapter's weights, a landed document) keeps its older
versions: infra/PRODUCTION.md's runbook brings a lost registry back from them. A lifecycle rule expires
noncurrent versions after `s3_noncurrent_days` (and the delete markers left with no version behind them), so
objects hybridops rewrites often (change-feed cursors, caches) do not pile up. `up --topology production`
applies both to the bucket it manages (idempotent); on AWS, set them on the bucket yourself.
"""

from __future__ import annotations

from hybridops.tasks.core.settings import Settings

RULE_ID = "hybridops-noncurrent-versions"


def enable_versioning(settings: Settings) -> dict:
    """Versioning on, and the expiry rule for noncurrent versions; returns what the bucket now says."""
    from hybridops.tasks.core.object_store import s3_client

    client = s3_client(settings)
    bucket = settings.s3_bucket
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [{
        "ID": RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": settings.s3_noncurrent_days},
        "Expiration": {"ExpiredObjectDeleteMarker": True},
    }]})
    return {"versioning": client.get_bucket_versioning(Bucket=bucket).get("Status"),
            "noncurrent_days": settings.s3_noncurrent_days}
