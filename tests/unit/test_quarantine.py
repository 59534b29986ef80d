"""Quarantine round trip on a real folder store: copies, reasons, hostile ids, release and prune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridops.tasks.core.object_store import FolderStore
from hybridops.tasks.core.quarantine import (
    held_entry,
    hold_by_reference,
    list_quarantined,
    prune,
    quarantine,
    read_copy,
    release,
)

HOSTILE_IDS = [
    "../escape.md",
    "..",
    "/etc/passwd",
    "a/../../b.txt",
    "dos\\path\\x.md",
    "with space/my notes.md",
    "ünïcødé/日本語 ファイル.json",
    "ctrl\x01char.md",
    "very/" + "long-" * 300 + ".md",
    "%2E%2E/already-encoded.md",
]


@pytest.fixture
def store(tmp_path: Path) -> FolderStore:
    return FolderStore(tmp_path / "store")


def test_round_trip_keeps_bytes_reasons_and_original_id(store: FolderStore) -> None:
    entry = quarantine(store, "documents", "policies/bad.json", b"{broken", ["malformed_json: line 1"], "v7")
    (listed,) = list_quarantined(store)
    assert listed == entry
    assert (listed.kind, listed.item_id, listed.reasons, listed.source_version, listed.size) == (
        "documents", "policies/bad.json", ["malformed_json: line 1"], "v7", 7
    )
    assert read_copy(store, listed) == b"{broken"
    assert listed.copy_key.startswith("quarantine/documents/") and listed.copy_key.endswith("original.json")
    assert json.loads(store.get(listed.reason_key))["item_id"] == "policies/bad.json"


def test_hostile_ids_stay_inside_the_quarantine_area(store: FolderStore, tmp_path: Path) -> None:
    for i, item_id in enumerate(HOSTILE_IDS):
        quarantine(store, "documents", item_id, f"data {i}".encode(), ["unsafe_id: bad"], f"v{i}")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 2 * len(HOSTILE_IDS)
    assert all(p.is_relative_to(tmp_path / "store" / "quarantine" / "documents") for p in files)
    assert all(len(part.encode()) <= 255 for p in files for part in p.parts)
    listed = {e.item_id: e for e in list_quarantined(store)}
    assert set(listed) == set(HOSTILE_IDS)
    for i, item_id in enumerate(HOSTILE_IDS):
        assert read_copy(store, listed[item_id]) == f"data {i}".encode()


def test_requarantine_is_idempotent_and_updates_on_change(store: FolderStore) -> None:
    first = quarantine(store, "documents", "x.md", b"", ["empty_text: no text"], "v1")
    again = quarantine(store, "documents", "x.md", b"", ["empty_text: no text"], "v1")
    assert again == first  # same bytes and reasons: nothing rewritten (same timestamp)
    changed = quarantine(store, "documents", "x.md", b"\x00", ["binary_content: NUL"], "v2")
    (listed,) = list_quarantined(store)
    assert listed == changed and listed.reasons == ["binary_content: NUL"] and read_copy(store, listed) == b"\x00"


def test_release_removes_only_that_item(store: FolderStore) -> None:
    quarantine(store, "documents", "a.md", b"a", ["r"], "v1")
    quarantine(store, "documents", "b.md", b"b", ["r"], "v1")
    assert release(store, "documents", "a.md") is True
    assert release(store, "documents", "a.md") is False
    assert [e.item_id for e in list_quarantined(store)] == ["b.md"]
    assert not any("a%2Emd" in info.key for info in store.list("quarantine/"))


def test_kinds_are_separate_and_prune_keeps_what_still_fails(store: FolderStore) -> None:
    for item_id in ("a.md", "b.md", "c.md"):
        quarantine(store, "documents", item_id, b"x", ["r"], "v1")
    quarantine(store, "training", "_training/set.jsonl#12", b"{}", ["missing_field: answer"], "v1")
    assert [e.item_id for e in list_quarantined(store, "training")] == ["_training/set.jsonl#12"]
    assert sorted(prune(store, "documents", keep={"b.md"})) == ["a.md", "c.md"]
    assert [(e.kind, e.item_id) for e in list_quarantined(store)] == [
        ("documents", "b.md"), ("training", "_training/set.jsonl#12")
    ]


def test_original_in_the_landing_zone_is_never_touched(store: FolderStore, tmp_path: Path) -> None:
    landing = FolderStore(tmp_path / "landing")
    landing.put("bad.pdf", b"%PDF")
    quarantine(store, "documents", "bad.pdf", landing.get("bad.pdf"), ["unsupported_format: .pdf"], "v1")
    release(store, "documents", "bad.pdf")
    assert landing.get("bad.pdf") == b"%PDF"


def test_unreadable_reason_file_does_not_break_listing(store: FolderStore) -> None:
    entry = quarantine(store, "documents", "a.md", b"a", ["r"], "v1")
    store.put("quarantine/documents/stray~0/reason.json", b"not json")
    assert list_quarantined(store) == [entry]


def test_unknown_kind_is_refused(store: FolderStore) -> None:
    with pytest.raises(ValueError):
        quarantine(store, "images", "a.png", b"", ["r"], "v1")  # type: ignore[arg-type]


def test_an_item_too_large_to_copy_is_held_by_reference(store) -> None:
    held = hold_by_reference(store, "documents", "big/huge.md", 5_000_000_000, "ab" * 32,
                             ["too_large: 5000000000 bytes > 2000000"], "v1")
    [listed] = list_quarantined(store, "documents")
    assert listed == held and listed.by_reference and listed.copy_key == ""
    assert [info.key for info in store.list("quarantine/")] == [held.reason_key]  # no copy was written
    with pytest.raises(KeyError, match="held by reference"):
        read_copy(store, listed)
    assert held_entry(store, "documents", "big/huge.md") == held


def test_entries_written_before_by_reference_existed_still_list(store) -> None:
    held = quarantine(store, "documents", "a.md", b"x", ["bad"], "v1")
    raw = json.loads(store.get(held.reason_key))
    del raw["by_reference"]
    store.put(held.reason_key, json.dumps(raw).encode())
    [listed] = list_quarantined(store, "documents")
    assert listed.item_id == "a.md" and listed.by_reference is False
