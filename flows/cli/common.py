"""What every CLI module shares: settings, JSON output, and the one place failures become messages + exit codes.

Commands raise; they do not catch. `ErrorHandlingGroup` (the root group of `hybridops`) turns any failure
into one clear line on stderr, `{"error": ...}` on stdout when `--json` was given, and the exit code of
the error's kind (tasks/core/errors.py). `HYBRIDOPS_DEBUG=1` keeps the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NoReturn

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from hybridops.tasks.core.errors import BadInputError, HybridopsError, describe, exit_code
from hybridops.tasks.core.settings import Settings, load_settings

console = Console(stderr=True)
_wants_json = False


def _remember_json(value: bool) -> bool:
    global _wants_json
    _wants_json = _wants_json or bool(value)
    return value


JSON_OPTION = typer.Option(False, "--json", help="Print one machine-readable JSON object on stdout.",
                           callback=_remember_json)


def settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except Exception as exc:  # pydantic ValidationError: show it plainly
        raise BadInputError(f"invalid settings: {exc}") from exc


def print_json(data: Any) -> None:
    """Exactly one JSON object on stdout; everything human goes to stderr."""
    sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with a clear message (and the JSON error object under --json)."""
    if _wants_json:
        print_json({"error": message})
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, never wrapped
    raise typer.Exit(code)


class ErrorHandlingGroup(TyperGroup):
    """The root command group: every failure of every subcommand ends here, once."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI's single error boundary
            if os.environ.get("HYBRIDOPS_DEBUG"):
                raise
            message = describe(exc)
            if not isinstance(exc, HybridopsError) and exit_code(exc) == 1:
                message += " (unexpected; HYBRIDOPS_DEBUG=1 shows the traceback)"
            fail(message, exit_code(exc))
