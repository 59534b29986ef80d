"""The retrain story as plain steps: data -> (skip?) -> train -> register -> evaluate both -> decide -> apply.

`retrain()` composes the steps once; the CLI calls it directly, the Prefect flow passes a `step` runner that
wraps each step in a Prefect task and a reporter that writes progress artifacts.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from hybridops.tasks.behaviour.adapters import AdapterManifest
from hybridops.tasks.behaviour.promotion import PromotionDecision, decide
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.behaviour.training import TrainConfig, TrainProgress

if TYPE_CHECKING:
    from hybridops.tasks.behaviour.suite import EvalReport, Suite
    from hybridops.tasks.behaviour.training_data import TrainingData

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetrainRequest(BaseModel):
    """Why and how to retrain: the drifted checks (from the drift event), force, and optional overrides."""

    drifted: list[str] = []
    force: bool = False
    steps: int | None = None
    suite: Path | None = None
    include_interactions: bool = True


class TrainStats(BaseModel):
    steps: int
    seconds: float
    tokens_per_s: float
    final_loss: float | None
    validation_loss: float | None


class RetrainOutcome(BaseModel):
    """What `hybridops retrain --json` prints and the flow returns."""

    version: str | None
    promoted: bool
    skipped: bool = False
    reason: str
    challenger: dict[str, float] = {}
    champion: dict[str, float] = {}
    champion_version: str | None = None
    drifted: list[str] = []
    train: TrainStats | None = None
    loss_curve: list[float] = []
    dataset: dict[str, Any] = {}
    decision: PromotionDecision | None = None

    def cli_dict(self) -> dict[str, Any]:
        train = self.train.model_dump(include={"steps", "seconds", "tokens_per_s"}) if self.train else None
        return {
            "version": self.version, "promoted": self.promoted, "skipped": self.skipped, "reason": self.reason,
            "challenger": self.challenger, "champion": self.champion, "champion_version": self.champion_version,
            "drifted": self.drifted, "train": train, "dataset": self.dataset,
        }


class Reporter(Protocol):
    """Where progress goes: rich in the CLI, Prefect artifacts in the flow."""

    def stage(self, message: str) -> None: ...
    def train_step(self, progress: TrainProgress) -> None: ...
    def eval_case(self, label: str, done: int, total: int) -> None: ...


class QuietReporter:
    def stage(self, message: str) -> None:
        log.info(message)

    def train_step(self, progress: TrainProgress) -> None:
        pass

    def eval_case(self, label: str, done: int, total: int) -> None:
        pass


Step = Callable[..., Any]


def direct(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The default step runner: just call the function."""
    return fn(*args, **kwargs)


# Steps -----------------------------------------------------------------------------------------------------

def build_data(settings: Settings, include_interactions: bool) -> TrainingData:
    """Training examples from the landing zone's _training/ area and human feedback, contract-checked."""
    from hybridops.tasks.behaviour.training_data import build_training_data

    return build_training_data(settings, include_interactions=include_interactions)


def skip_reason(settings: Settings, data: TrainingData, drifted: list[str], force: bool) -> str | None:
    """Why retraining would be pointless now (None = go): no examples, or no drift and no new data."""
    from hybridops.tasks.behaviour.adapters import list_versions

    if len(data.train) == 0:
        return "no valid training examples"
    if force or drifted:
        return None
    trained = {m.dataset_fingerprint for m in list_versions(settings)}
    if data.fingerprint in trained:
        return "no drift and no new training data since the last adapter"
    return None


def train_challenger(
    settings: Settings, data: TrainingData, cfg: TrainConfig, reporter: Reporter
) -> AdapterManifest:
    """Train a LoRA challenger on the data and register it (not promoted)."""
    from hybridops.tasks.behaviour.adapters import base_model_ref, champion_version, register
    from hybridops.tasks.behaviour.training import train

    with tempfile.TemporaryDirectory(prefix="hybridops-train-") as tmp:
        result = train(settings, cfg, data, Path(tmp) / "adapter", progress=reporter.train_step)
        return register(
            settings, result.adapter_dir, base=base_model_ref(settings), dataset_fingerprint=data.fingerprint,
            dataset_counts={"train": len(data.train), "validation": len(data.validation)}, config=cfg,
            result=result, parent=champion_version(settings),
        )


def evaluate(settings: Settings, suite: Suite, version: str | None, retrieve, reporter: Reporter) -> EvalReport:
    """Run the held-out suite on one adapter version (None = base model) with the shared retrieval."""
    from hybridops.tasks.behaviour.adapters import load_adapter_model
    from hybridops.tasks.behaviour.suite import run_suite
    from hybridops.tasks.behaviour.llm import load_base_model

    model, tokenizer = load_adapter_model(settings, version) if version else load_base_model(settings)
    label = version or "base model"
    return run_suite(settings, suite, model, tokenizer, version, retrieve=retrieve,
                     progress=lambda done, total, _case: reporter.eval_case(label, done, total))


