"""Flow `rollback_adapter` (manual): restore the previous champion adapter from the pointer history."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event
from pydantic import BaseModel, Field

from hybridops.flows.orchestration.limits import ensure_global_limit
from hybridops.flows.retrain_adapter import adapters_limit
from hybridops.tasks.behaviour.adapters import rollback
from hybridops.tasks.core.settings import load_settings


class RollbackParams(BaseModel):
    """What the UI's run form shows for rollback-adapter."""

    reason: str = Field("manual rollback", min_length=1, description="Why the champion is rolled back "
                        "(kept in the pointer history).")


@flow(name="rollback_adapter")
def rollback_adapter(params: RollbackParams = RollbackParams()) -> dict:
    """Move the champion pointer back one step (verifying the restored adapter) and say so."""
    settings = load_settings()
    with concurrency(ensure_global_limit(adapters_limit(settings)), occupy=1, strict=True):
        pointer = rollback(settings, reason=params.reason)
    create_markdown_artifact(f"Champion is now `{pointer.version or 'base model'}`: {pointer.current.reason}",
                             key=f"{settings.namespace.replace('_', '-')}-adapter-rollback",
                             description="adapter rollback")
    emit_event(event="hybridops.adapter.rolled_back",
               resource={"prefect.resource.id": f"hybridops.{settings.namespace}.adapter"},
               payload={"version": pointer.version, "reason": pointer.current.reason})
    return {"champion": pointer.version, "history": [e.version for e in pointer.history]}


if __name__ == "__main__":
    rollback_adapter()
