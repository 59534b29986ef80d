"""The retrain story as plain steps: data -> (skip?) -> train -> register -> evaluate both -> decide -> apply.

"Evaluate both" is twice when the transfer gate is on (settings.transfer_suite): the in-domain held-out suite
over the user's index, then the out-of-domain transfer suite over its side index (tasks/behaviour/transfer.py);
and once more, small, when humans corrected replies: those corrections are regression cases
(tasks/behaviour/regression_set.py) both models answer, with the same retrieval and reply caches.

`retrain()` composes the steps once, under the namespace's `adapters` lock (so a CLI run and a flow run never
move the champion pointer at the same time); the CLI calls it directly, the Prefect flow passes a `step`
runner that wraps each step in a Prefect task and a reporter that writes progress artifacts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hybridops.tasks.behaviour.adapter_loading import load_version_model
from hybridops.tasks.behaviour.adapters import (
    AdapterIntegrityError,
    AdapterManifest,
    ChampionMovedError,
    base_model_ref,
    champion_version,
    list_versions,
    promote,
    record_evaluation,
    register,
    undecided_challenger,
    verify,
)
from hybridops.tasks.behaviour.eval_history import record_baseline
from hybridops.tasks.behaviour.promotion import CheckComparison, PromotionDecision, decide
from hybridops.tasks.behaviour.regression_set import load_regression_set, record_fixed
from hybridops.tasks.behaviour.replay import save_replay_snapshot
from hybridops.tasks.behaviour.reply_cache import ReplyCache
from hybridops.tasks.behaviour.suite import EvalReport, Suite, load_suite, make_retriever, run_suite, suite_path
from hybridops.tasks.behaviour.training import TrainConfig, TrainProgress, train
from hybridops.tasks.behaviour.transfer import load_transfer_suite, prepare_transfer_index
from hybridops.tasks.behaviour.training_data import TrainingData, build_training_data
from hybridops.tasks.core.locks import namespace_lock
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.story import QuietReporter, Reporter, Step, direct


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
    stopped_early: bool = False  # the held-out probe agreed before the maximum step count
    peak_memory_gb: float | None = None


class RetrainOutcome(BaseModel):
    """What `hybridops retrain --json` prints and the flow returns."""

    version: str | None
    promoted: bool
    skipped: bool = False
    reason: str
    challenger: dict[str, float] = {}
    champion: dict[str, float] = {}
    transfer_challenger: dict[str, float] = {}  # out-of-domain (transfer suite) pass rates; {} when the gate is off
    transfer_champion: dict[str, float] = {}
    champion_version: str | None = None
    drifted: list[str] = []
    train: TrainStats | None = None
    loss_curve: list[float] = []
    dataset: dict[str, Any] = {}
    decision: PromotionDecision | None = None
    # per evaluation ("champion", "transfer champion", ...): replies reused from the reply cache / cases; an
    # unchanged champion on an unchanged index answers from it instead of being evaluated again
    reused: dict[str, str] = {}

    def cli_dict(self) -> dict[str, Any]:
        train = self.train.model_dump(include={"steps", "seconds", "tokens_per_s", "stopped_early", "peak_memory_gb"}) \
            if self.train else None
        return {
            "version": self.version, "promoted": self.promoted, "skipped": self.skipped, "reason": self.reason,
            "challenger": self.challenger, "champion": self.champion, "champion_version": self.champion_version,
            "transfer_challenger": self.transfer_challenger, "transfer_champion": self.transfer_champion,
            "drifted": self.drifted, "train": train, "dataset": self.dataset, "reused": self.reused,
        }


# Steps -----------------------------------------------------------------------------------------------------

def build_data(settings: Settings, include_interactions: bool) -> TrainingData:
    """Training examples from the landing zone's _training/ area and human feedback, contract-checked."""
    return build_training_data(settings, include_interactions=include_interactions)


def skip_reason(settings: Settings, data: TrainingData, drifted: list[str], force: bool) -> str | None:
    """Why retraining would be pointless now (None = go): no examples, or no drift and no new data."""
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

    def step_done(p: TrainProgress) -> None:
        reporter.progress("train", p.step, p.total, f"loss {p.loss:.3f}")

    with tempfile.TemporaryDirectory(prefix="hybridops-train-") as tmp:
        result = train(settings, cfg, data, Path(tmp) / "adapter", progress=step_done)
        return register(
            settings, result.adapter_dir, base=base_model_ref(settings), dataset_fingerprint=data.fingerprint,
            dataset_counts={"train": len(data.train), "validation": len(data.validation)}, config=cfg,
            result=result, parent=champion_version(settings),
        )


