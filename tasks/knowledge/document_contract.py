"""The documents contract: landed bytes -> Candidate -> GX documents suite -> passed Documents or reasons.

The generic engine (suites as data, one validation per batch) is tasks/core/contracts.py; this module builds
the documents frame (one row per landed object) and maps failed expectations back to per-document
'code: message' reasons, the form quarantine records carry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hybridops.tasks.core.contracts import CONTRACTS_DIR, Failure, load_suite, validate_frame
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.documents import INVALID_UTF8, Document, DocumentError, parse_document

if TYPE_CHECKING:
    import pandas as pd

DOCUMENTS_SUITE_PATH = CONTRACTS_DIR / "documents.yaml"

TOO_LARGE = "too_large"
PARSE_ERROR = "parse_error"
PARSE_FAILED = "parse_failed"
"""A parser raised something other than DocumentError (a parser bug or pathological input): held, not fatal."""
_INT64 = 2**63
_METADATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Candidate:
    """One landing object ready for the contract: its parsed Document or the parse error."""

    doc_id: str
    size: int
    source_version: str
    document: Document | None = None
    error: DocumentError | None = None


@dataclass(frozen=True)
class Rejection:
    """A document that failed the contract: one 'code: message' reason per failed expectation."""

    doc_id: str
    reasons: list[str]
    codes: list[str]
    size: int
    source_version: str


@dataclass(frozen=True)
class ContractResult:
    passed: list[Document] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def make_candidate(doc_id: str, data: bytes, source_version: str, settings: Settings) -> Candidate:
    """Parse bytes into a Candidate (never raises for bad content; oversized data is not parsed)."""
    if len(data) > settings.max_document_bytes:
        error = DocumentError(TOO_LARGE, f"{len(data)} bytes > {settings.max_document_bytes}")
        return Candidate(doc_id, len(data), source_version, error=error)
    try:
        return Candidate(doc_id, len(data), source_version, document=parse_document(doc_id, data, source_version))
    except DocumentError as exc:
        return Candidate(doc_id, len(data), source_version, error=exc)
    except Exception as exc:  # noqa: BLE001 - one document's parser failure must never stop a batch
        error = DocumentError(PARSE_FAILED, f"{type(exc).__name__}: {exc}")
        return Candidate(doc_id, len(data), source_version, error=error)


def validate_documents(
    candidates: list[Candidate], settings: Settings, suite_path: Path = DOCUMENTS_SUITE_PATH
) -> ContractResult:
    """Validate a batch of candidates with the GX documents suite; parse errors become rejections."""
    if not candidates:
        return ContractResult()
    suite = load_suite(suite_path, settings)
    failures = validate_frame(documents_frame(candidates), suite)
    passed: list[Document] = []
    rejected: list[Rejection] = []
    for row, candidate in enumerate(candidates):
        found = _dedupe([_specific(f, candidate.error) for f in failures.get(row, [])])
        if not found and candidate.document is None:  # an unparsed row no expectation caught: still reject
            error = candidate.error
            found = [Failure(error.reason_code if error else "not_parsed", str(error or "not parsed"), "", None)]
        if found:
            rejected.append(
                Rejection(
                    doc_id=candidate.doc_id,
                    reasons=[f"{f.code}: {f.message}" for f in found],
                    codes=[f.code for f in found],
                    size=candidate.size,
                    source_version=candidate.source_version,
                )
            )
        else:
            passed.append(candidate.document)
    return ContractResult(passed=passed, rejected=rejected)


def documents_frame(candidates: list[Candidate]) -> pd.DataFrame:
    """One row per candidate with the columns data_contracts/documents.yaml checks."""
    import pandas as pd  # only when a contract runs (GX needs it then anyway)

    rows = []
    for row, c in enumerate(candidates):
        doc, error = c.document, c.error
        code = error.reason_code if error else ""
        nonscalar, bad_keys = _metadata_problems(doc.metadata) if doc else ([], [])
        rows.append(
            {
                "row": row,
                "doc_id": c.doc_id,
                "doc_id_length": len(c.doc_id),
                "size_bytes": c.size,
                "utf8_ok": code != INVALID_UTF8,
                # utf8 and size have their own expectations; every other parse error is reported here
                "parse_error": "" if code in ("", INVALID_UTF8, TOO_LARGE) else code,
                "parse_message": error.message if error else "",
                "text_length": len(doc.text) if doc else None,
                "control_chars": _control_chars(doc.text) if doc else None,
                "metadata_nonscalar": ", ".join(nonscalar),
                "metadata_bad_keys": ", ".join(bad_keys),
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("text_length", "control_chars"):
        frame[column] = frame[column].astype(float)
    return frame


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _control_chars(text: str) -> int:
    return len(_CONTROL.findall(text))


def _metadata_problems(metadata: Mapping[str, object]) -> tuple[list[str], list[str]]:
    nonscalar = [k for k, v in metadata.items() if not _is_scalar(v)]
    bad_keys = [k for k in metadata if not _METADATA_KEY.fullmatch(k)]
    return nonscalar, bad_keys


def _is_scalar(value: object) -> bool:
    if isinstance(value, bool) or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def _specific(failure: Failure, error: DocumentError | None) -> Failure:
    """The generic 'parse_error' expectation reports the parser's own reason code (e.g. malformed_json)."""
    if failure.code == PARSE_ERROR and error is not None:
        return Failure(error.reason_code, error.message, failure.expectation, failure.column)
    return failure


def _dedupe(failures: list[Failure]) -> list[Failure]:
    seen: set[str] = set()
    out = []
    for failure in failures:
        if failure.code not in seen:
            seen.add(failure.code)
            out.append(failure)
    return out
