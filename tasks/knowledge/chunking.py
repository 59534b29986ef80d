"""Split a Document into token-bounded, structure-aware chunks with deterministic ids.

Sections come from markdown headings (HTML headings were turned into '#' lines by the parser); each section
is chunked on its own, so editing one section leaves the other sections' chunk texts (and their cached
embeddings) unchanged. A section that fits is one chunk; a larger one is packed greedily from paragraphs,
then lines/sentences, then word windows, with `overlap` tokens repeated between consecutive chunks.
Every chunk's text starts with its heading path ("Refunds > Exceptions"), so it carries its context. The
document title is deliberately NOT embedded: a title/front-matter change is a metadata-only update that
must not re-embed anything (the index stores the title as a property).

Token counts: every piece of text is counted once; a joined chunk is estimated as the sum of its parts plus
the measured cost of the separators and the tokenizer's special tokens, which is exact for tokenizers that
split on whitespace first (WordPiece, as MiniLM uses) and an upper bound for the usual BPE ones.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from hybridops.tasks.knowledge.documents import Document

CHUNK_ID_NAMESPACE = uuid.UUID("6f1c0d1e-8b0a-5a53-9d1e-4b79c2a8e3f1")
CONTEXT_SEPARATOR = " > "
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Chunk:
    """One embeddable piece of a document; text already carries its heading path as context."""

    chunk_id: str
    doc_id: str
    index: int
    text: str
    text_hash: str
    heading_path: tuple[str, ...]


def chunk_id(doc_id: str, index: int, text_hash: str) -> str:
    """uuid5 of (doc id, position, text hash): same input -> same id; any change -> a new id."""
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE, f"{doc_id}\x1f{index}\x1f{text_hash}"))


def chunk_document(
    doc: Document, count_tokens: Callable[[str], int], max_tokens: int = 256, overlap: int = 32
) -> list[Chunk]:
    """Deterministic chunks, each <= max_tokens by count_tokens, overlapping inside oversized sections."""
    if overlap < 0 or overlap >= max_tokens:
        raise ValueError(f"overlap must be in [0, max_tokens), got {overlap} for max_tokens={max_tokens}")
    counter = _Counter(count_tokens)
    if max_tokens - counter.specials < 8:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for text")
    pieces: list[tuple[tuple[str, ...], str]] = []
    for path, body in split_sections(doc.text):
        pieces.extend(_chunk_section(path, body, counter, max_tokens, overlap))
    if not pieces and doc.text.strip():  # headings only: index the headings themselves
        pieces = _chunk_section((), doc.text.strip(), counter, max_tokens, overlap)
    chunks = []
    for index, (path, text) in enumerate(pieces):
        text_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
        chunks.append(Chunk(chunk_id(doc.doc_id, index, text_hash), doc.doc_id, index, text, text_hash, path))
    return chunks


def split_sections(text: str) -> list[tuple[tuple[str, ...], str]]:
    """(heading path, body) per markdown section, in order; headings inside code fences are not headings."""
    sections: list[tuple[tuple[str, ...], str]] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def close() -> None:
        content = "\n".join(body).strip("\n")
        if content.strip():
            sections.append((tuple(title for _, title in stack), content))
        body.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (m := _HEADING.match(line)):
            close()
            level = len(m.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, m.group(2).strip()))
            continue
        body.append(line)
    close()
    return sections


# --- internals ----------------------------------------------------------------------------------------
class _Counter:
    """count_tokens minus the tokenizer's fixed special tokens, plus measured separator costs."""

    def __init__(self, count_tokens: Callable[[str], int]):
        self.count = count_tokens
        self.specials = count_tokens("")
        word = self.cost("word")
        self.sep = {s: max(0, self.cost(f"word{s}word") - 2 * word) for s in ("\n\n", "\n", " ")}

    def cost(self, text: str) -> int:
        return max(0, self.count(text) - self.specials)


@dataclass
class _Unit:
    text: str
    cost: int
    sep: str  # separator before this unit when it follows another one


def _chunk_section(
    path: tuple[str, ...], body: str, counter: _Counter, max_tokens: int, overlap: int
) -> list[tuple[tuple[str, ...], str]]:
    path, prefix, budget = _fit_context(path, counter, max_tokens)
    if len(body) <= budget * 12:  # likely fits: one count of the whole body
        cost = counter.cost(body)
        if cost <= budget:
            return [(path, prefix + body)]
    paragraphs = [_units(p, counter, budget) for p in _paragraphs(body)]
    bodies = _pack(paragraphs, counter, budget, overlap)
    return [(path, prefix + text) for text in bodies]


def _fit_context(path: tuple[str, ...], counter: _Counter, max_tokens: int) -> tuple[tuple[str, ...], str, int]:
    """The context line and the token budget left for the body; long heading paths are shortened."""
    room = max_tokens - counter.specials
    shown = path
    while shown:
        prefix = CONTEXT_SEPARATOR.join(shown) + "\n\n"
        cost = counter.cost(CONTEXT_SEPARATOR.join(shown)) + counter.sep["\n\n"]
        if cost <= room // 4:
            return path, prefix, room - cost
        shown = shown[1:]
    return path, "", room


def _paragraphs(body: str) -> list[str]:
    """Blank-line separated blocks; a fenced code block stays one block."""
    blocks: list[str] = []
    current: list[str] = []
    in_fence = False
    for line in body.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


