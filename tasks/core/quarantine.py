"""Hold rejected inputs aside in the artifact store with their reasons; originals are never touched.

Layout: quarantine/<kind>/<slot>/original[.ext] + quarantine/<kind>/<slot>/reason.json, where <slot> is a
key-safe encoding of the item id (percent-encoded, dots escaped, truncated, plus a hash so it is unique) and
reason.json keeps the original id. reason.json is written last and removed first, so it alone marks an
entry as held: a crash in between leaves at worst an unlisted copy that the next quarantine() overwrites.
An item too large to copy is held by reference: reason.json names its key, size and sha256, no copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import quote

from hybridops.tasks.core.object_store import ObjectStore

Kind = Literal["documents", "training", "interactions"]
KINDS: tuple[str, ...] = ("documents", "training", "interactions")
ROOT = "quarantine"
REASON_FILE = "reason.json"
_SLOT_LABEL_CHARS = 80
_SAFE_EXT = re.compile(r"\.[A-Za-z0-9]{1,10}")


@dataclass(frozen=True)
class QuarantineEntry:
    """One held item: original id, why it is held, and where its copy lives."""

    kind: str
    item_id: str
    reasons: list[str]
    source_version: str
    size: int
    sha256: str
    quarantined_at: str
    copy_key: str
    reason_key: str
    by_reference: bool = False  # too large to copy: the original stays where it landed (copy_key is empty)

    def to_dict(self) -> dict:
        return asdict(self)


def slot(item_id: str) -> str:
    """A single safe key segment for any id ('../x', '/abs', unicode, 4 KB long ...); unique by hash."""
    label = quote(item_id, safe="", errors="backslashreplace").replace(".", "%2E")[:_SLOT_LABEL_CHARS]
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{label}~{digest}"


def _prefix(kind: str, item_id: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown quarantine kind {kind!r}; expected one of {KINDS}")
    return f"{ROOT}/{kind}/{slot(item_id)}/"


def _copy_name(item_id: str) -> str:
    suffix = PurePosixPath(item_id.replace("\\", "/")).suffix
    return "original" + (suffix.lower() if _SAFE_EXT.fullmatch(suffix) else "")


def quarantine(
    store: ObjectStore, kind: Kind, item_id: str, data: bytes, reasons: list[str], source_version: str
) -> QuarantineEntry:
    """Keep a copy + reason.json under quarantine/<kind>/<safe key>/ (idempotent for the same content)."""
    prefix = _prefix(kind, item_id)
    digest = hashlib.sha256(data).hexdigest()
    existing = _read_entry(store, prefix + REASON_FILE)
    if (
        existing is not None
        and existing.sha256 == digest
        and existing.reasons == list(reasons)
        and existing.source_version == source_version
        and existing.item_id == item_id
        and store.exists(existing.copy_key)
    ):
        return existing  # already held for the same bytes and reasons: no rewrite
    entry = QuarantineEntry(
        kind=kind,
        item_id=item_id,
        reasons=list(reasons),
        source_version=source_version,
        size=len(data),
        sha256=digest,
        quarantined_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        copy_key=prefix + _copy_name(item_id),
        reason_key=prefix + REASON_FILE,
    )
    if existing is not None and existing.copy_key != entry.copy_key:
        store.delete(existing.copy_key)
    store.put(entry.copy_key, data)
    store.put(entry.reason_key, json.dumps(entry.to_dict(), indent=2, ensure_ascii=False).encode("utf-8"))
    return entry


def hold_by_reference(
    store: ObjectStore, kind: Kind, item_id: str, size: int, sha256: str, reasons: list[str], source_version: str
) -> QuarantineEntry:
    """Hold an item without copying it (it is too large to copy): reasons, size and digest only."""
    prefix = _prefix(kind, item_id)
    existing = _read_entry(store, prefix + REASON_FILE)
    if existing is not None and existing.copy_key:
        store.delete(existing.copy_key)
    entry = QuarantineEntry(
        kind=kind, item_id=item_id, reasons=list(reasons), source_version=source_version, size=size, sha256=sha256,
        quarantined_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), copy_key="",
        reason_key=prefix + REASON_FILE, by_reference=True,
    )
    store.put(entry.reason_key, json.dumps(entry.to_dict(), indent=2, ensure_ascii=False).encode("utf-8"))
    return entry


def held_entry(store: ObjectStore, kind: Kind, item_id: str) -> QuarantineEntry | None:
    """The entry holding this item now, if any."""
    return _read_entry(store, _prefix(kind, item_id) + REASON_FILE)


def list_quarantined(store: ObjectStore, kind: Kind | None = None) -> list[QuarantineEntry]:
    """Everything held now, sorted by kind and id."""
    prefix = f"{ROOT}/{kind}/" if kind else f"{ROOT}/"
    entries = []
    for info in store.list(prefix):
        if info.key.endswith("/" + REASON_FILE):
            entry = _read_entry(store, info.key)
            if entry is not None:
                entries.append(entry)
    return sorted(entries, key=lambda e: (e.kind, e.item_id))


def read_copy(store: ObjectStore, entry: QuarantineEntry) -> bytes:
    """The held bytes of an entry (for inspection or re-landing)."""
    if entry.by_reference:
        raise KeyError(f"{entry.item_id} is held by reference ({entry.size} bytes, sha256 {entry.sha256}): "
                       "no copy was made; the original is where it landed")
    return store.get(entry.copy_key)


def release(store: ObjectStore, kind: Kind, item_id: str) -> bool:
    """Drop an item's quarantine entry (it passed or vanished); True if something was held."""
    prefix = _prefix(kind, item_id)
    held = store.exists(prefix + REASON_FILE)
    store.delete(prefix + REASON_FILE)
    for info in list(store.list(prefix)):
        store.delete(info.key)
    return held


def prune(store: ObjectStore, kind: Kind, keep: Iterable[str]) -> list[str]:
    """Release every held item of this kind whose id is not in keep; returns released ids."""
    keep_ids = set(keep)
    released = []
    for entry in list_quarantined(store, kind):
        if entry.item_id not in keep_ids:
            release(store, kind, entry.item_id)
            released.append(entry.item_id)
    return released


def _read_entry(store: ObjectStore, key: str) -> QuarantineEntry | None:
    try:
        raw = json.loads(store.get(key))
        fields = QuarantineEntry.__dataclass_fields__.items()  # fields with a default may be absent (older entries)
        return QuarantineEntry(**{name: raw[name] for name, f in fields if name in raw or f.default is MISSING})
    except KeyError:
        return None  # missing file or field
    except (ValueError, TypeError):
        return None  # unreadable reason file: treated as not held; the next quarantine() rewrites it
