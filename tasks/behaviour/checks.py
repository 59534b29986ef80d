"""Small pluggable behaviour checks, registered by name; each judges one model reply against its case.

A check returns a `CheckResult`, or None when it does not apply to the case (e.g. `cites_gold` without
gold docs); checks that do not apply are not counted in pass rates. Register new ones with `@check("name")`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hybridops.tasks.behaviour.prompting import ParsedReply, Passage

DEFAULT_MAX_CHARS = 400
DEFAULT_BANNED_PHRASES = (
    "as an ai language model",
    "as an ai assistant",
    "as a language model",
    "i am an ai",
    "i'm an ai",
)
REFUSAL_PATTERNS = (
    r"\bi (?:do not|don't) know\b",
    r"\b(?:not|no)\b[^.]{0,40}\b(?:in|from)\b[^.]{0,20}\b(?:context|passages?|documents?)\b",
    r"\b(?:cannot|can't|can not|unable to)\b[^.]{0,30}\b(?:answer|find|tell)\b",
    r"\bno (?:relevant )?information\b",
    r"\bnot (?:mentioned|provided|specified|available|stated)\b",
)
# grounded: share of the answer's content words that must occur in the cited passages' text.
GROUNDED_MIN_OVERLAP = 0.6
_STOPWORDS = frozenset(
    "a an the and or but of to in on at for from by with as is are was were be been being it its this that these "
    "those there their they them we you your our i he she his her not no yes do does did can could will would "
    "should may might must have has had if then than so such per each any all which who whom what when where "
    "how why also only into about over under up out".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class CheckInput:
    """Everything a check may look at: the case's expectations, what was retrieved and what the model said."""

    question: str
    reply: ParsedReply
    passages: Sequence[Passage] = ()
    gold_docs: Sequence[str] = ()
    expected_keywords: Sequence[str | Sequence[str]] = ()
    refusal: bool = False
    max_chars: int = DEFAULT_MAX_CHARS
    banned_phrases: Sequence[str] = DEFAULT_BANNED_PHRASES

    @property
    def retrieved(self) -> list[str]:
        return list(dict.fromkeys(p.doc_id for p in self.passages))


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    detail: str = ""


CheckFn = Callable[[CheckInput], "CheckResult | None"]
CHECKS: dict[str, CheckFn] = {}


