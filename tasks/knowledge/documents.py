"""Turn one landing-zone object into a typed Document (md/txt/html/json), or say precisely why not."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from hybridops.tasks.core.errors import DocumentError  # the parsers raise it; defined in core, the store raises it too

Scalar = str | int | float | bool

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".md", ".markdown", ".txt", ".html", ".htm", ".json")

# Reason codes raised by parse_document (the contract adds its own, see data_contracts/documents.yaml).
UNSUPPORTED_FORMAT = "unsupported_format"
INVALID_UTF8 = "invalid_utf8"
MALFORMED_JSON = "malformed_json"
INVALID_JSON_DOCUMENT = "invalid_json_document"
INVALID_FRONT_MATTER = "invalid_front_matter"
INVALID_HTML = "invalid_html"
ALIAS_BOMB = "alias_bomb"
TOO_DEEP = "too_deep"
NUMBER_TOO_LARGE = "number_too_large"
INVALID_TEXT = "invalid_text"

# Bounds that keep one hostile file from stalling a refresh (all far above what real documents use).
MAX_NESTING = 64
"""Deepest nesting of front matter / JSON values and of HTML elements below <html> (else 'too_deep')."""
MAX_HTML_DEPTH = 256
MAX_ALIAS_EXPANSION = 1_000
"""YAML aliases may expand to at most this many nodes in total (billion laughs -> 'alias_bomb')."""
MAX_NUMBER_CHARS = 64
"""Longest integer literal accepted (int64 needs 19 digits; the contract rejects wider values anyway)."""


@dataclass(frozen=True)
class Document:
    """A parsed document: extracted text plus scalar metadata and the hashes the refresh diffs on.

    metadata values are str/int/float/bool once the contract passed (dates become ISO strings, lists of
    scalars become ", "-joined strings, None values are dropped, keys are made identifier-like); a parser
    keeps anything else as-is so the contract can reject it with a reason instead of losing it.
    """

    doc_id: str
    title: str
    text: str
    metadata: Mapping[str, object] = field(default_factory=dict)
    text_hash: str = ""
    meta_hash: str = ""
    source_version: str = ""

    @classmethod
    def build(
        cls, doc_id: str, title: str, text: str, metadata: Mapping[str, object], source_version: str
    ) -> Document:
        """A Document with its hashes computed."""
        metadata = dict(metadata)
        return cls(
            doc_id=doc_id,
            title=title,
            text=text,
            metadata=metadata,
            text_hash=sha256_text(text),
            meta_hash=meta_hash(title, metadata),
            source_version=source_version,
        )


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def meta_hash(title: str, metadata: Mapping[str, object]) -> str:
    """sha256 of canonical JSON of title + metadata (key order does not matter)."""
    canonical = json.dumps(
        {"title": title, "metadata": metadata}, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
        default=str,
    )
    return sha256_text(canonical)


def extension(doc_id: str) -> str:
    return PurePosixPath(doc_id).suffix.lower()


def parse_document(doc_id: str, data: bytes, source_version: str) -> Document:
    """Parse raw bytes by the id's extension; raises DocumentError with a reason code."""
    ext = extension(doc_id)
    parser = _PARSERS.get(ext)
    if parser is None:
        supported = ", ".join(SUPPORTED_EXTENSIONS)
        raise DocumentError(UNSUPPORTED_FORMAT, f"extension {ext or '(none)'!r} is not one of {supported}")
    title, text, metadata = parser(doc_id, _decode(data))
    _check_values([title, text, metadata])
    return Document.build(doc_id, title, _tidy(text), _normalise_metadata(metadata), source_version)


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            INVALID_UTF8, f"not valid UTF-8 at byte {exc.start} ({data[exc.start:exc.start + 1]!r})"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _tidy(text: str) -> str:
    """Strip trailing spaces per line and collapse runs of blank lines (stable text -> stable hashes)."""
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _file_title(doc_id: str) -> str:
    return PurePosixPath(doc_id).stem or doc_id


# --- Markdown -------------------------------------------------------------------------------------
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+)$")  # trailing ' #' are stripped in code: linear time


def _parse_markdown(doc_id: str, text: str) -> tuple[str, str, dict[str, object]]:
    metadata: dict[str, object] = {}
    match = _FRONT_MATTER.match(text)
    if match:
        metadata = _load_front_matter(match.group(1) or "")
        text = text[match.end():]
    title = metadata.pop("title", None)
    if title is None or str(title).strip() == "":
        title = first_heading(text) or _file_title(doc_id)
    return str(title).strip(), text, metadata


