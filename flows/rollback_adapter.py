"""Flow `rollback_adapter` (manual): restore the previous champion adapter from the pointer history.

The story (tasks/behaviour/champion.py, under the namespace's adapters lock) is the one
`hybridops adapters rollback` runs; the flow adds an artifact and the hybridops.adapter.rolled_back event.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from hybridops.flows.orchestration.events import adapter_rolled_back
from hybridops.flows.orchestration.reporting import PrefectReporter
from hybridops.tasks.behaviour.champion import rollback_champion
from hybridops.tasks.core.settings import load_settings


class RollbackParams(BaseModel):
    """What the UI's run form shows for rollback-adapter."""

    reason: str = Field("manual rollback", min_length=1, description="Why the champion is rolled back "
                        "(kept in the pointer history).")


@flow(name="rollback_adapter")
def rollback_adapter(params: RollbackParams = RollbackParams()) -> dict:
    """Move the champion pointer back one step (verifying the restored adapter) and say so."""
    settings = load_settings()
    pointer = rollback_champion(settings, reason=params.reason, reporter=PrefectReporter())
    create_markdown_artifact(f"Champion is now `{pointer.version or 'base model'}`: {pointer.current.reason}",
                             key=f"{settings.namespace.replace('_', '-')}-adapter-rollback",
                             description="adapter rollback")
    adapter_rolled_back(settings, pointer.version, pointer.current.reason)
    return {"champion": pointer.version, "history": [e.version for e in pointer.history]}


if __name__ == "__main__":
    rollback_adapter()