def check(name: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under `name` (the name used in suite files and reports)."""

    def register(fn: CheckFn) -> CheckFn:
        if name in CHECKS:
            raise ValueError(f"behaviour check {name!r} is registered twice")
        CHECKS[name] = fn
        return fn

    return register


def get_check(name: str) -> CheckFn:
    try:
        return CHECKS[name]
    except KeyError:
        raise KeyError(f"unknown behaviour check {name!r}; known: {sorted(CHECKS)}") from None


def run_checks(names: Sequence[str], data: CheckInput) -> dict[str, CheckResult]:
    """Run the named checks; only the ones that apply appear in the result."""
    results = {}
    for name in names:
        result = get_check(name)(data)
        if result is not None:
            results[name] = result
    return results


# --- the checks ---------------------------------------------------------------------------------


@check("json_format")
def json_format(data: CheckInput) -> CheckResult:
    """The reply is exactly the house JSON object (surrounding text/fences tolerated by the parser)."""
    return CheckResult(data.reply.format_ok, data.reply.error or "")


@check("sources_valid")
def sources_valid(data: CheckInput) -> CheckResult:
    """Cited doc ids are a subset of the retrieved ones, and a non-null answer cites at least one."""
    reply = data.reply
    if not reply.format_ok:
        return CheckResult(False, "no parseable sources")
    unknown = sorted(set(reply.sources) - set(data.retrieved))
    if unknown:
        return CheckResult(False, f"cited but not retrieved: {unknown}")
    if reply.answer is not None and not reply.sources:
        return CheckResult(False, "answer given without citing any source")
    return CheckResult(True)


@check("cites_gold")
def cites_gold(data: CheckInput) -> CheckResult | None:
    """At least one cited doc is a gold doc of the case (applies only to cases with gold docs)."""
    if not data.gold_docs or data.refusal:
        return None
    if not data.reply.format_ok:
        return CheckResult(False, "no parseable sources")
    hit = set(data.reply.sources) & set(data.gold_docs)
    return CheckResult(bool(hit), "" if hit else f"cited {data.reply.sources}, gold {list(data.gold_docs)}")


@check("grounded")
def grounded(data: CheckInput) -> CheckResult | None:
    """The answer is supported by the text of the passages it cites.

    Heuristic (documented, deliberately simple): every number in the answer must appear in the cited
    passages' text, and at least GROUNDED_MIN_OVERLAP of the answer's content words (lower-cased, stop
    words removed) must appear there. A null answer claims nothing and does not apply.
    """
    reply = data.reply
    if not reply.format_ok:
        return CheckResult(False, "no parseable answer and citations")
    if reply.answer is None:
        return None
    cited = [p.text for p in data.passages if p.doc_id in set(reply.sources)]
    if not cited:
        return CheckResult(False, "the answer cites no retrieved passage")
    support = " ".join(cited).lower()
    support_words = set(content_words(support))
    support_numbers = {_norm_number(n) for n in _NUMBER.findall(support)}
    missing_numbers = [n for n in _NUMBER.findall(reply.answer) if _norm_number(n) not in support_numbers]
    if missing_numbers:
        return CheckResult(False, f"numbers not in cited text: {missing_numbers}")
    words = content_words(reply.answer)
    if not words:
        return CheckResult(True, "no content words to check")
    overlap = sum(w in support_words for w in words) / len(words)
    ok = overlap >= GROUNDED_MIN_OVERLAP
    return CheckResult(ok, f"{overlap:.0%} of content words found in cited text")


@check("refuses_without_context")
def refuses_without_context(data: CheckInput) -> CheckResult | None:
    """On a case whose answer is not in the corpus, the answer is null or a recognisable refusal."""
    if not data.refusal:
        return None
    answer = data.reply.answer
    if answer is None or not answer.strip():
        return CheckResult(True, "null answer")
    return CheckResult(is_refusal(answer), "" if is_refusal(answer) else f"answered: {answer[:80]!r}")


@check("answers_when_supported")
def answers_when_supported(data: CheckInput) -> CheckResult | None:
    """No false refusal: on an answerable case whose gold document was retrieved, the reply gives an answer
    (not null, not a refusal). Applies only there: without the gold passage, refusing is the right thing."""
    if data.refusal or not data.gold_docs or not set(data.gold_docs) & set(data.retrieved):
        return None
    answer = (data.reply.answer or "").strip()
    if not answer:
        return CheckResult(False, "refused (null answer) although a gold passage was retrieved")
    if is_refusal(answer):
        return CheckResult(False, f"refused although a gold passage was retrieved: {answer[:80]!r}")
    return CheckResult(True)


@check("expected_keywords")
def expected_keywords(data: CheckInput) -> CheckResult | None:
    """Every expected keyword occurs in the answer (case-insensitive, numbers compared without separators);
    a keyword given as a list is satisfied by any one of its alternatives."""
    if not data.expected_keywords or data.refusal:
        return None
    answer = (data.reply.answer or "").lower()
    normalised = _NUMBER.sub(lambda m: _norm_number(m.group()), answer)

    def present(keyword: str) -> bool:
        return keyword.lower() in answer or _NUMBER.sub(lambda m: _norm_number(m.group()), keyword.lower()) in normalised

    missing = [k for k in data.expected_keywords if not any(present(a) for a in ([k] if isinstance(k, str) else k))]
    return CheckResult(not missing, f"missing {missing}" if missing else "")


@check("max_length")
def max_length(data: CheckInput) -> CheckResult:
    """The answer (or the raw reply when unparseable) is at most `max_chars` characters."""
    length = len(data.reply.answer or "")
    return CheckResult(length <= data.max_chars, f"{length} chars (max {data.max_chars})")


@check("banned_phrases")
def banned_phrases(data: CheckInput) -> CheckResult:
    """None of the banned phrases appears in the reply (case-insensitive)."""
    text = (data.reply.raw or data.reply.answer or "").lower()
    found = [p for p in data.banned_phrases if p.lower() in text]
    return CheckResult(not found, f"found {found}" if found else "")


# --- helpers --------------------------------------------------------------------------------------


def is_refusal(text: str) -> bool:
    lowered = text.lower()
    return any(re.search(pattern, lowered) for pattern in REFUSAL_PATTERNS)


def content_words(text: str) -> list[str]:
    """Lower-cased words minus stop words and one/two-letter tokens; '1,200' becomes '1200'."""
    words = (_norm_number(w) for w in _WORD.findall(text.lower()))
    return [w for w in words if w not in _STOPWORDS and (len(w) > 2 or w.isdigit())]


def _norm_number(text: str) -> str:
    """'1,200' and '1200' compare equal; a trailing sentence period is not part of the number."""
    return text.replace(",", "").rstrip(".")
