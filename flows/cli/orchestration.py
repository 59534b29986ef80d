"""CLI commands of the orchestration surface: serve the deployments, trigger one by hand, run the demo."""

from __future__ import annotations

import json
from typing import Any

import typer

from hybridops.flows.cli import app
from hybridops.flows.cli.common import JSON_OPTION, console, fail, print_json, settings


@app.command()
def serve(json_output: bool = JSON_OPTION) -> None:
    """Register every deployment of this namespace with the Prefect server and run their flow runs (Ctrl-C stops)."""
    from hybridops.flows.orchestration.serving import serve as serve_deployments

    cfg = settings()
    ui = cfg.prefect_api_url.removesuffix("/api")

    def ready(names: list[str]) -> None:
        if json_output:
            print_json({"serving": names, "namespace": cfg.namespace, "ui": f"{ui}/deployments"})
        console.print(f"[bold green]serving {len(names)} deployments[/] of namespace {cfg.namespace}: "
                      + ", ".join(names))
        console.print(f"Prefect UI: {ui}/deployments  (Ctrl-C or SIGTERM stops; schedules stay active)")

    try:
        serve_deployments(cfg, on_ready=ready, on_event=lambda message: console.log(message))
    except (OSError, RuntimeError) as exc:
        fail(f"cannot serve against {cfg.prefect_api_url}: {exc} (is the stack up? `hybridops up`)")


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """`k=v` pairs -> parameters; values are JSON when they parse (true, 3, [..], {..}), else text.

    A dotted key sets a field of a parameter model: `params.full=true` -> {"params": {"full": true}}.
    """
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        target = params
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"--param {key}: {part} is already set to a plain value")
        target[leaf] = value
    return params


@app.command("run")
def run_command(
    deployment: str = typer.Argument(..., help="Deployment: refresh-index, rebuild-index, watch-landing, "
                                     "evaluate-behaviour, retrain-adapter, rollback-adapter (or its full name)."),
    param: list[str] = typer.Option(None, "--param", "-p", help="Parameter key=value (JSON values; dotted keys "
                                    "set model fields, e.g. params.full=true). Repeatable."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the run finishes; exit 1 unless it completed."),
    timeout: float = typer.Option(3600, "--timeout", help="Seconds to wait with --wait."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Start a run of a served deployment by hand (as the UI's Run button does)."""
    from hybridops.flows.cli.progress import rich_reporter
    from hybridops.flows.orchestration.deployments import spec_for
    from hybridops.flows.orchestration.run_control import start_run
    from hybridops.flows.orchestration.run_progress import follow_run

    cfg = settings()
    try:
        spec = spec_for(cfg, deployment)
        parameters = parse_params(param)
    except (KeyError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    try:
        run = start_run(cfg, spec.full_name(cfg), parameters)
        console.print(f"started {run.name} of {spec.full_name(cfg)}: {run.url}")
        if wait:  # the run's own progress bars (steps, loss, ETA, cases done), read from its artifacts
            with rich_reporter() as bars:
                bars.stage(f"waiting for {run.name}...")
                run = follow_run(cfg, run.id, bars.show, timeout)
    except (OSError, RuntimeError, TimeoutError) as exc:
        fail(f"{exc} (is `hybridops serve` running against {cfg.prefect_api_url}?)")
    if json_output:
        print_json(run.model_dump(mode="json"))
    else:
        console.print(f"{run.name}: {run.state}")
    if wait and run.state != "COMPLETED":
        raise typer.Exit(1)


@app.command()
def demo(
    json_output: bool = JSON_OPTION,
    keep_serving: bool = typer.Option(False, "--keep-serving", help="Leave `serve` running after the story."),
) -> None:
    """The whole story on embedded defaults: land -> refresh by event -> ask -> eval (drift) -> retrain by event
    -> promote -> ask again -> update a document -> refresh by event -> ask again. Narrated; <= 15 min on 2 CPUs."""
    from hybridops.flows.demo import DemoFailed, run_demo

    try:
        report = run_demo(settings(), console=console, keep_serving=keep_serving)
    except DemoFailed as exc:  # the steps done so far are part of the JSON contract
        if json_output:
            print_json({"ok": False, "error": str(exc), "steps": exc.steps})
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if json_output:
        print_json(report)
