"""CLI commands: retrain (in-process, rich progress) and the adapter registry (list, show, promote, rollback).

Retrain, promote and rollback run the same stories as the flows (under the namespace's adapters lock) and
send the same events when the Prefect server answers, so automations see manual moves too. Commands raise;
the root group turns failures into one line and an exit code. The tasks/ modules are imported inside each
command: they pull in Weaviate and the model code, which `--help` and the other commands should not pay for.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hybridops.flows.cli import adapters_app, app
from hybridops.flows.cli.common import JSON_OPTION, console, print_json, settings
from hybridops.flows.cli.progress import rich_reporter
from hybridops.flows.orchestration.events import adapter_decided, adapter_rolled_back, from_the_cli


@app.command()
def retrain(
    json_output: bool = JSON_OPTION,
    drifted: list[str] = typer.Option([], "--drifted", help="A drifted check the challenger must improve (repeat)."),
    force: bool = typer.Option(False, "--force", help="Train even without drift or new data."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Override settings.train_steps."),
    suite: Path | None = typer.Option(None, "--suite", help="Held-out behaviour suite (default: settings)."),
) -> None:
    """Train a LoRA challenger, compare it with the champion on the held-out suite, promote only if better."""
    from hybridops.tasks.behaviour.retrain import RetrainRequest
    from hybridops.tasks.behaviour.retrain import retrain as run_retrain

    cfg = settings()
    request = RetrainRequest(drifted=drifted, force=force, steps=steps, suite=suite)
    with rich_reporter() as reporter:
        outcome = run_retrain(cfg, request, reporter=reporter)
    event = None
    if not outcome.skipped:  # the same event the retrain-adapter flow emits (a skipped run decides nothing)
        event = from_the_cli(cfg, lambda: adapter_decided(cfg, outcome))
    if json_output:
        print_json(outcome.cli_dict() | {"event": event})
        return
    verdict = "skipped" if outcome.skipped else ("[green]promoted[/]" if outcome.promoted else "[yellow]rejected[/]")
    console.print(f"{outcome.version or '-'}: {verdict} — {outcome.reason}")
    if not outcome.skipped:
        _print_event(event)
    champion = f"champion ({outcome.champion_version or 'base'})"
    for title, challenger_rates, champion_rates in [
        ("in-domain (held-out suite)", outcome.challenger, outcome.champion),
        ("out-of-domain (transfer suite)", outcome.transfer_challenger, outcome.transfer_champion),
    ]:
        if challenger_rates:
            table = Table("check", "challenger", champion, title=title)
            for check, rate in challenger_rates.items():
                old = champion_rates.get(check)
                table.add_row(check, f"{rate:.2f}", "-" if old is None else f"{old:.2f}")
            console.print(table)


@adapters_app.command("list")
def list_adapters(json_output: bool = JSON_OPTION) -> None:
    """Every registered adapter version, oldest first, with the champion marked and invalid ones flagged."""
    from hybridops.tasks.behaviour.adapters import invalid_summary, manifest_summary, scan_versions

    cfg = settings()
    current, pointer_error = _champion_or_error(cfg)
    manifests, invalid = scan_versions(cfg)
    rows = [manifest_summary(m, current) for m in manifests] + [invalid_summary(b, current) for b in invalid]
    if json_output:
        print_json({"champion": current, "champion_error": pointer_error, "adapters": rows})
        return
    table = Table("version", "champion", "valid", "parent", "steps", "final loss", "json_format", "promoted")
    for row in rows:
        if not row["valid"]:
            table.add_row(row["version"], "*" if row["champion"] else "", f"[red]no[/]: {row['reason']}",
                          "-", "-", "-", "-", "-")
            continue
        table.add_row(row["version"], "*" if row["champion"] else "", "yes", row["parent"] or "-",
                      str(row["steps"]), str(row["final_loss"]), str(row["eval_scores"].get("json_format", "-")),
                      str(row["promoted"]))
    console.print(table)
    if pointer_error:
        console.print(f"[bold yellow]warning:[/] {pointer_error}", highlight=False)
    else:
        console.print(f"champion: {current or 'base model (no adapter)'}")


def _champion_or_error(cfg) -> tuple[str | None, str | None]:
    """(champion version, None), or (None, why) when the pointer is corrupt: listing still works."""
    from hybridops.tasks.behaviour.adapters import ChampionPointerError, champion_version

    try:
        return champion_version(cfg), None
    except ChampionPointerError as exc:
        return None, str(exc)


@adapters_app.command("show")
def show_adapter(version: str, json_output: bool = JSON_OPTION) -> None:
    """The full manifest of one version (file hashes, base model, data fingerprint, params, scores)."""
    from hybridops.tasks.behaviour.adapters import show

    cfg = settings()
    manifest = show(cfg, version)
    data = manifest.model_dump(mode="json") | {"champion": _champion_or_error(cfg)[0] == version}
    if json_output:
        print_json(data)
    else:
        console.print_json(data=data)


@adapters_app.command("promote")
def promote_adapter(version: str, json_output: bool = JSON_OPTION) -> None:
    """Make VERSION the champion (its files must verify); the previous champion stays in the history."""
    from hybridops.tasks.behaviour.champion import promote_champion

    cfg = settings()
    pointer, outcome = promote_champion(cfg, version, reason="manual promotion")
    event = from_the_cli(cfg, lambda: adapter_decided(cfg, outcome))
    _print_pointer(pointer, event, json_output)


@adapters_app.command("rollback")
def rollback_adapter(
    reason: str = typer.Option("manual rollback", "--reason", help="Why (kept in the pointer history)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Restore the previous champion (possibly the bare base model)."""
    from hybridops.tasks.behaviour.champion import rollback_champion

    cfg = settings()
    pointer = rollback_champion(cfg, reason=reason)
    event = from_the_cli(cfg, lambda: adapter_rolled_back(cfg, pointer.version, pointer.current.reason))
    _print_pointer(pointer, event, json_output)


def _print_event(event: str | None) -> None:
    console.print(f"event: {event}" if event else "event: none (Prefect server not reachable)")


def _print_pointer(pointer, event: str | None, json_output: bool) -> None:
    data = {"champion": pointer.version, "reason": pointer.current.reason,
            "history": [entry.version for entry in pointer.history], "event": event}
    if json_output:
        print_json(data)
    else:
        console.print(f"champion: {pointer.version or 'base model (no adapter)'} ({pointer.current.reason})")
        _print_event(event)
