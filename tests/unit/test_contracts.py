"""The GX documents contract (real Great Expectations, the real suite file) on batches of candidates."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridops.tasks.core.contracts import ContractError, load_suite
from hybridops.tasks.knowledge.document_contract import (
    DOCUMENTS_SUITE_PATH,
    Candidate,
    make_candidate,
    validate_documents,
)
from hybridops.tasks.knowledge.documents import Document
from hybridops.tasks.core.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOOD_MD = b"---\ntitle: Good\ntags: [a]\n---\n# Good\n\nSome real text."


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(max_document_bytes=10_000, max_text_chars=2_000)


def run(settings: Settings, items: dict[str, bytes]):
    return validate_documents([make_candidate(k, v, "v1", settings) for k, v in items.items()], settings)


def codes_by_id(result) -> dict[str, list[str]]:
    return {r.doc_id: r.codes for r in result.rejected}


def test_suite_file_is_a_gx_suite_with_settings_injected(settings: Settings) -> None:
    suite = load_suite(DOCUMENTS_SUITE_PATH, settings)
    by_reason = {e.meta["reason"]: e for e in suite.expectations}
    assert {"unsafe_id", "id_too_long", "invalid_utf8", "empty_text", "too_large", "text_too_long",
            "metadata_types", "binary_content", "parse_error"} <= set(by_reason)
    assert by_reason["too_large"].max_value == 10_000
    assert by_reason["text_too_long"].max_value == 2_000


def test_unknown_settings_name_in_a_contract_is_an_error(tmp_path: Path, settings: Settings) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "name: c\nexpectations:\n- type: expect_column_values_to_be_between\n"
        "  kwargs: {column: x, max_value: 1}\n  meta: {reason: r, settings: {max_value: no_such_field}}\n"
    )
    with pytest.raises(ContractError, match="no_such_field"):
        load_suite(bad, settings)


def test_example_corpus_passes(settings: Settings) -> None:
    big = Settings()  # default limits
    corpus = EXAMPLES / "corpus"
    result = run(big, {p.relative_to(corpus).as_posix(): p.read_bytes() for p in corpus.rglob("*") if p.is_file()})
    assert result.rejected == []
    assert len(result.passed) >= 20 and all(isinstance(d, Document) for d in result.passed)


def test_example_bad_inputs_are_each_rejected_for_their_own_reason(settings: Settings) -> None:
    bad = EXAMPLES / "bad"
    result = run(settings, {p.name: p.read_bytes() for p in bad.iterdir()})
    assert result.passed == []
    assert codes_by_id(result) == {
        "empty.md": ["empty_text"],
        "invalid-utf8.txt": ["invalid_utf8"],
        "malformed.json": ["malformed_json"],
        "brochure.pdf": ["unsupported_format"],
        "binary.txt": ["binary_content"],
        "nested-metadata.md": ["metadata_types"],
    }


@pytest.mark.parametrize(
    ("doc_id", "data", "code"),
    [
        ("empty.txt", b"", "empty_text"),
        ("blank.md", b"   \n\n\t\n", "empty_text"),
        ("binary.txt", bytes(range(0, 32)) * 4, "binary_content"),
        ("nul.md", b"text\x00with nul", "binary_content"),
        ("latin1.txt", "café".encode("latin-1"), "invalid_utf8"),
        ("random.md", bytes([0xFF, 0xFE, 0xFA, 0x80]) * 10, "invalid_utf8"),
        ("broken.json", b'{"text": "unterminated', "malformed_json"),
        ("array.json", b"[1,2,3]", "invalid_json_document"),
        ("huge.txt", b"word " * 3_000, "too_large"),
        ("long.txt", b"word " * 1_000, "text_too_long"),
        ("slides.pptx", b"PK\x03\x04", "unsupported_format"),
        ("../escape.md", GOOD_MD, "unsafe_id"),
        ("a/../../etc/passwd.md", GOOD_MD, "unsafe_id"),
        ("..", GOOD_MD, "unsafe_id"),
        ("/abs/path.md", GOOD_MD, "unsafe_id"),
        ("a/./b.md", GOOD_MD, "unsafe_id"),
        ("a//b.md", GOOD_MD, "unsafe_id"),
        ("dos\\path.md", GOOD_MD, "unsafe_id"),
        ("tab\there.md", GOOD_MD, "unsafe_id"),
        ("x" * 600 + ".md", GOOD_MD, "id_too_long"),
        ("nested.json", b'{"text": "t", "metadata": {"owner": {"name": "x"}}}', "metadata_types"),
        ("nan.json", b'{"text": "t", "metadata": {"score": NaN}}', "metadata_types"),
        ("keys.json", b'{"text": "t", "metadata": {"1st": "x"}}', "metadata_keys"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(settings: Settings, doc_id: str, data: bytes, code: str) -> None:
    result = run(settings, {doc_id: data, "good.md": GOOD_MD})
    assert [d.doc_id for d in result.passed] == ["good.md"]  # good documents in the batch pass regardless
    (rejection,) = result.rejected
    assert rejection.doc_id == doc_id
    assert code in rejection.codes
    assert all(reason.startswith(c + ": ") for c, reason in zip(rejection.codes, rejection.reasons))
    assert rejection.size == len(data) and rejection.source_version == "v1"


@pytest.mark.parametrize(
    "doc_id", ["with space/my notes.md", "ünïcødé/日本語 ファイル.md", "dots.in.name.md", "a/.hidden/x.md", "café menu.txt"]
)
def test_spaces_and_unicode_ids_are_valid(settings: Settings, doc_id: str) -> None:
    result = run(settings, {doc_id: GOOD_MD})
    assert result.rejected == [] and [d.doc_id for d in result.passed] == [doc_id]


def test_reasons_name_the_limit_and_every_failed_expectation(settings: Settings) -> None:
    result = run(settings, {"../bad\\id.txt": b"x" * 20_000})
    (rejection,) = result.rejected
    assert rejection.codes == ["unsafe_id", "too_large"]
    assert "20000 bytes" in rejection.reasons[1] and "10000" in rejection.reasons[1]


def test_limits_come_from_settings(settings: Settings) -> None:
    data = {"doc.txt": b"word " * 3_000}
    assert codes_by_id(run(settings, data)) == {"doc.txt": ["too_large"]}
    roomy = Settings(max_document_bytes=100_000, max_text_chars=100_000)
    assert [d.doc_id for d in run(roomy, data).passed] == ["doc.txt"]


def test_duplicate_ids_in_one_batch_are_rejected(settings: Settings) -> None:
    twice = [make_candidate("same.md", GOOD_MD, "v1", settings), make_candidate("same.md", GOOD_MD, "v2", settings)]
    result = validate_documents(twice, settings)
    assert result.passed == [] and [r.codes for r in result.rejected] == [["duplicate_id"], ["duplicate_id"]]


def test_hand_built_candidates_and_empty_batches(settings: Settings) -> None:
    assert validate_documents([], settings).passed == []
    orphan = Candidate("never-parsed.md", 10, "v1")  # neither document nor error: must not pass
    result = validate_documents([orphan], settings)
    assert result.passed == [] and result.rejected[0].codes == ["not_parsed"]


def test_a_broken_expectation_fails_loudly_instead_of_passing_everything(tmp_path: Path, settings: Settings) -> None:
    suite = tmp_path / "c.yaml"
    suite.write_text(
        "name: c\nexpectations:\n- type: expect_column_values_to_be_between\n"
        "  kwargs: {column: no_such_column, max_value: 1}\n  meta: {reason: r}\n"
    )
    with pytest.raises(ContractError, match="no_such_column"):
        validate_documents([make_candidate("a.md", GOOD_MD, "v1", settings)], settings, suite_path=suite)
