"""The `hybridops` command: one thin subcommand per capability, delegating to tasks/ and flows/.

Each area registers its commands in its own module (stack, knowledge, behaviour, orchestration);
this root only builds the Typer app and the shared groups.
"""

from __future__ import annotations

import typer

from hybridops.flows.cli.common import ErrorHandlingGroup

app = typer.Typer(
    name="hybridops",
    help="Continual hybrid LLM system: fresh RAG knowledge + LoRA-tuned behaviour, orchestrated by Prefect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=ErrorHandlingGroup,
)
models_app = typer.Typer(help="Prepare and inspect the local models.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Documents and training examples held back by data contracts.", no_args_is_help=True)
index_app = typer.Typer(help="Index generations behind the Weaviate alias.", no_args_is_help=True)
eval_app = typer.Typer(help="Behaviour evals (default) and retrieval evals.")
adapters_app = typer.Typer(help="The LoRA adapter registry: list, show, promote, rollback.", no_args_is_help=True)

app.add_typer(models_app, name="models")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(index_app, name="index")
app.add_typer(eval_app, name="eval")
app.add_typer(adapters_app, name="adapters")

# Registration happens on import; the order only affects `--help`.
from hybridops.flows.cli import stack  # noqa: E402,F401
from hybridops.flows.cli import models  # noqa: E402,F401
from hybridops.flows.cli import knowledge  # noqa: E402,F401
from hybridops.flows.cli import behaviour  # noqa: E402,F401
from hybridops.flows.cli import training  # noqa: E402,F401
from hybridops.flows.cli import orchestration  # noqa: E402,F401
