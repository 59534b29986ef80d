"""CLI commands: the local stack (up, down, status) and the effective configuration."""

from __future__ import annotations

import typer
from rich.table import Table

from hybridops.flows.cli import app
from hybridops.flows.cli.common import JSON_OPTION, console, print_json, settings
from hybridops.tasks.core.errors import BadInputError


TOPOLOGY_OPTION = typer.Option(
    None, "--topology", help="embedded (one process per service) or production (Prefect on PostgreSQL with a work "
    "pool and workers, a 3-node Weaviate cluster, erasure-coded MinIO; see infra/PRODUCTION.md). Default: the "
    "topology `up` started in this home, else HYBRIDOPS_TOPOLOGY, else embedded.")


def _topology_settings(topology: str | None):
    if topology not in (None, "embedded", "production"):
        raise BadInputError(f"--topology must be embedded or production, not {topology!r}")
    return settings(topology=topology) if topology else settings()


@app.command()
def up(topology: str | None = TOPOLOGY_OPTION, json_output: bool = JSON_OPTION) -> None:
    """Install (once) and start Prefect server, Weaviate and MinIO on 127.0.0.1; a second `up` is a no-op."""
    from hybridops.infra.topology import up as start_stack

    cfg = _topology_settings(topology)
    with console.status(f"starting the local stack, {cfg.topology} topology (first run builds Weaviate and MinIO "
                        "with Go)..."):
        report = start_stack(cfg, on_event=lambda msg: console.log(msg))
    if json_output:
        print_json({"topology": cfg.topology, "services": report})
    else:
        for name, info in report.items():
            console.print(f"{name}: {info['action']}" + (f" in {info['seconds']} s" if "seconds" in info else ""))
        console.print(f"Prefect UI: {cfg.prefect_api_url.removesuffix('/api')}")


@app.command()
def down(topology: str | None = TOPOLOGY_OPTION, json_output: bool = JSON_OPTION) -> None:
    """Stop exactly the processes `hybridops up` started (nothing else)."""
    from hybridops.infra.topology import down as stop_stack

    report = stop_stack(_topology_settings(topology))
    if json_output:
        print_json({"services": report})
    else:
        for name, info in report.items():
            console.print(f"{name}: {info['action']}")


@app.command()
def status(topology: str | None = TOPOLOGY_OPTION, json_output: bool = JSON_OPTION) -> None:
    """Health, URL and version of each service, node and worker (and whether `serve` hosts the landing webhook);
    exits non-zero when any is unhealthy (the webhook, up only while `serve` runs, does not count)."""
    from hybridops.infra.topology import status as stack_status

    report = stack_status(_topology_settings(topology))
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
