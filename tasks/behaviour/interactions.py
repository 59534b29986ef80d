"""The interaction log: every ask as one contract-checked object, plus human feedback, for later evals and training.

Layout in the artifact store: `interactions/<YYYY-MM-DD>/<id>.json`, `feedback/<id>.json`; a record that
fails the GX contract (data_contracts/interactions.yaml) goes to `quarantine/interactions/<id>.json` with
its reasons instead, so nothing is lost.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import uuid
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from hybridops.tasks.behaviour.prompting import ParsedReply
from hybridops.tasks.core.contracts import load_suite, validate_frame, warm_up
from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.object_store import ObjectStore, artifact_store
from hybridops.tasks.core.quarantine import quarantine
from hybridops.tasks.core.settings import PROJECT_ROOT, Settings

# pandas (~0.5 s) is imported where a contract batch is validated, so answering without logging never pays it

log = logging.getLogger(__name__)
CONTRACT_PATH = PROJECT_ROOT / "data_contracts" / "interactions.yaml"
_ID = re.compile(r"^(\d{4})(\d{2})(\d{2})T\d{6}Z-[0-9a-f]{8}$")


class Interaction(BaseModel):
    """One logged ask: the question, the parsed reply (raw text kept), citations, model/adapter and latency."""

    model_config = ConfigDict(frozen=True)

    id: str
    created_at: str
    question: str
    answer: str | None
    sources: list[str]
    format_ok: bool
    raw: str
    adapter: str | None
    model: str
    retrieved: list[str]
    latency_ms: float

    @property
    def key(self) -> str:
        return interaction_key(self.id)


class Verdict(BaseModel):
    """One human judgement: approve, or correct with the right answer."""

    verdict: Literal["approve", "correct"]
    correction: str | None = None
    sources: list[str] = []  # what a plain-text correction cites (default: the reply's own sources)
    created_at: str

    @property
    def plain_correction(self) -> bool:
        """A corrected answer text (to be cited), as opposed to a full house JSON reply."""
        return self.verdict == "correct" and not (self.correction or "").startswith("{")


class Feedback(Verdict):
    """The latest judgement of one interaction; earlier ones are kept in `previous` (oldest first)."""

    interaction_id: str
    previous: list[Verdict] = []

    @model_validator(mode="after")
    def _correction_matches_verdict(self) -> Feedback:
        if self.verdict == "correct" and not (self.correction or "").strip():
            raise ValueError("a correction needs the corrected answer text")
        if self.verdict == "approve" and self.correction is not None:
            raise ValueError("an approval carries no correction text")
        return self


class LoggedInteraction(BaseModel):
    interaction: Interaction
    feedback: Feedback | None = None

    @property
    def cited(self) -> list[str]:
        """What the judged reply cites: the feedback's sources, else the reply's own."""
        return (self.feedback.sources if self.feedback else []) or self.interaction.sources

    @property
    def trainable(self) -> bool:
        """Judged, and able to teach the house format (an approved unformatted reply cannot)."""
        return self.feedback is not None and (self.interaction.format_ok or self.feedback.verdict == "correct")


class InteractionRejected(BadInputError):
    """The interaction record failed the contract; it was quarantined with these reasons."""

    def __init__(self, interaction_id: str, reasons: list[str], key: str):
        super().__init__(f"interaction {interaction_id} failed the contract ({'; '.join(reasons)}); kept at {key}")
        self.reasons = reasons
        self.key = key


class UnknownInteractionError(BadInputError, KeyError):
    """No interaction with that id was logged (a KeyError for callers that look ids up)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def new_id(now: datetime | None = None) -> str:
    """Time-sortable id whose first 8 digits are the UTC date (so the record's key follows from the id)."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def interaction_key(interaction_id: str) -> str:
    match = _ID.match(interaction_id)
    if not match:
        raise ValueError(f"not an interaction id: {interaction_id!r}")
    return f"interactions/{match[1]}-{match[2]}-{match[3]}/{interaction_id}.json"


def new_interaction(
    *, question: str, reply: ParsedReply, retrieved: list[str], adapter: str | None, latency_ms: float, model: str
) -> Interaction:
    now = datetime.now(timezone.utc)
    return Interaction(
        id=new_id(now),
        created_at=now.isoformat(timespec="seconds"),
        question=question,
        answer=reply.answer,
        sources=reply.sources,
        format_ok=reply.format_ok,
        raw=reply.raw,
        adapter=adapter,
        model=model,
        retrieved=retrieved,
        latency_ms=round(latency_ms, 1),
    )


def contract_violations(records: list[Interaction]) -> dict[str, list[str]]:
    """Run the GX interactions contract on a batch; id -> reasons for every record that fails."""
    import pandas as pd

    rows = []
    for row, record in enumerate(records):
        data = record.model_dump(mode="json")
        rows.append(data | {"row": row, "sources": json.dumps(data["sources"]),
                            "retrieved": json.dumps(data["retrieved"])})
    failures = validate_frame(pd.DataFrame(rows), _contract())
    return {records[row].id: [f.reason() for f in found] for row, found in failures.items()}


def log_interaction(settings: Settings, interaction: Interaction, store: ObjectStore | None = None) -> str:
    """Validate and append one interaction; returns its key. Raises InteractionRejected after quarantining."""
    store = store or artifact_store(settings)
    body = interaction.model_dump_json(indent=2).encode()
    reasons = contract_violations([interaction]).get(interaction.id)
    if reasons:
        held = quarantine(store, "interactions", f"{interaction.id}.json", body, reasons, interaction.created_at)
        raise InteractionRejected(interaction.id, reasons, held.copy_key)
    store.put(interaction.key, body)
    return interaction.key


def get_interaction(settings: Settings, interaction_id: str, store: ObjectStore | None = None) -> Interaction:
    store = store or artifact_store(settings)
    try:
        return Interaction.model_validate_json(store.get(interaction_key(interaction_id)))
    except KeyError:
        raise UnknownInteractionError(f"no interaction {interaction_id!r} in {store.uri}") from None


def record_feedback(
    settings: Settings,
    interaction_id: str,
    verdict: Literal["approve", "correct"],
    correction: str | None = None,
    store: ObjectStore | None = None,
    sources: list[str] | None = None,
) -> LoggedInteraction:
    """Record a human verdict on a logged interaction (the interaction must exist); keeps earlier verdicts.

    A plain-text correction becomes a cited house reply for training, so it needs sources: the ones given,
    else the reply's own; a reply that cited nothing (e.g. unformatted) needs them given explicitly.
    """
    store = store or artifact_store(settings)
    item = get_interaction(settings, interaction_id, store)
    key = f"feedback/{interaction_id}.json"
    previous: list[Verdict] = []
    if store.exists(key):
        earlier = Feedback.model_validate_json(store.get(key))
        previous = [*earlier.previous, Verdict.model_validate(earlier.model_dump(include=set(Verdict.model_fields)))]
    feedback = Feedback(
        interaction_id=interaction_id,
        verdict=verdict,
        correction=correction.strip() if correction is not None else None,
        sources=list(sources or []),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        previous=previous,
    )
    logged = LoggedInteraction(interaction=item, feedback=feedback)
    if feedback.plain_correction and not logged.cited:
        raise BadInputError(f"interaction {interaction_id} cited no document, so the correction has nothing to cite: "
                         f"name the supporting passage(s) with --source DOC_ID (retrieved: {item.retrieved})")
    store.put(key, feedback.model_dump_json(indent=2).encode())
    return logged


def recent_interactions(
    settings: Settings, days: int = 7, today: date | None = None, store: ObjectStore | None = None
) -> list[LoggedInteraction]:
    """Interactions of the last `days` days (newest first), each with its feedback if any."""
    store = store or artifact_store(settings)
    today = today or datetime.now(timezone.utc).date()
    keys: list[str] = []
    for offset in range(days):
        day = today - timedelta(days=offset)
        keys.extend(info.key for info in store.list(f"interactions/{day.isoformat()}/"))
    feedback = _all_feedback(store)
    logged = [
        LoggedInteraction(interaction=item, feedback=feedback.get(item.id)) for item in _load(store, keys)
    ]
    return sorted(logged, key=lambda x: x.interaction.id, reverse=True)


def interactions_with_feedback(settings: Settings, store: ObjectStore | None = None) -> list[LoggedInteraction]:
    """Every interaction a human approved or corrected (training data), oldest first."""
    store = store or artifact_store(settings)
    feedback = _all_feedback(store)
    items = _load(store, [interaction_key(i) for i in sorted(feedback) if _ID.match(i)])
    return [LoggedInteraction(interaction=item, feedback=feedback[item.id]) for item in items]


def sample_recent(
    settings: Settings, k: int, days: int = 7, seed: str | None = None, store: ObjectStore | None = None
) -> list[LoggedInteraction]:
    """A deterministic sample of k recent interactions with distinct questions (seed defaults to today)."""
    if k <= 0:
        return []
    unique: dict[str, LoggedInteraction] = {}
    for logged in recent_interactions(settings, days=days, store=store):
        unique.setdefault(logged.interaction.question.strip().lower(), logged)
    pool = sorted(unique.values(), key=lambda x: x.interaction.id)
    rng = random.Random(seed or datetime.now(timezone.utc).date().isoformat())
    return rng.sample(pool, min(k, len(pool)))


def _all_feedback(store: ObjectStore) -> dict[str, Feedback]:
    result = {}
    for info in store.list("feedback/"):
        try:
            record = Feedback.model_validate_json(store.get(info.key))
        except (ValidationError, KeyError) as exc:  # unreadable or vanished: skipped loudly, never fatal
            log.warning("skipping feedback %s: %s", info.key, exc)
            continue
        result[record.interaction_id] = record
    return result


def _load(store: ObjectStore, keys: Iterable[str]) -> list[Interaction]:
    items = []
    for key in keys:
        try:
            items.append(Interaction.model_validate_json(store.get(key)))
        except (ValidationError, KeyError) as exc:
            log.warning("skipping interaction %s: %s", key, exc)
            continue
    return items


def warm_contract() -> threading.Thread:
    """Build the GX contract in the background (GX takes seconds to import) while the caller loads a model."""
    thread = threading.Thread(target=lambda: (warm_up(), _contract()), name="gx-warm", daemon=True)
    thread.start()
    return thread


@lru_cache(maxsize=1)
def _contract():
    return load_suite(CONTRACT_PATH)
