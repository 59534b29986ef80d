"""Flow `retrain_adapter`: started by `hybridops.behaviour.drift` events and a slow schedule.

The story is tasks/behaviour/retrain.py (the same one `hybridops retrain` runs, under the namespace's
`adapters` lock): build training data (contract, quarantine) -> skip when no drift and no new data -> train
a LoRA challenger -> register it -> run the SAME held-out suite with the same retrieval on challenger and
champion (and, with the transfer gate on, the out-of-domain transfer suite on both) -> decide -> promote or
reject; then artifacts (loss curve, decision with evidence, in-domain and out-of-domain tables) and
`hybridops.adapter.promoted` or `hybridops.adapter.rejected`.
"""

from __future__ import annotations

import json

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field, field_validator

from hybridops.flows.orchestration.events import adapter_decided
from hybridops.flows.orchestration.reporting import PrefectReporter, prefect_step
from hybridops.tasks.behaviour.retrain import (
    RetrainOutcome,
    RetrainRequest,
    decision_markdown,
    decision_rows,
    loss_sparkline,
    retrain,
    transfer_rows,
)
from hybridops.tasks.core.settings import Settings, load_settings


class RetrainParams(BaseModel):
    """What the UI's run form shows for retrain-adapter (the drift trigger fills in drifted_checks)."""

    drifted_checks: list[str] = Field([], description="Checks that drifted and the challenger must improve "
                                      "(the drift event fills this in; empty for a scheduled run).")
    force: bool = Field(False, description="Train even when there is no drift and no new training data.")
    steps: int | None = Field(None, ge=1, description="Training steps for this run (default: settings.train_steps).")

    @field_validator("drifted_checks", mode="before")
    @classmethod
    def _check_names(cls, value: object) -> object:
        """A trigger may render the list as JSON text ('["a"]') or 'a,b'; None means none."""
        if value is None:
            return []
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        return value


# log_prints stays off: dill (inside datasets) captures dis.dis() output from stdout, and a print-capturing run
# would send that bytecode disassembly into the run log instead
@flow(name="retrain_adapter")
def retrain_adapter(params: RetrainParams = RetrainParams()) -> dict:
    """Retrain a LoRA challenger on drift or new data; promote it only if it beats the champion."""
    settings = load_settings()
    request = RetrainRequest(drifted=params.drifted_checks, force=params.force, steps=params.steps)
    outcome = retrain(settings, request, step=prefect_step, reporter=PrefectReporter())
    publish(settings, outcome)
    return outcome.cli_dict()


def publish(settings: Settings, outcome: RetrainOutcome) -> None:
    """Artifacts for people, an event for automations (a skipped run decides nothing)."""
    key = settings.namespace.replace("_", "-")
    create_markdown_artifact(decision_markdown(outcome), key=f"{key}-adapter-decision",
                             description="Promotion decision with per-check evidence")
    if outcome.skipped:
        return
    create_table_artifact([{"step": i + 1, "loss": x} for i, x in enumerate(outcome.loss_curve)],
                          key=f"{key}-adapter-loss-curve",
                          description=f"training loss {loss_sparkline(outcome.loss_curve)}")
    create_table_artifact(decision_rows(outcome), key=f"{key}-adapter-checks", description="challenger vs champion")
    if outcome.transfer_challenger:
        create_table_artifact(transfer_rows(outcome), key=f"{key}-adapter-transfer-checks",
                              description="challenger vs champion, out-of-domain (transfer suite)")
    adapter_decided(settings, outcome)


if __name__ == "__main__":
    retrain_adapter()
