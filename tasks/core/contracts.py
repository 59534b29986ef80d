"""The generic data-contract engine: Great Expectations suites stored as data, run on a whole batch at once.

Any contract (documents, training examples, interactions) builds a frame with one row per item and gets
back failures per row with a stable reason code. GX is imported lazily (it costs seconds) and one
ephemeral context is cached per process. The documents contract lives in tasks/knowledge/document_contract.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    import pandas as pd

CONTRACTS_DIR = PROJECT_ROOT / "data_contracts"


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
