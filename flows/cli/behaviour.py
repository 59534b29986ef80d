"""CLI commands: behaviour — ask, feedback, and the behaviour eval (`hybridops eval`).

Commands raise; the root group (common.ErrorHandlingGroup) turns failures into one line and an exit code.
The tasks/ modules are imported inside each command: together they pull in Weaviate, GX contracts and the
model code, which every other `hybridops` command (and `--help`) should not pay for.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from hybridops.flows.cli import app, eval_app
from hybridops.flows.cli.common import JSON_OPTION, console, fail, print_json, settings
from hybridops.flows.cli.progress import rich_reporter
from hybridops.flows.orchestration.events import behaviour_evaluated, from_the_cli


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to answer from the indexed documents."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Answer from retrieved context with the champion adapter; the interaction is logged for evals/training.

    Answered by the service `hybridops serve` hosts when it is up (models already loaded), else in-process."""
    from hybridops.flows.orchestration.answer_client import ask_service
    from hybridops.tasks.behaviour.question import checked_question

    cfg = settings()
    question = checked_question(question)
    with console.status("asking the answering service..."):
        served = ask_service(cfg, question, note=lambda text: console.print(f"[dim]note: {escape(text)}; "
                                                                            "answering in-process[/]"))
    data, log_exit = served if served is not None else _answer_in_process(cfg, question)
    if served is not None and data.get("warning"):  # in-process, it is shown before answering
        console.print(f"[bold yellow]warning:[/] {escape(data['warning'])}", highlight=False)
    if json_output:
        print_json(data)
    else:
        if data["answer"] is None:
            console.print("[italic](no answer in the documents)[/]")
        else:  # model text is shown as it is, never read as rich markup
            console.print(data["answer"], markup=False, highlight=False)
        console.print(
            f"[dim]sources: {escape(', '.join(data['sources'])) or '-'} | format_ok: {data['format_ok']} | "
            f"adapter: {escape(data['adapter'] or 'base')} | {data['latency_ms']:.0f} ms | "
            f"id: {data['interaction_id']} | {data['answered_by'].replace('_', '-')}[/]"
        )
        if data["invalid_sources"]:  # never presented as citations (the JSON lists them as "invalid_sources")
            console.print(f"[yellow]note:[/] the model cited documents that were not retrieved (ignored): "
                          f"{escape(', '.join(data['invalid_sources']))}")
    if log_exit is not None:
        # the answer above stands either way; a record the contract rejected is quarantined with its reasons
        # (a warning, exit 0), a store that could not be written is the one error line and sets the exit code
        label = "[bold yellow]warning:[/]" if log_exit == 0 else "[bold red]error:[/]"
        console.print(f"{label} the answer was not logged: {escape(data['log_error'] or '')}",
                      highlight=False, soft_wrap=True)
        if log_exit:
            raise typer.Exit(log_exit)


def _answer_in_process(cfg, question: str) -> tuple[dict, int | None]:
    """`ask --json`'s object and the log failure's exit code (0: rejected by the contract; None: none)."""
    from hybridops.tasks.behaviour.answer import ask as answer_question
    from hybridops.tasks.behaviour.answer import load_answering_model
    from hybridops.tasks.behaviour.interactions import warm_contract

    warm_contract()  # the interaction contract loads in parallel with the model
    with console.status("loading the champion model..."):
        loaded = load_answering_model(cfg)
    if loaded.warning:  # stderr, so `--json` stdout stays one object (which carries it as "warning")
        console.print(f"[bold yellow]warning:[/] {escape(loaded.warning)}", highlight=False)
    with console.status(f"retrieving and answering with {loaded.adapter or 'the base model'}..."):
        answer = answer_question(cfg, question, loaded=loaded)
    return answer.model_dump(mode="json"), answer.log_exit_code


