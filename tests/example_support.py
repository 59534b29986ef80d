"""Checks shared by the tests of the shipped example sets (suites and case sets)."""

from __future__ import annotations

import re

from hybridops.tasks.behaviour.checks import CheckInput, CheckResult, expected_keywords
from hybridops.tasks.behaviour.prompting import ParsedReply
from hybridops.tasks.behaviour.suite import Case


def normalise(question: str) -> str:
    """A question as compared for "asked before": lower-case words and digits only."""
    return " ".join(re.findall(r"[a-z0-9]+", question.lower()))


def gold_text_keywords(case: Case, gold_text: str) -> CheckResult | None:
    """The case's expected_keywords check with the gold text itself as the answer: a case whose gold documents
    do not hold its keywords would fail every correct reply."""
    return expected_keywords(CheckInput(question=case.question, reply=ParsedReply(answer=gold_text, format_ok=True),
                                        expected_keywords=case.keyword_groups))
