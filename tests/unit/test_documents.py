"""Parsing each supported format into a Document, and the precise reason codes for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridops.tasks.knowledge.documents import DocumentError, Document, meta_hash, parse_document

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"


def parse(doc_id: str, data: str | bytes) -> Document:
    return parse_document(doc_id, data.encode() if isinstance(data, str) else data, "v1")


def test_markdown_front_matter_becomes_title_and_scalar_metadata() -> None:
    doc = parse(
        "policies/refunds.md",
        "---\ntitle: Refunds\ntags: [returns, money]\nupdated_at: 2025-03-04\nsource-url: https://x.example/r\n"
        "priority: 2\ndraft: false\n---\n# Refund policy\n\nReturn within 45 days.\n",
    )
    assert doc.title == "Refunds"
    assert doc.text == "# Refund policy\n\nReturn within 45 days."
    assert doc.metadata == {
        "tags": "returns, money",
        "updated_at": "2025-03-04",
        "source_url": "https://x.example/r",
        "priority": 2,
        "draft": False,
    }
    assert doc.source_version == "v1"
    assert len(doc.text_hash) == 64 and len(doc.meta_hash) == 64


def test_markdown_title_falls_back_to_first_heading_then_file_name() -> None:
    assert parse("a/guide.md", "Intro line\n\n## Setup steps\n\ntext").title == "Setup steps"
    assert parse("a/guide.md", "```\n# comment in code\n```\nplain text only").title == "guide"


@pytest.mark.parametrize(
    "front_matter", ["---\ntitle: [unclosed\n---\nbody", "---\n- just\n- a list\n---\nbody"]
)
def test_markdown_bad_front_matter_is_a_clear_error(front_matter: str) -> None:
    with pytest.raises(DocumentError) as err:
        parse("x.md", front_matter)
    assert err.value.reason_code == "invalid_front_matter"


def test_text_title_is_first_line_when_it_reads_like_a_title() -> None:
    doc = parse("stores/hours.txt", "Store hours\n\nWe open at 9 am.\r\nWe close at 9 pm.\r\n")
    assert doc.title == "Store hours"
    assert doc.text == "Store hours\n\nWe open at 9 am.\nWe close at 9 pm."  # CRLF normalised
    assert parse("notes/long-note.txt", "This first line is a sentence.\nmore").title == "long-note"


def test_html_keeps_visible_text_and_headings_drops_scripts_styles_hidden() -> None:
    html = """<html><head><title>Warranty</title><style>.x{color:red}</style>
    <meta name="keywords" content="warranty, repairs"><script>track("secret-script")</script></head>
    <body><h1>Coverage</h1><p>Packs are covered <b>for life</b>.</p><div hidden>hidden-text</div>
    <p style="display: none">invisible-text</p><h2>Claims</h2><ul><li>Photo</li><li>Order number</li></ul>
    <table><tr><th>Item</th><th>Years</th></tr><tr><td>Tent</td><td>5</td></tr></table></body></html>"""
    doc = parse("w.html", html)
    assert doc.title == "Warranty"
    assert doc.metadata == {"tags": "warranty, repairs"}
    assert doc.text.split("\n\n") == [
        "# Coverage", "Packs are covered for life.", "## Claims", "- Photo\n- Order number", "Item | Years\nTent | 5"
    ]
    for unwanted in ("secret-script", "color:red", "hidden-text", "invisible-text"):
        assert unwanted not in doc.text


def test_html_title_falls_back_to_first_heading() -> None:
    assert parse("page.htm", "<body><h2>Store hours</h2><p>9 to 5</p></body>").title == "Store hours"


def test_json_document_with_title_and_metadata() -> None:
    doc = parse("a/b.json", '{"title": "Gift cards", "text": "Never expire.", "metadata": {"tags": ["a", "b"], "v": 3}}')
    assert (doc.title, doc.text, doc.metadata) == ("Gift cards", "Never expire.", {"tags": "a, b", "v": 3})
    assert parse("a/b.json", '{"text": "# Heading\\n\\nbody"}').title == "Heading"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (b"[1, 2]", "invalid_json_document"),
        (b'{"title": "no text"}', "invalid_json_document"),
        (b'{"text": 42}', "invalid_json_document"),
        (b'{"text": "ok", "metadata": [1]}', "invalid_json_document"),
    ],
)
def test_json_errors_have_specific_reason_codes(data: bytes, code: str) -> None:
    with pytest.raises(DocumentError) as err:
        parse("doc.json", data)
    assert err.value.reason_code == code


@pytest.mark.parametrize("doc_id", ["report.pdf", "image.PNG", "README", "archive.tar.gz", "dir/.md.bak"])
def test_unsupported_extensions_are_rejected(doc_id: str) -> None:
    with pytest.raises(DocumentError) as err:
        parse(doc_id, "text")
    assert err.value.reason_code == "unsupported_format"


def test_extension_match_is_case_insensitive() -> None:
    assert parse("NOTES.MD", "# Hi\n\nthere").title == "Hi"


@pytest.mark.parametrize("data", [b"caf\xe9 latin-1", b"\xff\xfe\x00\x01binary", b"ok then \xc3"])
def test_invalid_utf8_is_rejected_with_the_byte_offset(data: bytes) -> None:
    with pytest.raises(DocumentError) as err:
        parse("x.txt", data)
    assert err.value.reason_code == "invalid_utf8"
    assert "byte" in err.value.message


def test_utf8_bom_is_not_part_of_the_text() -> None:
    assert parse("x.txt", b"\xef\xbb\xbfHello").text == "Hello"


def test_empty_inputs_parse_to_empty_text_for_the_contract_to_reject() -> None:
    assert parse("e.md", b"").text == ""
    assert parse("e.md", "---\ntitle: Only front matter\n---\n").text == ""
    assert parse("e.html", "<html><script>x()</script></html>").text == ""


def test_title_or_metadata_change_alters_meta_hash_but_not_text_hash() -> None:
    a = parse("d.md", "---\ntitle: A\nowner: x\n---\nSame body")
    b = parse("d.md", "---\ntitle: B\nowner: x\n---\nSame body")
    c = parse("d.md", "---\nowner: x\ntitle: A\n---\nSame body\n\n\n")
    assert a.text_hash == b.text_hash and a.meta_hash != b.meta_hash
    assert (a.text_hash, a.meta_hash) == (c.text_hash, c.meta_hash)  # key order / trailing blank lines
    assert meta_hash("t", {"a": 1, "b": 2}) == meta_hash("t", {"b": 2, "a": 1})


def test_document_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(DocumentError("invalid_utf8", "bad byte")))
    assert (err.reason_code, err.message) == ("invalid_utf8", "bad byte")


def test_example_corpus_covers_every_format_with_realistic_length() -> None:
    files = [p for p in CORPUS.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".md", ".txt", ".html", ".json"}
    assert 20 <= len(files) <= 30
    for path in files:
        doc = parse(path.relative_to(CORPUS).as_posix(), path.read_bytes())
        assert 150 <= len(doc.text.split()) <= 600, path
        assert doc.title and doc.title != path.stem or path.suffix == ".txt", path


# --- Hostile inputs: every one is a clean DocumentError with a precise code, fast ----------------------
def _alias_bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        name, prev = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "---\n" + "\n".join(lines) + "\n---\nbody"


HOSTILE = [
    ("bad-date.md", "---\ntitle: X\nupdated: 2024-13-45\n---\nbody", "invalid_front_matter"),
    ("recursive-alias.md", "---\na: &a [1, *a]\n---\nbody", "alias_bomb"),
    ("recursive-map.md", "---\na: &a {b: *a}\n---\nbody", "alias_bomb"),
    ("alias-bomb.md", _alias_bomb(), "alias_bomb"),
    ("undefined-alias.md", "---\na: *nope\n---\nbody", "invalid_front_matter"),
    ("huge-int.md", "---\nn: " + "9" * 5000 + "\n---\nbody", "number_too_large"),
    ("huge-sexagesimal.md", "---\nn: " + "1:" * 3000 + "1\n---\nbody", "number_too_large"),
    ("deep-flow.md", "---\na: " + "[" * 100_000 + "]" * 100_000 + "\n---\nbody", "too_deep"),
    ("deep-block.md", "---\n" + "".join(" " * i + f"k{i}:\n" for i in range(80)) + "---\nbody", "too_deep"),
    ("surrogate.json", '{"text": "broken \\ud800 text"}', "invalid_text"),
    ("surrogate-key.json", '{"text": "ok", "metadata": {"k\\udfff": 1}}', "invalid_text"),
    ("surrogate-title.json", '{"title": "\\udc00", "text": "ok"}', "invalid_text"),
    ("deep.json", '{"text": "x", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}", "too_deep"),
    ("deep-moderate.json", '{"text": "x", "extra": ' + "[" * 70 + "]" * 70 + "}", "too_deep"),
    ("huge-int.json", '{"text": "x", "metadata": {"n": ' + "9" * 5000 + "}}", "number_too_large"),
    ("deep.html", "<html><body>" + "<div>" * 5000 + "deep" + "</div>" * 5000 + "</body></html>", "too_deep"),
    ("unclosed.html", "<p>" + "<span>" * 300 + "x", "too_deep"),
]


@pytest.mark.parametrize(("doc_id", "data", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_documents_are_clean_errors_with_a_reason_code(doc_id: str, data: str, code: str) -> None:
    import time

    started = time.perf_counter()
    with pytest.raises(DocumentError) as err:
        parse(doc_id, data.encode("utf-8", "surrogatepass"))
    assert err.value.reason_code == code, err.value.message
    assert time.perf_counter() - started < 5


def test_front_matter_values_are_plain_json_data() -> None:
    import json

    doc = parse("d.md", "---\nday: 2025-03-04\nat: 2025-03-04 10:30:00\nboth: [2025-01-01, x]\n"
                        "a: &shared [one, two]\nb: *shared\nn: 12345678901234567890\n---\nbody")
    assert doc.metadata["day"] == "2025-03-04" and doc.metadata["at"] == "2025-03-04T10:30:00"
    assert doc.metadata["both"] == "2025-01-01, x"  # dates inside lists are strings too
    assert doc.metadata["a"] == doc.metadata["b"] == "one, two"  # a few plain aliases are fine
    assert doc.metadata["n"] == 12345678901234567890  # wide but short: the contract judges it (metadata_types)
    json.dumps(doc.metadata)


def test_reasonable_nesting_still_parses() -> None:
    html = "<ul>" + "<li><ul>" * 40 + "<li>leaf" + "</ul>" * 40 + "</ul>"
    assert "leaf" in parse("nested.html", html).text
    data = '{"text": "x", "extra": ' + "[" * 60 + "]" * 60 + "}"
    assert parse("nested.json", data).text == "x"


def test_heading_with_a_long_run_of_spaces_is_linear_time() -> None:
    import time

    started = time.perf_counter()
    doc = parse("h.md", "# a" + " " * 200_000 + "b #  \n\nbody")
    assert time.perf_counter() - started < 2
    assert doc.title.startswith("a") and doc.title.endswith("b")
    assert parse("h2.md", "## Setup steps ##\n\nx").title == "Setup steps"


def test_html_walk_keeps_paragraphs_lists_and_inline_text_in_order() -> None:
    html = ("<div><p>One <i>two <b>three</b></i> four</p><span><p>inside span</p></span>"
            "<ol><li>a <em>b</em></li><li><p>c</p></li></ol><p>end<br>line</p></div>")
    assert parse("o.html", html).text.split("\n\n") == [
        "One two three four", "inside span", "- a b\n- c", "end line"  # as before the walk became iterative
    ]