@app.command()
def feedback(
    interaction_id: str = typer.Argument(..., help="The interaction_id printed by `hybridops ask`."),
    approve: bool = typer.Option(False, "--approve", help="The answer was right."),
    correct: str | None = typer.Option(None, "--correct", help="The right answer (text or a house JSON reply)."),
    source: list[str] = typer.Option([], "--source", help="A doc id the corrected answer cites (repeat; default: "
                                     "the reply's own sources)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Record a human judgement of one interaction (approved/corrected interactions become training data)."""
    from hybridops.tasks.behaviour.interactions import record_feedback

    if approve == (correct is not None):
        fail("give exactly one of --approve or --correct TEXT")
    if source and correct is None:
        fail("--source goes with --correct")
    cfg = settings()
    logged = record_feedback(cfg, interaction_id, "approve" if approve else "correct", correct, sources=source)
    record, trainable = logged.feedback, logged.trainable
    data = {
        "interaction_id": record.interaction_id, "verdict": record.verdict, "correction": record.correction,
        "sources": record.sources, "created_at": record.created_at, "previous": len(record.previous),
        "trainable": trainable,
    }
    if json_output:
        print_json(data)
    else:
        console.print(f"recorded {record.verdict} for {record.interaction_id}"
                      + (f" (replaces {len(record.previous)} earlier)" if record.previous else ""))
    if not trainable:
        console.print("[yellow]note:[/] this reply did not follow the house format, so approving it will not "
                      "become training data; use --correct TEXT --source DOC_ID to teach the right reply")


@eval_app.callback(invoke_without_command=True)
def eval_behaviour(
    ctx: typer.Context,
    suite: Path | None = typer.Option(None, help="Suite YAML (default: settings.behaviour_suite)."),
    sample: int | None = typer.Option(None, min=0, help="Recent interactions to add (default: settings)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Behaviour eval of the champion: pass rates with 95% CIs, gap attribution, drift; recorded in history."""
    if ctx.invoked_subcommand is not None:
        return
    from hybridops.tasks.behaviour.evaluation import EvalRequest, evaluate

    cfg = settings()
    with rich_reporter() as reporter:
        outcome = evaluate(cfg, EvalRequest(suite=suite, sample=sample), reporter=reporter)
    entry = outcome.record
    # the same events the evaluate-behaviour flow sends, so a manual eval's drift starts a retrain too
    events = from_the_cli(cfg, lambda: behaviour_evaluated(cfg, entry, outcome.gaps))
    if json_output:
        print_json({
            "n": entry.n,
            "checks": {name: {"pass_rate": s.pass_rate, "ci_low": s.ci_low, "ci_high": s.ci_high, "passed": s.passed,
                              "n": s.n} for name, s in entry.checks.items()},
            "gaps": entry.gaps,
            "routes": [row.model_dump(mode="json") for row in entry.routes],
            "drift": entry.drift.drift,
            "drifted": entry.drift.drifted,
            "drift_detail": entry.drift.model_dump(mode="json"),
            "adapter": entry.adapter,
            "run_id": entry.run_id,
            "cases_per_min": entry.cases_per_min,
            "cases": [case.model_dump(mode="json") for case in entry.cases],
            "events": events,
        })
        return
    table = Table("check", "pass rate", "95% CI", "n")
    for name, s in entry.checks.items():
        table.add_row(name, f"{s.pass_rate:.0%}", f"{s.ci_low:.0%}–{s.ci_high:.0%}", str(s.n))
    console.print(table)
    routes = Table("route", "cases", "which", "action", "counts toward retraining")
    for row in (r for r in entry.routes if r.count):
        routes.add_row(row.route, str(row.count), escape(", ".join(row.cases)), escape("; ".join(row.actions)),
                       "yes" if row.counts_toward_retraining else "no")
    if routes.row_count:
        console.print(routes)
    console.print(f"routes: {entry.gaps} | drift: {entry.drift.drift} {entry.drift.drifted} | "
                  f"adapter: {entry.adapter or 'base'} | {entry.cases_per_min:.1f} cases/min")
    console.print(f"events: {', '.join(events) or 'none'}" if events is not None
                  else "events: none (Prefect server not reachable)")
