"""The house prompt and reply format, written once: answering, evals and training data all use these functions.

House reply format: one JSON object `{"answer": str | null, "sources": [doc_id, ...]}` — `answer` is null
when the context passages do not contain the answer, `sources` lists the doc ids of the passages used.

The model cites by passage number (`"sources": [2]`), and the system maps the numbers back to the doc ids of
the passages it showed (`parse_reply(raw, passages)`): a small model copies one digit reliably, while it
shortens or mangles paths like `hr/leave.md`. A number outside the prompt's passages stays visible as `[7]`,
an invalid citation. Doc ids the model writes out are still understood (adapters trained before numbering).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Short on purpose: SmolLM2-135M follows a few plain sentences better than a long rulebook.
SYSTEM_PROMPT = (
    "Answer the question using only the context passages. "
    'Reply with JSON only: {"answer": "<short answer>", "sources": [<passage number>]}. '
    'If the context does not contain the answer, reply {"answer": null, "sources": []}.'
)

HOUSE_KEYS = frozenset({"answer", "sources"})
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
# Documents are data, not instructions: inside a passage's text, whatever could pass for the prompt's own
# structure is neutralised (see neutralise_passage_text). Ordinary text never matches, so prompts of normal
# passages stay byte-identical to the ones the adapters were trained on.
_CHAT_CONTROL = re.compile(r"<\|+|\|+>")  # '<|im_start|>', '<|im_end|>', '<|eot_id|>' ... (chat-template tokens)
_PASSAGE_NUMBER = re.compile(r"\[?\s*(\d{1,4})\s*\]?")  # 2, "2", "[2]"
_PROMPT_MARKER = re.compile(r"(\(\s*doc|\b(?:question|context))(?:\s*:)+", re.IGNORECASE)


class Passage(Protocol):
    """What the prompt needs from a retrieved chunk (hybridops.tasks.knowledge.search.SearchHit satisfies it)."""

    doc_id: str
    text: str


def neutralise_passage_text(text: str) -> str:
    """A passage's text as one line that cannot pose as prompt structure.

    Whitespace (every kind str.split knows, so every line break) collapses to single spaces: a passage can
    never start a line, and so never a header line `[n] (doc: id)` or a `Question:` line. On top, the
    prompt's markers lose their colon wherever they occur in the text (`(doc: x)` -> `(doc x)`,
    `Question:` -> `Question`, `Context:` -> `Context`), and chat-template control tokens lose their pipes
    (`<|im_start|>` -> `<im_start>`), which tokenizers would otherwise read as real turn boundaries.
    """
    text = " ".join(text.split())
    text = _CHAT_CONTROL.sub(lambda m: "<" if m.group().startswith("<") else ">", text)
    return _PROMPT_MARKER.sub(r"\1", text)


def format_context(passages: Sequence[Passage], max_chars: int | None = None) -> str:
    """Numbered passages, each headed by its doc id so the model can cite it; the text is data (neutralised)."""
    blocks = []
    for number, passage in enumerate(passages, start=1):
        text = neutralise_passage_text(passage.text)
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars].rstrip() + " ..."
        blocks.append(f"[{number}] (doc: {passage.doc_id})\n{text}")
    return "\n\n".join(blocks) if blocks else "(no passages)"


def build_messages(question: str, passages: Sequence[Passage], max_chars: int | None = None) -> list[dict[str, str]]:
    """Chat messages for one question: the house system prompt, then the context and the question."""
    user = f"Context:\n{format_context(passages, max_chars)}\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def format_reply(answer: str | None, sources: Sequence[str | int]) -> str:
    """The canonical house reply serialisation (doc ids for people and logs, numbers in training targets)."""
    return json.dumps({"answer": answer, "sources": list(sources)}, ensure_ascii=False)


def model_reply(answer: str | None, sources: Sequence[str], passages: Sequence[Passage]) -> str:
    """The reply the model is taught to write: the cited doc ids as the numbers of their first passages."""
    return format_reply(answer, cite_by_number(sources, passages))


def cite_by_number(sources: Sequence[str], passages: Sequence[Passage]) -> list[int]:
    """Doc ids -> the prompt numbers of their first passages (every id must be among the passages)."""
    first: dict[str, int] = {}
    for number, passage in enumerate(passages, start=1):
        first.setdefault(passage.doc_id, number)
    missing = [s for s in sources if s not in first]
    if missing:
        raise ValueError(f"cited doc ids not among the passages: {missing}")
    return list(dict.fromkeys(first[s] for s in sources))


def resolve_citations(cited: Sequence[str | int], passages: Sequence[Passage]) -> list[str]:
    """What the model cited -> doc ids, de-duplicated in citation order.

    A passage number (2, "2" or "[2]") becomes its passage's doc id; a doc id of a shown passage stays itself.
    Anything else is kept in a visibly invalid form (`[7]` for a number no passage has, the text otherwise),
    so the checks and the answer path flag it instead of showing it as a source."""
    ids = [p.doc_id for p in passages]
    resolved = []
    for item in cited:
        number = passage_number(item)
        if isinstance(item, str) and item in ids:
            resolved.append(item)
        elif number is not None:
            resolved.append(ids[number - 1] if 1 <= number <= len(ids) else f"[{number}]")
        else:
            resolved.append(item)
    return list(dict.fromkeys(resolved))


def passage_number(item: str | int) -> int | None:
    """2, "2" or "[2]" -> 2; anything else (True included) -> None."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item
    match = _PASSAGE_NUMBER.fullmatch(item.strip())
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ParsedReply:
    """A model reply after parsing; on format failure `answer` holds the raw text and `format_ok` is False."""

    answer: str | None
    sources: list[str] = field(default_factory=list)
    format_ok: bool = False
    error: str | None = None
    raw: str = ""


def parse_reply(raw: str | None, passages: Sequence[Passage] = ()) -> ParsedReply:
    """Find the house JSON object in the model output (fences and surrounding text allowed); never raises.

    `passages` are the ones the prompt showed, in prompt order: cited numbers are resolved against them."""
    text = raw if isinstance(raw, str) else ""
    error = "no JSON object found"
    for candidate in _candidates(text):
        for obj in _json_objects(candidate):
            problem = _house_problem(obj)
            if problem is None:
                return ParsedReply(answer=obj["answer"], sources=resolve_citations(obj["sources"], passages),
                                   format_ok=True, raw=text)
            error = problem
    stripped = text.strip()
    return ParsedReply(answer=stripped or None, sources=[], format_ok=False, error=error, raw=text)


def _candidates(text: str) -> list[str]:
    """Fenced blocks first (the model meant them as the reply), then the whole text."""
    return [m.group(1) for m in _FENCE.finditer(text)] + [text]


def _json_objects(text: str):
    """Every top-level JSON object that decodes starting at some '{' in the text, in order."""
    decoder = json.JSONDecoder()
    position = text.find("{")
    while position != -1:
        try:
            obj, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        if isinstance(obj, dict):
            yield obj
        position = text.find("{", end)


def _house_problem(obj: dict) -> str | None:
    """Why a decoded object is not a house reply, or None when it is one."""
    if set(obj) != HOUSE_KEYS:
        return f"JSON keys {sorted(obj)} are not exactly ['answer', 'sources']"
    if obj["answer"] is not None and not isinstance(obj["answer"], str):
        return "'answer' must be a string or null"
    sources = obj["sources"]
    if not isinstance(sources, list) or not all(
        isinstance(s, str) or (isinstance(s, int) and not isinstance(s, bool)) for s in sources
    ):
        return "'sources' must be a list of passage numbers or doc ids"
    return None
