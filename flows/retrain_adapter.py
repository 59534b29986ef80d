"""Flow `retrain_adapter`: started by `hybridops.behaviour.drift` events and a slow schedule.

Steps, holding the namespace's strict `adapters` concurrency slot: build training data (contract, quarantine)
-> skip when no drift and no new data -> train a LoRA challenger -> register it -> run the SAME held-out suite
with the same retrieval on challenger and champion -> decide -> promote or reject; then artifacts (loss curve,
decision with evidence) and `hybridops.adapter.promoted` or `hybridops.adapter.rejected`.
"""

from __future__ import annotations

import json

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NONE
from prefect.concurrency.sync import concurrency
from pydantic import BaseModel, Field, field_validator

from hybridops.flows.orchestration.events import adapter_decided
from hybridops.flows.orchestration.limits import ensure_global_limit
from hybridops.tasks.behaviour.retrain import RetrainOutcome, RetrainRequest, decision_markdown, decision_rows, loss_sparkline, retrain
from hybridops.tasks.core.settings import Settings, load_settings
from hybridops.tasks.behaviour.training import TrainProgress


class PrefectReporter:
    """Stages go to the run log; training steps and eval cases to Prefect progress artifacts."""

    def __init__(self, logger):
        self.logger = logger
        self.artifacts: dict[str, object] = {}

    def stage(self, message: str) -> None:
        self.logger.info(message)

    def _progress(self, name: str, fraction: float, description: str) -> None:
        if name not in self.artifacts:
            self.artifacts[name] = create_progress_artifact(0.0, description=description)
        update_progress_artifact(self.artifacts[name], round(100 * fraction, 1), description=description)

    def train_step(self, progress: TrainProgress) -> None:
        self._progress("train", progress.step / progress.total,
                       f"training step {progress.step}/{progress.total}, loss {progress.loss:.3f}")
        if progress.step % 5 == 0 or progress.step == progress.total:
            self.logger.info("step %d/%d loss %.4f (%.0f s)", progress.step, progress.total, progress.loss,
                             progress.seconds)

    def eval_case(self, label: str, done: int, total: int) -> None:
        self._progress(f"eval {label}", done / max(total, 1), f"eval {label}: {done}/{total} cases")


def adapters_limit(settings: Settings) -> str:
    """One strict slot per namespace: retrains and rollbacks never move the champion pointer concurrently."""
    return f"{settings.namespace}-adapters"


def as_task(fn, *args, **kwargs):
    """Run one retrain step as a coarse Prefect task named after it (inputs are live objects: no caching)."""
    return task(fn, name=fn.__name__.replace("_", "-"), cache_policy=NONE)(*args, **kwargs)


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
    with concurrency(ensure_global_limit(adapters_limit(settings)), occupy=1, strict=True):
        outcome = retrain(settings, request, step=as_task, reporter=PrefectReporter(get_run_logger()))
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
    adapter_decided(settings, outcome)


if __name__ == "__main__":
    retrain_adapter()
