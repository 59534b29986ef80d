"""Global concurrency limits the flows rely on: created when missing, since a strict limit must exist."""

from __future__ import annotations


def ensure_global_limit(name: str, limit: int = 1) -> str:
    """Create the named global concurrency limit with `limit` slots unless it exists; return its name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:  # created concurrently by another run
                pass
    return name
