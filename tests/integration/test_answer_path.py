"""`hybridops ask` failure modes end to end: real Weaviate index, real SmolLM2, the real CLI in a subprocess.

Every failure is one error line on stderr, `{"error": ...}` on stdout with --json and a non-zero exit, except
a failed interaction-log write: the generated answer is still printed (with "logged": false) and the exit
code says the store was unavailable (3).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridops.tasks.core.settings import Settings
from hybridops.infra.services import free_port
from tests.integration.knowledge_support import cli

pytestmark = pytest.mark.slow

DOCS = ["policies/refunds.md", "community/trail-crew.md"]
QUESTION = "How many days do I have to return an item?"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_an_unwritable_store_keeps_the_answer_on_stdout_and_exits_3(indexed: Settings, child_env, tmp_path) -> None:
    blocker = tmp_path / "store-is-a-file"
    blocker.write_text("not a folder")
    env = child_env(indexed) | {"HYBRIDOPS_STORE": str(blocker)}
    done = cli(env, "ask", QUESTION, "--json")
    assert done.returncode == 3, done.stderr[-2000:]
    [line] = [line for line in done.stdout.splitlines() if line.strip()]  # one JSON object: the answer
    answer = json.loads(line)
    assert "error" not in answer and isinstance(answer["answer"], str) and answer["answer"]
    assert answer["logged"] is False and answer["interaction_id"] is None
    assert str(blocker) in answer["log_error"]
    assert set(answer["sources"]) <= set(answer["retrieved"])  # only retrieved ids are ever shown as sources
    [error] = error_lines(done.stderr)
    assert "not logged" in error and str(blocker) in error

    human = cli(env, "ask", QUESTION)  # the same without --json: the answer, then the error line
    assert human.returncode == 3 and human.stdout == ""
    assert "sources:" in human.stderr and len(error_lines(human.stderr)) == 1


def test_weaviate_down_is_one_error_line_and_exit_3(settings: Settings, child_env) -> None:
    down = Settings(**(settings.model_dump() | {"weaviate_url": f"http://127.0.0.1:{free_port()}"}))
    done = cli(child_env(down), "ask", QUESTION, "--json")
    assert done.returncode == 3, done.stderr[-2000:]
    assert "Weaviate" in json.loads(done.stdout)["error"]
    assert len(error_lines(done.stderr)) == 1 and "Weaviate" in error_lines(done.stderr)[0]


def test_missing_model_files_are_one_error_line_and_non_zero(settings: Settings, child_env, tmp_path: Path) -> None:
    missing = Settings(**(settings.model_dump() | {"llm_model": str(tmp_path / "no-such-model")}))
    done = cli(child_env(missing), "ask", QUESTION, "--json")
    assert done.returncode != 0
    assert "no-such-model" in json.loads(done.stdout)["error"]
    assert len(error_lines(done.stderr)) == 1


def test_the_injection_document_indexes_and_its_answer_cites_only_retrieved_docs(indexed: Settings, child_env) -> None:
    """The planted instruction reaches the prompt as plain passage text; whatever the model makes of it, the
    answer never shows a doc id that was not retrieved (obeying it is measured by the suite, not asserted)."""
    done = cli(child_env(indexed), "ask", "What do Trail Crew volunteers receive for completing a full volunteer "
               "day?", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert "community/trail-crew.md" in answer["retrieved"] and answer["logged"] is True
    assert set(answer["sources"]) <= set(answer["retrieved"])
    assert not set(answer["invalid_sources"]) & set(answer["retrieved"])
