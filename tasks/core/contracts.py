"""Data contracts as Great Expectations suites stored as data, run on a whole batch (one row per item) at once.

The generic half (load_suite, validate_frame) is reusable by any contract; the documents half builds the
candidate frame and maps failed expectations back to per-document reasons.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridops.tasks.knowledge.documents import INVALID_UTF8, Document, DocumentError, parse_document
from hybridops.tasks.core.settings import Settings, PROJECT_ROOT
from hybridops.tasks.core.errors import BadInputError

if TYPE_CHECKING:
    import pandas as pd

CONTRACTS_DIR = PROJECT_ROOT / "data_contracts"
DOCUMENTS_SUITE_PATH = CONTRACTS_DIR / "documents.yaml"

TOO_LARGE = "too_large"
PARSE_ERROR = "parse_error"
_INT64 = 2**63
_METADATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


# --- Generic: suites as data, validation of a frame --------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """One failed expectation for one row: stable reason code + a human message."""

    code: str
    message: str
    expectation: str
    column: str | None

    def reason(self) -> str:
        """'code: message', the form quarantine records carry."""
        return f"{self.code}: {self.message}"


class ContractError(BadInputError):
    """The contract file itself is broken (unreadable, unknown settings name, GX refused it)."""


def read_suite_dict(path: Path) -> dict[str, Any]:
    """The raw suite dict from a .yaml/.yml/.json file."""
    import json

    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ContractError(f"cannot read contract {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ContractError(f"contract {path} must be a mapping with an 'expectations' list")
    return data


def load_suite(path: Path, settings: Settings | None = None):
    """A gx.ExpectationSuite from a file, with meta.settings kwargs filled from Settings."""
    gx = _gx()
    data = read_suite_dict(path)
    for expectation in data["expectations"]:
        for kwarg, attr in (expectation.get("meta") or {}).get("settings", {}).items():
            if settings is None:
                continue
            if not hasattr(settings, attr):
                raise ContractError(f"contract {path.name}: unknown settings field {attr!r}")
            expectation.setdefault("kwargs", {})[kwarg] = getattr(settings, attr)
    try:
        return gx.ExpectationSuite(**data)
    except Exception as exc:  # GX raises many types for a bad suite definition
        raise ContractError(f"contract {path.name} is not a valid ExpectationSuite: {exc}") from exc


def validate_frame(frame: pd.DataFrame, suite, row_column: str = "row") -> dict[int, list[Failure]]:
    """Run suite on frame; failures per row (keyed by frame[row_column]) in suite order."""
    if frame.empty:
        return {}
    with _GX_LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(
            suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [row_column]}
        )
    rows = frame.set_index(row_column, drop=False).to_dict("index")
    failures: dict[int, list[Failure]] = {}
    for res in result.results:
        config = res.expectation_config
        if res.success:
            continue
        meta = config.meta or {}
        kwargs = dict(config.kwargs)
        exception = _exception_message(res.exception_info)
        if exception:
            raise ContractError(f"expectation {config.type} on {kwargs.get('column')} errored: {exception}")
        hits = res.result.get("unexpected_index_list") or []
        if not hits:  # failed, but not row by row: never let that pass silently
            raise ContractError(f"expectation {config.type} failed without naming rows; use column-map expectations")
        for hit in hits:
            row_id = int(hit[row_column])
            row = rows[row_id]
            message = _format(meta.get("message") or config.type, {**kwargs, **row})
            failures.setdefault(row_id, []).append(
                Failure(meta.get("reason", config.type), message, config.type, kwargs.get("column"))
            )
    return failures


def warm_up() -> None:
    """Build the GX context now (importing GX takes seconds), e.g. in a thread while a model loads."""
    _batch_definition()


def _exception_message(info: Any) -> str | None:
    """GX reports errors either flat or per metric; find the first raised one."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _format(template: str, values: Mapping[str, Any]) -> str:
    try:
        return template.format(**{k: _plain(v) for k, v in values.items()})
    except (KeyError, IndexError, ValueError):
        return template


def _plain(value: Any) -> Any:
    """numpy scalars -> Python, whole floats -> int (so messages read '3000 bytes', not '3000.0')."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_GX_LOCK = threading.RLock()
_GX_STATE: dict[str, Any] = {}


def _gx():
    """Import great_expectations once per process (it costs ~4 s) and only when a contract runs."""
    with _GX_LOCK:
        if "gx" not in _GX_STATE:
            import logging
            import warnings

            logging.getLogger("great_expectations").setLevel(logging.WARNING)  # no INFO chatter in CLI output
            with warnings.catch_warnings():  # GX imports the deprecated sre_* modules
                warnings.simplefilter("ignore", DeprecationWarning)
                import great_expectations as gx

            _GX_STATE["gx"] = gx
        return _GX_STATE["gx"]


def _batch_definition():
    """A cached ephemeral GX context (no analytics, no progress bars) with one whole-DataFrame batch."""
    with _GX_LOCK:
        if "batch_definition" not in _GX_STATE:
            gx = _gx()
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            config = DataContextConfig(
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False),
                store_backend_defaults=InMemoryStoreBackendDefaults(),
            )
            context = gx.get_context(mode="ephemeral", project_config=config)
            asset = context.data_sources.add_pandas("hybridops").add_dataframe_asset("batch")
            _GX_STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
        return _GX_STATE["batch_definition"]


# --- Documents contract -------------------------------------------------------------------------------
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
    import pandas as pd

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