def _load_front_matter(block: str) -> dict[str, object]:
    import yaml

    if not block.strip():
        return {}
    try:
        _check_yaml_events(block)
        loaded = yaml.load(block, Loader=_front_matter_loader())
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's own limit, hit while scanning ahead
            raise DocumentError(TOO_DEEP, f"front matter nests deeper than {MAX_NESTING} levels") from None
        raise DocumentError(INVALID_FRONT_MATTER, f"front matter is not valid YAML: {exc}") from None
    except RecursionError:  # unreachable after the event check; a last line of defence
        raise DocumentError(TOO_DEEP, f"front matter nests deeper than {MAX_NESTING} levels") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise DocumentError(INVALID_FRONT_MATTER, f"front matter must be a mapping, got {type(loaded).__name__}")
    return {str(k): v for k, v in loaded.items()}


def _check_yaml_events(block: str) -> None:
    """Walk the YAML event stream (iterative, nothing constructed yet) and refuse what could blow up later.

    Nesting deeper than MAX_NESTING -> too_deep; an alias to a node that is still open (a recursive
    structure) or aliases expanding to more than MAX_ALIAS_EXPANSION nodes (billion laughs) -> alias_bomb.
    """
    import yaml
    from yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

    sizes: dict[str, int] = {}  # anchor -> nodes its value expands to
    open_nodes: list[list] = []  # [anchor, nodes so far] per open collection
    expanded = 0

    def add(count: int) -> None:
        if open_nodes:
            open_nodes[-1][1] += count

    for event in yaml.parse(block, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, CollectionStartEvent):
            if len(open_nodes) >= MAX_NESTING:
                raise DocumentError(TOO_DEEP, f"front matter nests deeper than {MAX_NESTING} levels")
            open_nodes.append([event.anchor, 1])
        elif isinstance(event, CollectionEndEvent):
            anchor, count = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = count
            add(count)
        elif isinstance(event, ScalarEvent):
            if event.anchor is not None:
                sizes[event.anchor] = 1
            add(1)
        elif isinstance(event, AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_nodes):
                raise DocumentError(ALIAS_BOMB, f"front matter alias *{event.anchor} refers to itself (recursive)")
            size = sizes.get(event.anchor)
            if size is None:
                raise DocumentError(INVALID_FRONT_MATTER, f"front matter alias *{event.anchor} is not defined")
            expanded += size
            if expanded > MAX_ALIAS_EXPANSION:
                raise DocumentError(
                    ALIAS_BOMB, f"front matter aliases expand to more than {MAX_ALIAS_EXPANSION} values"
                )
            add(size)


_LOADER: list[type] = []


def _front_matter_loader() -> type:
    """A safe loader whose values are plain JSON-able data: dates become ISO strings (an impossible date
    like 2024-13-45 is a clear invalid_front_matter error, not a ValueError) and huge integers are refused."""
    if _LOADER:
        return _LOADER[0]
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class FrontMatterLoader(base):  # type: ignore[misc, valid-type]
        pass

    def timestamp(loader, node):
        try:
            return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node).isoformat()
        except (ValueError, OverflowError) as exc:
            raise DocumentError(
                INVALID_FRONT_MATTER,
                f"{node.value!r} (line {node.start_mark.line + 1}) is not a valid date or time: {exc}",
            ) from None

    def integer(loader, node):
        if len(str(node.value)) > MAX_NUMBER_CHARS:
            raise DocumentError(
                NUMBER_TOO_LARGE,
                f"front matter number at line {node.start_mark.line + 1} has {len(str(node.value))} characters; "
                f"at most {MAX_NUMBER_CHARS} allowed",
            )
        return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)

    FrontMatterLoader.add_constructor("tag:yaml.org,2002:timestamp", timestamp)
    FrontMatterLoader.add_constructor("tag:yaml.org,2002:int", integer)
    _LOADER.append(FrontMatterLoader)
    return FrontMatterLoader


def first_heading(text: str) -> str | None:
    """The first markdown ATX heading's text, ignoring fenced code blocks."""
    in_fence = False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if not in_fence and (m := _HEADING.match(line)):
            rest = m.group(2)
            return (rest.rstrip(" \t#") or rest[:1]).strip()
    return None


# --- Plain text -----------------------------------------------------------------------------------
def _parse_text(doc_id: str, text: str) -> tuple[str, str, dict[str, object]]:
    return _text_title(text) or _file_title(doc_id), text, {}


def _text_title(text: str) -> str | None:
    """A plain-text file's first line is its title when it reads like one (short, no final full stop)."""
    lines = text.strip("\n").split("\n", 2)
    first = lines[0].strip() if lines else ""
    followed_by_blank = len(lines) == 1 or not lines[1].strip()
    if first and len(first) <= 100 and not first.endswith((".", ",", ";", ":")) and followed_by_blank:
        return first
    return None