def evaluate(
    settings: Settings, suite: Suite, version: str | None, retrieve, reporter: Reporter, purpose: str = "eval"
) -> EvalReport:
    """Run a suite on one adapter version (None = base model) with the shared retrieval. The model comes from
    `settings` (the user's store); `retrieve` may search another index (the transfer suite's side index)."""
    model, tokenizer = load_version_model(settings, version)
    label = f"{purpose} {version or 'base model'}"
    cache = ReplyCache.open(settings, version) if settings.eval_reuse_replies else None  # the champion: mostly hits
    return run_suite(settings, suite, model, tokenizer, version, retrieve=retrieve, cache=cache,
                     progress=lambda done, total, _case: reporter.progress(label, done, total))


def judge_transfer(
    settings: Settings, suite: Suite, challenger: str, champion: str | None, step: Step, reporter: Reporter
) -> tuple[EvalReport, EvalReport]:
    """Both models on the out-of-domain suite, answered from its side index (the models come from the user's
    store, the passages from tasks/behaviour/transfer.py's side namespace)."""
    reporter.stage("transfer: indexing the out-of-domain corpus in its side namespace")
    side = step(prepare_transfer_index, settings)
    retrieve = make_retriever(side)  # memoised: both models see the same passages
    reporter.stage(f"transfer: evaluating challenger {challenger} and champion {champion or 'base model'} "
                   f"on the out-of-domain suite")
    return (step(evaluate, settings, suite, challenger, retrieve, reporter, "transfer eval"),
            step(evaluate, settings, suite, champion, retrieve, reporter, "transfer eval"))


def judge_corrections(
    settings: Settings, suite: Suite, challenger: str, champion: str | None, retrieve, step: Step, reporter: Reporter
) -> tuple[EvalReport, EvalReport]:
    """Both models on the human corrections of the regression set (same retrieval as the held-out suite)."""
    reporter.stage(f"regression set: answering {len(suite.cases)} human corrections with challenger {challenger} "
                   f"and champion {champion or 'base model'}")
    return (step(evaluate, settings, suite, challenger, retrieve, reporter, "regression eval"),
            step(evaluate, settings, suite, champion, retrieve, reporter, "regression eval"))


CHAMPION_CHANGED = "champion changed during the run"


def apply_decision(
    settings: Settings, manifest: AdapterManifest, challenger: EvalReport, decision: PromotionDecision,
    incumbent: str | None = None,
) -> PromotionDecision:
    """Promote the challenger when the decision says so, then record its scores, final decision and drift
    baseline (the baseline is kept even for a rejected challenger, so a later manual promotion has one).

    The promotion is a compare-and-swap against `incumbent`, the champion the challenger was judged
    against: if the pointer moved meanwhile, nothing is promoted and the decision becomes a rejection.
    Promoting first and recording last means a run that dies in between leaves either an undecided
    challenger (picked up by the next retrain) or a promoted champion (not pending), never a recorded
    "promote" that did not happen. A promotion adds the cases it fixed to the regression set."""
    if decision.promote:
        try:
            promote(settings, manifest.version, decision.reason, challenger.pass_rates(),
                    expected_champion=incumbent)
        except ChampionMovedError as exc:
            decision = decision.model_copy(update={"promote": False, "reason": str(exc)})  # "champion changed during the run: ..."
        else:
            record_fixed(settings, challenger.suite, manifest.version, decision)
    record_evaluation(settings, manifest.version, challenger.pass_rates(), challenger.n, decision.model_dump())
    record_baseline(settings, challenger)
    return decision


def load_held_out_suite(settings: Settings, path: Path | None) -> Suite:
    """The golden suite only (no sampled interactions): challenger and champion face identical cases."""
    return load_suite(suite_path(settings, path))


# The composition -------------------------------------------------------------------------------------------

def retrain(
    settings: Settings, request: RetrainRequest, *, step: Step = direct, reporter: Reporter | None = None
) -> RetrainOutcome:
    """Retrain when warranted and promote the challenger only if it beats the champion on the same suite.

    Holds the namespace's `adapters` lock throughout: the champion it compares against cannot move meanwhile."""
    reporter = reporter or QuietReporter()

    def waiting(holder: str) -> None:
        reporter.stage(f"waiting for the adapters lock, held by {holder}")

    with namespace_lock(settings, "adapters", "retrain", on_wait=waiting):
        return _retrain(settings, request, step, reporter)


