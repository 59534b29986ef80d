"""Replay: examples earlier adapters were trained on come back into the next dataset, so nothing is forgotten.

Every retrain builds its data from what is landed and approved *now*; a replaced training file or aged-out
feedback would vanish from the next adapter, which could then unlearn it. So when a challenger is registered,
the original examples of its data (not the augmented twins: they are derived again) are kept as a snapshot in
the artifact store, and the next build adds some of them back:

- newest snapshots first; within a snapshot in an order seeded by `train_seed` (the same data gives the same mix);
- an example whose id (or question + passage doc ids) is in the current data is left out: the current one wins;
- an example citing a document no longer landed is left out: it would teach citing what does not exist;
- at most `train_replay_share` of the current examples (0 = off), so replay never outweighs what is there now.

Replayed examples keep their id, so they land in the split they had (validation never sees a trained one), and
training_data.py validates them like new ones (failures are quarantined). Their origin is
`replay:<snapshot key>#L<line>`.

Layout: training/replay/<dataset fingerprint>.jsonl (one example per line) and training/replay/index.json
(the snapshots, oldest first, with their sha256). The snapshot is written before the index; a damaged snapshot
is skipped with a warning, a damaged index is rebuilt from the snapshot objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import BaseModel, Field, ValidationError

from hybridops.tasks.core.object_store import ObjectStore, artifact_store, landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.landing import landed_doc_ids

if TYPE_CHECKING:
    from hybridops.tasks.behaviour.training_data import TrainingData

log = logging.getLogger(__name__)

PREFIX = "training/replay/"
INDEX_KEY = PREFIX + "index.json"
ORIGIN = "replay"
SNAPSHOT_FIELDS = {"id", "origin", "question", "passages", "response", "source_version"}
"""What a snapshot line keeps of an example (training_data.TrainingExample): enough to train on it again."""


class Example(Protocol):
    """What replay needs of a training example (training_data.TrainingExample satisfies it; loading also sets
    its `raw`, the bytes quarantine keeps)."""

    id: str
    origin: str
    question: str
    passages: Sequence
    response: str
    source_version: str

    def model_copy(self, *, update: dict) -> Example: ...
    def model_dump_json(self, *, include: set[str]) -> str: ...


E = TypeVar("E", bound=Example)


class SnapshotEntry(BaseModel):
    """One snapshot: the dataset it was kept from, where it lives and the sha256 it must still have."""

    fingerprint: str
    key: str
    sha256: str
    examples: int
    created_at: datetime | None = None  # None: recovered from the objects after the index was lost


class ReplayIndex(BaseModel):
    snapshots: list[SnapshotEntry] = Field(default_factory=list, description="oldest first")


@dataclass(frozen=True)
class ReplayMix:
    """What replay added and why it left the rest out (the dataset report shows it)."""

    cap: int = 0
    snapshots: int = 0
    replayed: int = 0
    already_present: int = 0
    documents_gone: int = 0
    over_cap: int = 0
    rejected: int = 0  # failed the training contract (quarantined by training_data.py)

    def counts(self) -> dict[str, int]:
        return {"replayed": self.replayed, "replay_cap": self.cap, "replay_snapshots": self.snapshots,
                "replay_skipped_present": self.already_present,
                "replay_skipped_documents_gone": self.documents_gone,
                "replay_skipped_over_cap": self.over_cap, "replay_rejected": self.rejected}


# Writing ---------------------------------------------------------------------------------------------------

def save_replay_snapshot(
    settings: Settings, data: TrainingData, store: ObjectStore | None = None
) -> SnapshotEntry | None:
    """Keep the original examples of a dataset an adapter was trained on (call it once the challenger is
    registered). Idempotent: a snapshot of this fingerprint that still verifies is left as it is."""
    return save_snapshot(store or artifact_store(settings), data.fingerprint, data.accepted)


def save_snapshot(store: ObjectStore, fingerprint: str, examples: Sequence[Example]) -> SnapshotEntry | None:
    """Write the snapshot (durably, via the store's put), then the index that lists it."""
    if not examples:
        return None
    index = read_index(store)
    known = next((s for s in index.snapshots if s.fingerprint == fingerprint), None)
    if known and store.exists(known.key) and store.sha256(known.key) == known.sha256:
        return known
    data = b"".join(e.model_dump_json(include=SNAPSHOT_FIELDS).encode() + b"\n"
                    for e in sorted(examples, key=lambda e: e.id))
    entry = SnapshotEntry(fingerprint=fingerprint, key=f"{PREFIX}{fingerprint}.jsonl",
                          sha256=hashlib.sha256(data).hexdigest(), examples=len(examples), created_at=datetime.now(UTC))
    store.put(entry.key, data)
    index = ReplayIndex(snapshots=[s for s in index.snapshots if s.fingerprint != fingerprint] + [entry])
    store.put(INDEX_KEY, index.model_dump_json(indent=2).encode())
    log.info("replay snapshot %s: %d examples", entry.key, entry.examples)
    return entry


# Reading ---------------------------------------------------------------------------------------------------

def read_index(store: ObjectStore) -> ReplayIndex:
    """The snapshot index; a damaged one is rebuilt from the snapshot objects (their order is then lost)."""
    try:
        return ReplayIndex.model_validate_json(store.get(INDEX_KEY))
    except KeyError:
        return ReplayIndex()
    except ValidationError as exc:
        log.warning("replay index %s is unreadable (%s); rebuilt from the snapshots, oldest-first order lost",
                    INDEX_KEY, exc.errors()[0]["msg"])
    snapshots = []
    for info in store.list(PREFIX):
        if info.key.endswith(".jsonl"):
            data = store.get(info.key)
            snapshots.append(SnapshotEntry(fingerprint=info.key[len(PREFIX):].removesuffix(".jsonl"), key=info.key,
                                           sha256=hashlib.sha256(data).hexdigest(), examples=len(data.splitlines())))
    return ReplayIndex(snapshots=snapshots)


def load_snapshots(store: ObjectStore, example_type: type[E]) -> list[list[E]]:
    """The examples of every snapshot, newest snapshot first, each with its replay origin and its line as raw
    bytes. A snapshot that is missing, does not match its sha256 or does not parse is skipped with a warning."""
    loaded = []
    for entry in reversed(read_index(store).snapshots):
        try:
            data = store.get(entry.key)
        except KeyError:
            log.warning("replay snapshot %s is missing; skipped", entry.key)
            continue
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            log.warning("replay snapshot %s does not match its sha256 (damaged); skipped", entry.key)
            continue
        try:
            loaded.append([
                example_type.model_validate_json(line).model_copy(
                    update={"origin": f"{ORIGIN}:{entry.key}#L{number}", "raw": line})
                for number, line in enumerate(data.splitlines(), start=1) if line.strip()
            ])
        except ValidationError as exc:
            log.warning("replay snapshot %s does not parse (%s); skipped", entry.key, exc.errors()[0]["msg"])
    return loaded


# Choosing --------------------------------------------------------------------------------------------------

def replay_cap(share: float, current: int) -> int:
    """At most this many replayed examples next to `current` accepted ones."""
    return int(share * current + 1e-9)


def choose(snapshots: list[list[E]], current: Sequence[Example], landed: set[str], cap: int,
           seed: int) -> tuple[list[E], ReplayMix]:
    """The replayed examples (pure): each id once (the newest snapshot's version), none already in `current`,
    none citing a document outside `landed`, the first `cap` in newest-snapshot-first, seeded order."""
    present_ids, present_content = {e.id for e in current}, {_content(e) for e in current}
    seen: set[str] = set()
    eligible: list[E] = []
    already_present = documents_gone = 0
    for examples in snapshots:
        for example in sorted(examples, key=lambda e: _order(seed, e.id)):
            if example.id in seen:
                continue  # also in a newer snapshot (an example several adapters were trained on)
            seen.add(example.id)
            if example.id in present_ids or _content(example) in present_content:
                already_present += 1
            elif not set(cited(example)) <= landed:
                documents_gone += 1
            else:
                eligible.append(example)
    chosen = eligible[:cap]
    return chosen, ReplayMix(cap=cap, snapshots=len(snapshots), replayed=len(chosen), already_present=already_present,
                             documents_gone=documents_gone, over_cap=len(eligible) - len(chosen))


def replay_candidates(
    settings: Settings, current: Sequence[Example], accepted: int, example_type: type[E], *,
    landing: ObjectStore | None = None, store: ObjectStore | None = None,
) -> tuple[list[E], ReplayMix]:
    """The earlier examples to add to this build (`accepted` current examples passed the contract); they still
    have to pass it themselves. Off when train_replay_share is 0."""
    if settings.train_replay_share <= 0:
        return [], ReplayMix()
    snapshots = load_snapshots(store or artifact_store(settings), example_type)
    landed = landed_doc_ids(landing or landing_zone(settings)) if snapshots else set()
    return choose(snapshots, current, landed, replay_cap(settings.train_replay_share, accepted), settings.train_seed)


def cited(example: Example) -> list[str]:
    """The doc ids the example's reply cites ([] when it is not a house reply: the contract rejects it)."""
    try:
        reply = json.loads(example.response)
    except ValueError:
        return []
    sources = reply.get("sources") if isinstance(reply, dict) else None
    return [s for s in sources if isinstance(s, str)] if isinstance(sources, list) else []


def _content(example: Example) -> str:
    """Identity by content: the question and its passages' doc ids (training_data.example_id's inputs)."""
    return json.dumps([example.question.strip(), [p.doc_id for p in example.passages]])


def _order(seed: int, example_id: str) -> str:
    return hashlib.sha256(f"{seed}:{ORIGIN}:{example_id}".encode()).hexdigest()
