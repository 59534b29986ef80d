"""What every CLI module shares: settings from the environment, JSON output, clear failures."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from hybridops.tasks.core.settings import Settings, load_settings

console = Console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print one machine-readable JSON object on stdout.")


def settings() -> Settings:
    try:
        return load_settings()
    except Exception as exc:  # pydantic ValidationError: show it plainly
        fail(f"invalid settings: {exc}")


def print_json(data: Any) -> None:
    """Exactly one JSON object on stdout; everything human goes to stderr."""
    sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