def _retrain(settings: Settings, request: RetrainRequest, step: Step, reporter: Reporter) -> RetrainOutcome:
    reporter.stage("building training data")
    data = step(build_data, settings, request.include_interactions)
    dataset = {**data.counts, "fingerprint": data.fingerprint, "origins": data.origins,
               "augmented_kinds": data.augmented}
    # A run that died after registering its challenger left it undecided: decide that one, do not train again.
    pending = undecided_challenger(settings, data.fingerprint) if len(data.train) else None
    skip = None if pending else skip_reason(settings, data, request.drifted, request.force)
    if skip:
        return RetrainOutcome(version=None, promoted=False, skipped=True, reason=skip, drifted=request.drifted,
                              dataset=dataset, champion_version=champion_version(settings))

    suite = load_held_out_suite(settings, request.suite)  # fail before minutes of training, not after
    regression = load_regression_set(settings, suite)  # fixed when the run starts: feedback arriving later waits
    transfer_suite = load_transfer_suite(settings)  # None: the transfer gate is off
    incumbent = champion_version(settings)
    if incumbent:
        verify(settings, incumbent)  # a tampered champion stops the run here, with a clear error
    if pending:
        try:
            verify(settings, pending.version)
        except AdapterIntegrityError as exc:  # decided for good (refused), so it never blocks a later run
            record_evaluation(settings, pending.version, {}, 0, {"promote": False, "reason": f"refused: {exc}"})
            reporter.stage(f"undecided challenger {pending.version} refused: {exc}")
            pending = None
    if pending:
        reporter.stage(f"resuming undecided challenger {pending.version} (its run ended before deciding)")
        manifest = pending
    else:
        cfg = TrainConfig.from_settings(settings, **({"steps": request.steps} if request.steps else {}))
        early = f", stopping early once held-out replies agree (from step {cfg.min_steps})" \
            if cfg.early_stopping else ""
        reporter.stage(f"training a LoRA challenger: up to {cfg.steps} steps on {len(data.train)} examples{early}")
        manifest = step(train_challenger, settings, data, cfg, reporter)
    step(save_replay_snapshot, settings, data)  # what this challenger learnt from, replayed into later datasets

    retrieve = make_retriever(settings)  # memoised: both models see exactly the same passages
    reporter.stage(f"evaluating challenger {manifest.version} and champion {incumbent or 'base model'}")
    challenger = step(evaluate, settings, suite, manifest.version, retrieve, reporter)
    champion = step(evaluate, settings, suite, incumbent, retrieve, reporter)
    transfer = None
    if transfer_suite is not None:
        transfer = judge_transfer(settings, transfer_suite, manifest.version, incumbent, step, reporter)
    transfer_rates = {"transfer_challenger": transfer[0].pass_rates(), "transfer_champion": transfer[1].pass_rates()} \
        if transfer else {}
    corrections = None
    if regression.corrections is not None:
        corrections = judge_corrections(settings, regression.corrections, manifest.version, incumbent, retrieve,
                                        step, reporter)

    decision = decide(challenger.cases, champion.cases, request.drifted, settings.promotion_tolerance,
                      transfer[0].cases if transfer else None, transfer[1].cases if transfer else None,
                      settings.transfer_gate_checks, alpha=settings.promotion_alpha, regression=regression.cases,
                      regression_challenger=corrections[0].cases if corrections else (),
                      regression_champion=corrections[1].cases if corrections else ())
    decision = step(apply_decision, settings, manifest, challenger, decision, incumbent)
    promoted = decision.promote
    reports = {"challenger": challenger, "champion": champion,
               **({"transfer challenger": transfer[0], "transfer champion": transfer[1]} if transfer else {}),
               **({"corrections challenger": corrections[0], "corrections champion": corrections[1]}
                  if corrections else {})}
    reporter.stage(("promoted " if promoted else "rejected ") + f"{manifest.version}: {decision.reason}")
    return RetrainOutcome(
        version=manifest.version, promoted=promoted, reason=decision.reason,
        challenger=challenger.pass_rates(), champion=champion.pass_rates(), champion_version=incumbent, **transfer_rates,
        drifted=request.drifted, loss_curve=manifest.train.loss_curve, dataset=dataset, decision=decision,
        reused={name: f"{report.reused}/{report.n}" for name, report in reports.items()},
        train=TrainStats(steps=manifest.train.steps, seconds=manifest.train.seconds,
                         tokens_per_s=manifest.train.tokens_per_s, final_loss=manifest.train.final_loss,
                         validation_loss=manifest.train.validation_loss,
                         stopped_early=manifest.train.stopped_early,
                         peak_memory_gb=manifest.train.peak_memory_gb),
    )


# Human-readable evidence (Prefect artifacts, CLI) ---------------------------------------------------------

def decision_rows(outcome: RetrainOutcome) -> list[dict[str, Any]]:
    """One row per in-domain check: both pass rates, delta, the paired table (b = champion passed and challenger
    failed, c = the reverse, n), the McNemar p-values raw and Holm-adjusted, target, verdict and the case ids."""
    return _rows(outcome.decision.checks) if outcome.decision else []


def transfer_rows(outcome: RetrainOutcome) -> list[dict[str, Any]]:
    """One row per out-of-domain (transfer suite) check; [] when the transfer gate was off."""
    return _rows(outcome.decision.transfer_checks) if outcome.decision else []


