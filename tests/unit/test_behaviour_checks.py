"""Each behaviour check judges plain data the way its docstring promises."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hybridops.tasks.behaviour.checks import CHECKS, CheckInput, check, get_check, is_refusal, run_checks
from hybridops.tasks.behaviour.prompting import parse_reply


@dataclass
class Hit:
    doc_id: str
    text: str


RETURNS = Hit("policies/returns.md", "Customers may return unopened items within 30 days of delivery for a full refund.")
PRICES = Hit("pricing/plans.md", "The Pro plan costs 1,200 EUR per year; the Basic plan costs 49 EUR per month.")


def data(raw: str, **kw) -> CheckInput:
    kw.setdefault("passages", (RETURNS, PRICES))
    return CheckInput(question="q", reply=parse_reply(raw), **kw)


def run(name: str, raw: str, **kw):
    return get_check(name)(data(raw, **kw))


def test_json_format():
    assert run("json_format", '{"answer": "a", "sources": []}').passed
    result = run("json_format", "Items can be returned in 30 days.")
    assert not result.passed and "no JSON" in result.detail


def test_sources_valid_requires_cited_subset_of_retrieved():
    assert run("sources_valid", '{"answer": "30 days", "sources": ["policies/returns.md"]}').passed
    bad = run("sources_valid", '{"answer": "30 days", "sources": ["policies/other.md"]}')
    assert not bad.passed and "policies/other.md" in bad.detail


def test_sources_valid_requires_a_citation_for_an_answer_but_not_for_a_refusal():
    assert not run("sources_valid", '{"answer": "30 days", "sources": []}').passed
    assert run("sources_valid", '{"answer": null, "sources": []}').passed
    assert not run("sources_valid", "30 days").passed


def test_cites_gold_applies_only_with_gold_docs():
    reply = '{"answer": "30 days", "sources": ["policies/returns.md"]}'
    assert run("cites_gold", reply) is None
    assert run("cites_gold", reply, gold_docs=("policies/returns.md",)).passed
    assert not run("cites_gold", reply, gold_docs=("pricing/plans.md",)).passed


def test_grounded_accepts_supported_answer():
    result = run("grounded", '{"answer": "Unopened items within 30 days, full refund.", "sources": ["policies/returns.md"]}')
    assert result.passed, result.detail


def test_grounded_rejects_number_missing_from_cited_text():
    result = run("grounded", '{"answer": "Unopened items within 60 days.", "sources": ["policies/returns.md"]}')
    assert not result.passed and "60" in result.detail


def test_grounded_only_counts_the_cited_passages():
    # 1,200 EUR is in the retrieved prices passage, but the answer cites the returns doc.
    assert not run("grounded", '{"answer": "The Pro plan costs 1200 EUR.", "sources": ["policies/returns.md"]}').passed
    assert run("grounded", '{"answer": "The Pro plan costs 1200 EUR per year.", "sources": ["pricing/plans.md"]}').passed


def test_grounded_rejects_unsupported_words():
    result = run("grounded", '{"answer": "Shipping is free for platinum members worldwide.", "sources": ["policies/returns.md"]}')
    assert not result.passed and "content words" in result.detail


def test_grounded_does_not_apply_to_null_answers_and_fails_unparseable():
    assert run("grounded", '{"answer": null, "sources": []}') is None
    assert not run("grounded", "30 days").passed


def test_refuses_without_context():
    assert run("refuses_without_context", '{"answer": "30 days", "sources": []}') is None
    assert run("refuses_without_context", '{"answer": null, "sources": []}', refusal=True).passed
    assert run("refuses_without_context", "I don't know, the context does not say.", refusal=True).passed
    assert not run("refuses_without_context", '{"answer": "Our CEO is Jane.", "sources": []}', refusal=True).passed


@pytest.mark.parametrize(
    "text, refusal",
    [
        ("I do not know.", True),
        ("The answer is not in the context.", True),
        ("This information is not provided in the passages.", True),
        ("I cannot answer that from the documents.", True),
        ("No information about that.", True),
        ("The Pro plan costs 1,200 EUR.", False),
        ("Returns are accepted within 30 days.", False),
    ],
)
def test_refusal_phrases(text, refusal):
    assert is_refusal(text) is refusal


def test_expected_keywords_case_insensitive_and_number_separators():
    reply = '{"answer": "It costs 1200 eur per year", "sources": ["pricing/plans.md"]}'
    assert run("expected_keywords", reply, expected_keywords=("1,200", "EUR")).passed
    missing = run("expected_keywords", reply, expected_keywords=("1,200", "month"))
    assert not missing.passed and "month" in missing.detail
    assert run("expected_keywords", reply) is None


def test_max_length_uses_raw_text_when_unparseable():
    assert run("max_length", '{"answer": "short", "sources": []}', max_chars=10).passed
    assert not run("max_length", "x" * 11, max_chars=10).passed


def test_banned_phrases_anywhere_in_the_reply():
    assert not run("banned_phrases", 'As an AI language model I think {"answer": "a", "sources": []}').passed
    assert run("banned_phrases", '{"answer": "a", "sources": []}').passed
    assert not run("banned_phrases", '{"answer": "Certainly!", "sources": []}', banned_phrases=("certainly",)).passed


def test_run_checks_skips_checks_that_do_not_apply_and_unknown_names_fail_clearly():
    results = run_checks(["json_format", "cites_gold", "refuses_without_context"], data('{"answer": "a", "sources": []}'))
    assert set(results) == {"json_format"}
    with pytest.raises(KeyError, match="unknown behaviour check 'nope'"):
        run_checks(["nope"], data("x"))


def test_checks_are_pluggable_and_names_unique():
    @check("_test_always_true")
    def _always(data):
        from hybridops.tasks.behaviour.checks import CheckResult

        return CheckResult(True)

    try:
        assert run_checks(["_test_always_true"], data("x"))["_test_always_true"].passed
        with pytest.raises(ValueError, match="twice"):
            check("_test_always_true")(_always)
    finally:
        CHECKS.pop("_test_always_true")


def test_expected_keyword_alternatives():
    reply = '{"answer": "Tokens are valid for one hour.", "sources": ["a.md"]}'
    assert run("expected_keywords", reply, expected_keywords=(("3,600", "one hour"),)).passed
    assert run("expected_keywords", '{"answer": "3600 seconds", "sources": []}', expected_keywords=(("3,600", "one hour"),)).passed
    assert not run("expected_keywords", '{"answer": "A day.", "sources": []}', expected_keywords=(("3,600", "one hour"),)).passed


def test_answers_when_supported_flags_a_refusal_only_when_the_gold_passage_was_there():
    gold = {"gold_docs": ("policies/returns.md",)}
    assert run("answers_when_supported", '{"answer": "30 days", "sources": ["policies/returns.md"]}', **gold).passed
    null = run("answers_when_supported", '{"answer": null, "sources": []}', **gold)
    assert not null.passed and "null" in null.detail
    assert not run("answers_when_supported", '{"answer": "I do not know.", "sources": []}', **gold).passed
    assert run("answers_when_supported", "Thirty days.", **gold).passed  # prose: an answer, in the wrong format
    missed = run("answers_when_supported", '{"answer": null, "sources": []}', gold_docs=("other/doc.md",))
    assert missed is None  # gold not retrieved: refusing is right (a knowledge gap, not a false refusal)
    assert run("answers_when_supported", '{"answer": null, "sources": []}', refusal=True) is None