# --- JSON -----------------------------------------------------------------------------------------
def _parse_json(doc_id: str, text: str) -> tuple[str, str, dict[str, object]]:
    try:
        obj = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise DocumentError(MALFORMED_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise DocumentError(TOO_DEEP, f"JSON nests deeper than {MAX_NESTING} levels") from None
    _check_values(obj, what="JSON")
    if not isinstance(obj, dict):
        raise DocumentError(INVALID_JSON_DOCUMENT, f"expected a JSON object, got {type(obj).__name__}")
    body = obj.get("text")
    if not isinstance(body, str):
        raise DocumentError(INVALID_JSON_DOCUMENT, "field 'text' must be a string")
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise DocumentError(INVALID_JSON_DOCUMENT, "field 'title' must be a string")
    metadata = obj.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise DocumentError(INVALID_JSON_DOCUMENT, "field 'metadata' must be an object")
    if not title or not title.strip():
        title = first_heading(body) or _file_title(doc_id)
    return title.strip(), body, metadata


def _json_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise DocumentError(
            NUMBER_TOO_LARGE, f"JSON number has {len(literal)} digits; at most {MAX_NUMBER_CHARS} allowed"
        )
    return int(literal)


# --- HTML -----------------------------------------------------------------------------------------
_DROP_TAGS = {"script", "style", "noscript", "template", "head", "svg", "canvas", "iframe", "object"}
_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "blockquote", "pre",
    "ul", "ol", "li", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "tr", "figure", "figcaption",
    "form", "fieldset", "address", "details", "summary", "body", "html",
}
_HEADING_TAGS = {f"h{i}": i for i in range(1, 7)}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


def _parse_html(doc_id: str, text: str) -> tuple[str, str, dict[str, object]]:
    from bs4 import BeautifulSoup

    try:
        soup = BeautifulSoup(text, "html.parser")
    except Exception as exc:  # html.parser is lenient; this is for truly broken input
        raise DocumentError(INVALID_HTML, f"cannot parse HTML: {exc}") from None
    if _html_depth(soup, MAX_HTML_DEPTH) > MAX_HTML_DEPTH:
        raise DocumentError(TOO_DEEP, f"HTML elements nest deeper than {MAX_HTML_DEPTH} levels")
    metadata: dict[str, object] = {}
    for meta in soup.find_all("meta"):
        name = str(meta.get("name") or "").lower()
        content = meta.get("content")
        if content and name in {"author", "description"}:
            metadata[name] = str(content).strip()
        elif content and name == "keywords":
            metadata["tags"] = [t.strip() for t in str(content).split(",") if t.strip()]
    head_title = soup.title.get_text(" ", strip=True) if soup.title else ""
    blocks: list[str] = []
    _html_blocks(soup, blocks)
    body = "\n\n".join(b for b in blocks if b)
    title = head_title or first_heading(body) or _file_title(doc_id)
    return title, body, metadata


class _HtmlFrame:
    """One element being walked by _html_blocks: its remaining children, where its paragraphs go, and what
    to do with them once it is done (list items and table rows are joined into their parent's paragraph)."""

    __slots__ = ("children", "blocks", "inline", "finish")

    def __init__(self, node, blocks: list[str], finish: Callable[[list[str]], None] | None = None):
        self.children = iter(node.children)
        self.blocks = blocks
        self.inline: list[str] = []
        self.finish = finish

    def flush(self) -> None:
        joined = re.sub(r"\s+", " ", "".join(self.inline)).strip()
        if joined:
            self.blocks.append(joined)
        self.inline.clear()


def _html_blocks(node, blocks: list[str]) -> None:
    """Depth-first walk (an explicit stack, never recursion): headings become '#' lines, block elements
    paragraphs, inline text is joined."""
    from bs4 import Comment, Doctype, NavigableString, Tag

    stack = [_HtmlFrame(node, blocks)]
    while stack:
        frame = stack[-1]
        child = next(frame.children, None)
        if child is None:
            frame.flush()
            stack.pop()
            if frame.finish is not None:
                frame.finish(frame.blocks)
            continue
        if isinstance(child, (Comment, Doctype)):
            continue
        if isinstance(child, NavigableString):
            frame.inline.append(str(child))
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name.lower()
        if name in _DROP_TAGS or _is_hidden(child):
            continue
        if name == "br":
            frame.inline.append("\n")
        elif name in _HEADING_TAGS:
            frame.flush()
            heading = child.get_text(" ", strip=True)
            if heading:
                frame.blocks.append("#" * _HEADING_TAGS[name] + " " + re.sub(r"\s+", " ", heading))
        elif name == "pre":
            frame.flush()
            code = child.get_text().strip("\n")
            if code.strip():
                frame.blocks.append(code)
        elif name == "li":
            frame.flush()
            stack.append(_HtmlFrame(child, [], finish=_joined_into(frame.blocks, "- ", " ")))
        elif name == "tr":
            frame.flush()
            cells = [c.get_text(" ", strip=True) for c in child.find_all(["td", "th"], recursive=False)]
            if any(cells):
                frame.blocks.append(" | ".join(cells))
        elif name in {"ul", "ol", "dl", "table"}:  # items/rows stay together as one paragraph
            frame.flush()
            stack.append(_HtmlFrame(child, [], finish=_joined_into(frame.blocks, "", "\n")))
        elif name in _BLOCK_TAGS or _has_block_descendant(child):  # e.g. <span> wrapping paragraphs: a block
            frame.flush()
            stack.append(_HtmlFrame(child, frame.blocks))
        else:
            frame.inline.append(_inline_text(child))  # inline element: its text joins the current paragraph