def apply_decision(
    settings: Settings, manifest: AdapterManifest, challenger: EvalReport, decision: PromotionDecision
) -> bool:
    """Record scores, decision and drift baseline of the challenger; promote it when the decision says so.

    The baseline is kept even for a rejected challenger, so a later manual promotion has one."""
    from hybridops.tasks.behaviour.adapters import promote, record_evaluation
    from hybridops.tasks.behaviour.drift import record_baseline

    record_evaluation(settings, manifest.version, challenger.pass_rates(), challenger.n, decision.model_dump())
    record_baseline(settings, challenger)
    if not decision.promote:
        return False
    promote(settings, manifest.version, decision.reason, challenger.pass_rates())
    return True


def load_held_out_suite(settings: Settings, path: Path | None) -> Suite:
    """The golden suite only (no sampled interactions): challenger and champion face identical cases."""
    from hybridops.tasks.behaviour.suite import load_suite, suite_path

    return load_suite(suite_path(settings, path))


# The composition -------------------------------------------------------------------------------------------

def retrain(
    settings: Settings, request: RetrainRequest, *, step: Step = direct, reporter: Reporter | None = None
) -> RetrainOutcome:
    """Retrain when warranted and promote the challenger only if it beats the champion on the same suite."""
    from hybridops.tasks.behaviour.adapters import champion_version, verify
    from hybridops.tasks.behaviour.suite import make_retriever

    reporter = reporter or QuietReporter()
    reporter.stage("building training data")
    data = step(build_data, settings, request.include_interactions)
    dataset = {**data.counts, "fingerprint": data.fingerprint, "origins": data.origins}
    skip = skip_reason(settings, data, request.drifted, request.force)
    if skip:
        return RetrainOutcome(version=None, promoted=False, skipped=True, reason=skip, drifted=request.drifted,
                              dataset=dataset, champion_version=champion_version(settings))

    suite = load_held_out_suite(settings, request.suite)  # fail before minutes of training, not after
    incumbent = champion_version(settings)
    if incumbent:
        verify(settings, incumbent)  # a tampered champion stops the run here, with a clear error
    cfg = TrainConfig.from_settings(settings, **({"steps": request.steps} if request.steps else {}))
    reporter.stage(f"training a LoRA challenger: {cfg.steps} steps on {len(data.train)} examples")
    manifest = step(train_challenger, settings, data, cfg, reporter)

    retrieve = make_retriever(settings)  # memoised: both models see exactly the same passages
    reporter.stage(f"evaluating challenger {manifest.version} and champion {incumbent or 'base model'}")
    challenger = step(evaluate, settings, suite, manifest.version, retrieve, reporter)
    champion = step(evaluate, settings, suite, incumbent, retrieve, reporter)

    decision = decide(challenger.pass_rates(), champion.pass_rates(), request.drifted, settings.promotion_tolerance)
    promoted = step(apply_decision, settings, manifest, challenger, decision)
    reporter.stage(("promoted " if promoted else "rejected ") + f"{manifest.version}: {decision.reason}")
    return RetrainOutcome(
        version=manifest.version, promoted=promoted, reason=decision.reason,
        challenger=challenger.pass_rates(), champion=champion.pass_rates(), champion_version=incumbent,
        drifted=request.drifted, loss_curve=manifest.train.loss_curve, dataset=dataset, decision=decision,
        train=TrainStats(steps=manifest.train.steps, seconds=manifest.train.seconds,
                         tokens_per_s=manifest.train.tokens_per_s, final_loss=manifest.train.final_loss,
                         validation_loss=manifest.train.validation_loss),
    )


# Human-readable evidence (Prefect artifacts, CLI) ---------------------------------------------------------

def decision_rows(outcome: RetrainOutcome) -> list[dict[str, Any]]:
    """One row per check: both pass rates, delta, whether it was a target and the verdict."""
    if not outcome.decision:
        return []
    return [
        {"check": c.check, "challenger": round(c.challenger, 3),
         "champion": None if c.champion is None else round(c.champion, 3),
         "delta": c.delta, "target": c.target, "verdict": c.verdict}
        for c in outcome.decision.checks
    ]


def decision_markdown(outcome: RetrainOutcome) -> str:
    """The promotion decision with its evidence, for a Prefect markdown artifact."""
    verdict = "skipped" if outcome.skipped else ("PROMOTED" if outcome.promoted else "REJECTED")
    lines = [
        f"## Challenger {outcome.version or '-'}: {verdict}",
        "",
        f"**Reason:** {outcome.reason}",
        "",
        f"Champion before: `{outcome.champion_version or 'base model'}` · drifted checks: "
        f"{', '.join(outcome.drifted) or 'none'} · data: {outcome.dataset}",
    ]
    if outcome.train:
        lines += ["", f"Training: {outcome.train.steps} steps in {outcome.train.seconds:.0f} s "
                      f"({outcome.train.tokens_per_s:.0f} tokens/s), final loss {outcome.train.final_loss}, "
                      f"validation loss {outcome.train.validation_loss}"]
    rows = decision_rows(outcome)
    if rows:
        lines += ["", "| check | challenger | champion | delta | target | verdict |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['check']} | {r['challenger']} | {r['champion']} | {r['delta']} | {r['target']} | "
                  f"{r['verdict']} |" for r in rows]
    return "\n".join(lines)


def loss_sparkline(losses: list[float]) -> str:
    """The loss curve as one line of block characters (Prefect artifacts have no charts)."""
    if not losses:
        return ""
    blocks = "▁▂▃▄▅▆▇█"
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    return "".join(blocks[min(7, int((x - low) / span * 7.999))] for x in losses)