_LINE_BLOCK = re.compile(r"^\s*(?:[-*+]\s|\d+[.)]\s|\||```|~~~|    )")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])(\s+)(?=\S)")


def _units(paragraph: str, counter: _Counter, budget: int) -> list[_Unit]:
    """A paragraph as sentences (lists, tables and code as lines first), each counted once.

    Prose keeps its soft line breaks inside sentences; a unit longer than the budget becomes word windows.
    """
    lines = paragraph.split("\n")
    if any(_LINE_BLOCK.match(line) for line in lines):
        segments = [(line, "\n") for line in lines if line.strip()]
    else:
        segments = [(paragraph, "\n")]
    units: list[_Unit] = []
    for si, (segment, segment_sep) in enumerate(segments):
        parts = _SENTENCE_SPLIT.split(segment)
        for pi in range(0, len(parts), 2):
            sentence = parts[pi]
            if pi == 0:
                sep = "\n\n" if si == 0 else segment_sep
            else:
                sep = "\n" if "\n" in parts[pi - 1] else " "
            cost = counter.cost(sentence)
            if cost <= budget:
                units.append(_Unit(sentence, cost, sep))
            else:
                for wi, (window, wcost) in enumerate(_windows(sentence, cost, counter, budget)):
                    units.append(_Unit(window, wcost, sep if wi == 0 else " "))
    return units


def _windows(text: str, cost: int, counter: _Counter, budget: int) -> list[tuple[str, int]]:
    """Split text that exceeds budget into consecutive word (or, for giant words, character) windows."""
    words = text.split()
    if len(words) <= 1:
        return _char_windows(text, cost, counter, budget)
    out: list[tuple[str, int]] = []
    per_word = cost / len(words)
    start = 0
    while start < len(words):
        n = max(1, min(len(words) - start, int(budget / per_word * 0.95)))
        while True:
            window = " ".join(words[start:start + n])
            wcost = counter.cost(window)
            if wcost <= budget:
                break
            if n == 1:  # a single word longer than the budget
                out.extend(_char_windows(window, wcost, counter, budget))
                window = ""
                break
            n = max(1, int(n * min(0.9, budget / wcost)))
        if window:
            out.append((window, wcost))
        start += n
    return out


def _char_windows(text: str, cost: int, counter: _Counter, budget: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    per_char = max(cost, 1) / max(len(text), 1)
    start = 0
    while start < len(text):
        n = max(1, min(len(text) - start, int(budget / per_char * 0.95)))
        while True:
            window = text[start:start + n]
            wcost = counter.cost(window)
            if wcost <= budget or n == 1:
                break
            n = max(1, int(n * min(0.9, budget / wcost)))
        out.append((window, wcost))
        start += n
    return out


def _pack(paragraphs: list[list[_Unit]], counter: _Counter, budget: int, overlap: int) -> list[str]:
    """Greedy packing: whole paragraphs when they fit, else unit by unit, with an overlap tail carried over."""
    chunks: list[list[_Unit]] = []
    current: list[_Unit] = []
    total = 0

    def cost_with(unit: _Unit) -> int:
        return total + (counter.sep[unit.sep] if current else 0) + unit.cost

    def close() -> None:
        nonlocal current, total
        chunks.append(current)
        current = _overlap_tail(current, counter, overlap)
        total = _joined_cost(current, counter)

    for units in paragraphs:
        if not units:
            continue
        para_cost = sum(u.cost for u in units) + sum(counter.sep[u.sep] for u in units[1:])
        if current and total + counter.sep["\n\n"] + para_cost > budget and para_cost <= budget:
            close()  # start the paragraph in a fresh chunk (after the overlap) rather than splitting it
            while current and total + counter.sep["\n\n"] + para_cost > budget:
                current = current[1:]
                total = _joined_cost(current, counter)
        for unit in units:
            if current and cost_with(unit) > budget:
                close()
                while current and cost_with(unit) > budget:  # overlap must never break the bound
                    current = current[1:]
                    total = _joined_cost(current, counter)
            total = cost_with(unit)
            current.append(unit)
    if current:  # always holds at least one unit added after the last close()
        chunks.append(current)
    return [_join(units) for units in chunks]


def _overlap_tail(units: list[_Unit], counter: _Counter, overlap: int) -> list[_Unit]:
    """The longest suffix of whole units within `overlap` tokens; else the last words of the last unit."""
    if overlap <= 0 or not units:
        return []
    tail: list[_Unit] = []
    cost = 0
    for unit in reversed(units[1:]):  # never carry the whole chunk over
        extra = unit.cost + (counter.sep[tail[0].sep] if tail else 0)
        if cost + extra > overlap:
            break
        tail.insert(0, unit)
        cost += extra
    if tail:
        return tail
    words = units[-1].text.split()
    if len(words) < 2:
        return []
    n = min(len(words) - 1, max(1, int(overlap * len(words) / max(units[-1].cost, 1))))
    while n >= 1:
        text = " ".join(words[-n:])
        wcost = counter.cost(text)
        if wcost <= overlap:
            return [_Unit(text, wcost, " ")]
        n = int(n * min(0.8, overlap / wcost))
    return []


def _joined_cost(units: list[_Unit], counter: _Counter) -> int:
    return sum(u.cost for u in units) + sum(counter.sep[u.sep] for u in units[1:])


def _join(units: list[_Unit]) -> str:
    parts = [units[0].text]
    for unit in units[1:]:
        parts.append(unit.sep + unit.text)
    return "".join(parts)