def _joined_into(target: list[str], lead: str, separator: str) -> Callable[[list[str]], None]:
    def finish(parts: list[str]) -> None:
        if parts:
            target.append(lead + separator.join(parts))

    return finish


def _inline_text(tag) -> str:
    """The visible text below an inline element, in document order (explicit stack, never recursion)."""
    from bs4 import Comment, NavigableString, Tag

    parts: list[str] = []
    stack = [iter(tag.children)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
        elif isinstance(child, Comment):
            continue
        elif isinstance(child, NavigableString):
            parts.append(str(child))
        elif isinstance(child, Tag) and child.name.lower() not in _DROP_TAGS and not _is_hidden(child):
            if child.name.lower() == "br":
                parts.append("\n")
            else:
                stack.append(iter(child.children))
    return "".join(parts)


def _html_depth(soup, limit: int) -> int:
    """The element nesting depth, counted with an explicit stack; stops early once past `limit`."""
    from bs4 import Tag

    deepest = 0
    stack = [(soup, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tag))
    return deepest


def _is_hidden(tag) -> bool:
    if tag.has_attr("hidden") or str(tag.get("aria-hidden", "")).lower() == "true":
        return True
    return bool(_HIDDEN_STYLE.search(str(tag.get("style", ""))))


def _has_block_descendant(tag) -> bool:
    return tag.find(lambda t: t.name in _BLOCK_TAGS or t.name in _HEADING_TAGS) is not None


# --- Bounds every parsed value must meet ----------------------------------------------------------------
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _check_values(value: object, what: str = "document") -> None:
    """Iteratively (no recursion, whatever the input) refuse what later steps cannot hash, store or walk:
    lone surrogates (invalid_text), integers wider than MAX_NUMBER_CHARS digits (number_too_large),
    nesting deeper than MAX_NESTING, which also ends a structure that contains itself (too_deep)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if (bad := _SURROGATE.search(item)) is not None:
                raise DocumentError(
                    INVALID_TEXT, f"{what} contains a lone surrogate U+{ord(bad.group()):04X} (not encodable text)"
                )
        elif isinstance(item, bool) or not isinstance(item, (int, dict, list, tuple, set, frozenset)):
            continue
        elif isinstance(item, int):
            if item.bit_length() > MAX_NUMBER_CHARS * 4:  # > ~77 decimal digits
                raise DocumentError(NUMBER_TOO_LARGE, f"{what} contains an integer with {item.bit_length()} bits")
        else:
            if depth > MAX_NESTING:  # a structure containing itself ends here too
                raise DocumentError(TOO_DEEP, f"{what} nests deeper than {MAX_NESTING} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else list(item)
            stack.extend((child, depth + 1) for child in children)


# --- Metadata normalisation -----------------------------------------------------------------------
_KEY_CHARS = re.compile(r"[^0-9A-Za-z_]")


def _normalise_metadata(metadata: Mapping[str, object]) -> dict[str, object]:
    """Dates -> ISO strings, lists of scalars -> ', '-joined strings, None dropped, keys identifier-like."""
    out: dict[str, object] = {}
    for key, value in metadata.items():
        if value is None:
            continue
        name = _KEY_CHARS.sub("_", str(key).strip())
        out[name] = _normalise_value(value)
    return dict(sorted(out.items()))


def _normalise_value(value: object) -> object:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
        return ", ".join(str(v) for v in value)
    return value


_PARSERS: dict[str, Callable[[str, str], tuple[str, str, dict[str, object]]]] = {
    ".md": _parse_markdown,
    ".markdown": _parse_markdown,
    ".txt": _parse_text,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".json": _parse_json,
}