def _p(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.2g}")


def _rows(checks: list[CheckComparison]) -> list[dict[str, Any]]:
    return [
        {"check": c.check, "challenger": round(c.challenger, 3),
         "champion": None if c.champion is None else round(c.champion, 3),
         "delta": c.delta, "b": c.b, "c": c.c, "n": c.n, "p_better": _p(c.p_better),
         "p_better_holm": _p(c.p_better_holm), "p_worse": _p(c.p_worse), "p_worse_holm": _p(c.p_worse_holm),
         "target": c.target, "verdict": c.verdict if c.gated else f"{c.verdict} (not gated)",
         "fixed": ", ".join(c.fixed), "broken": ", ".join(c.broken)}
        for c in checks
    ]


def _markdown_table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns = list(rows[0])
    return ["", f"**{title}**", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows)]


def justifying_cases(decision: PromotionDecision) -> list[str]:
    """The cases the decision rests on, one line per check: a promotion's significant gains (fixed cases) and
    regression-set cases kept; a rejection's losses (broken cases) and regression cases broken."""
    if decision.promote:
        lines = [f"{r.check} fixed: {', '.join(r.fixed)}" for r in decision.checks if r.verdict == "improved"]
    else:
        lines = [f"{r.check} broken: {', '.join(r.broken)}" for r in decision.checks
                 if r.verdict == "worse" and r.broken]
        lines += [f"{r.check} broken (out-of-domain): {', '.join(r.broken)}" for r in decision.transfer_checks
                  if r.gated and r.verdict == "worse" and r.broken]
    regression = decision.regression
    if regression is not None and regression.broken:
        lines.append(f"regression set broken: {', '.join(regression.broken)}")
    return lines


def _failed(cases: dict[str, list[str]]) -> str:
    return ", ".join(f"{case} ({', '.join(checks)})" for case, checks in cases.items()) or "none"


def _regression_line(decision: PromotionDecision) -> str:
    verdict = decision.regression
    if verdict is None:
        return "**Regression set:** empty (no case fixed by an earlier promotion, no human correction)"
    origins = f"{verdict.origins.get('fixed', 0)} fixed by earlier promotions, " \
              f"{verdict.origins.get('correction', 0)} human corrections"
    unjudged = f"; not judged (no result or no applicable check): {', '.join(verdict.not_judged)}" \
        if verdict.not_judged else ""
    return (f"**Regression set:** {'holds' if verdict.ok else 'BLOCKS'}: {verdict.n} cases ({origins}); "
            f"challenger fails {len(verdict.challenger_failed)}: {_failed(verdict.challenger_failed)}; champion fails "
            f"{len(verdict.champion_failed)}: {_failed(verdict.champion_failed)}{unjudged}")


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
        early = " (stopped early: held-out replies agreed)" if outcome.train.stopped_early else ""
        lines += ["", f"Training: {outcome.train.steps} steps{early} in {outcome.train.seconds:.0f} s "
                      f"({outcome.train.tokens_per_s:.0f} tokens/s, peak memory {outcome.train.peak_memory_gb} GB), "
                      f"final loss {outcome.train.final_loss}, "
                      f"validation loss {outcome.train.validation_loss}"]
    if outcome.reused:
        lines += ["", "Replies reused from the reply cache (same weights, tokenizer, generation settings and prompt, "
                      "so the same index passages; not generated again): "
                      + ", ".join(f"{name} {count}" for name, count in outcome.reused.items())]
    decision = outcome.decision
    if decision is not None and decision.checks:
        lines += ["", f"Paired evidence: b = champion passed and challenger failed, c = the reverse, exact one-sided "
                      f"McNemar p (better, worse), Holm-adjusted at alpha {decision.alpha:g} (better: over the target "
                      f"checks {', '.join(decision.targets)}; worse: over all checks)."]
        if decision.mdd is not None:
            lines += ["", f"**{decision.mdd.describe()}**"]
        lines += ["", _regression_line(decision)]
        cases = justifying_cases(decision)
        if cases:
            lines += ["", "**Cases behind the decision:**", "", *(f"- {line}" for line in cases)]
    lines += _markdown_table("in-domain (held-out suite)", decision_rows(outcome))
    lines += _markdown_table("out-of-domain (transfer suite)", transfer_rows(outcome))
    return "\n".join(lines)


def loss_sparkline(losses: list[float]) -> str:
    """The loss curve as one line of block characters (Prefect artifacts have no charts)."""
    if not losses:
        return ""
    blocks = "▁▂▃▄▅▆▇█"
    low, high = min(losses), max(losses)
    span = (high - low) or 1.0
    return "".join(blocks[min(7, int((x - low) / span * 7.999))] for x in losses)
