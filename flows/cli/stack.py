"""CLI commands: the local stack (up, down, status) and the effective configuration."""

from __future__ import annotations

import typer
from rich.table import Table

from hybridops.flows.cli import app
from hybridops.flows.cli.common import JSON_OPTION, console, print_json, settings


@app.command()
def up(json_output: bool = JSON_OPTION) -> None:
    """Install (once) and start Prefect server, Weaviate and MinIO on 127.0.0.1; a second `up` is a no-op."""
    from hybridops.infra.services import up as start_stack

    cfg = settings()
    with console.status("starting the local stack (first run builds Weaviate and MinIO with Go)..."):
        report = start_stack(cfg, on_event=lambda msg: console.log(msg))
    if json_output:
        print_json({"services": report})
    else:
        for name, info in report.items():
            console.print(f"{name}: {info['action']}" + (f" in {info['seconds']} s" if "seconds" in info else ""))
        console.print(f"Prefect UI: {cfg.prefect_api_url.removesuffix('/api')}")


@app.command()
def down(json_output: bool = JSON_OPTION) -> None:
    """Stop exactly the processes `hybridops up` started (nothing else)."""
    from hybridops.infra.services import down as stop_stack

    report = stop_stack(settings())
    if json_output:
        print_json({"services": report})
    else:
        for name, info in report.items():
            console.print(f"{name}: {info['action']}")


@app.command()
def status(json_output: bool = JSON_OPTION) -> None:
    """Health, URL and version of each service (and whether `serve` hosts the landing webhook); exits
    non-zero when any service is unhealthy (the webhook, up only while `serve` runs, does not count)."""
    from hybridops.infra.services import status as stack_status

    report = stack_status(settings())
    if json_output:
        print_json(report)
    else:
        table = Table("service", "healthy", "url", "version")
        for name, info in report["services"].items():
            table.add_row(name, "yes" if info["healthy"] else "[red]no[/]", info["url"], str(info["version"]))
        console.print(table)
        hook = report["landing_webhook"]
        detail = {"taken": f" (served by namespace {hook.get('serving_namespace')})",
                  "off": f" ({hook.get('reason')})", "down": " (runs while `hybridops serve` does)"}
        console.print(f"landing webhook: {hook['state']} on {hook['url']}{detail.get(hook['state'], '')}")
    if not all(info["healthy"] for info in report["services"].values()):
        raise typer.Exit(1)


@app.command()
def config(json_output: bool = JSON_OPTION) -> None:
    """The effective settings (env HYBRIDOPS_*, .env, defaults) with secrets redacted."""
    data = settings().redacted()
    if json_output:
        print_json(data)
    else:
        table = Table("setting", "value")
        for key, value in data.items():
            table.add_row(key, str(value))
        console.print(table)
