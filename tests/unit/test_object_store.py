"""The folder landing zone: atomic writes, relative '/' keys, no escaping the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridops.tasks.core.object_store import FolderStore


def test_folder_store_round_trip(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "landing")
    store.put("policies/refunds.md", b"# Refunds")
    store.put("with space/ünïcødé.txt", b"x")
    assert sorted(i.key for i in store.list()) == ["policies/refunds.md", "with space/ünïcødé.txt"]
    assert store.get("policies/refunds.md") == b"# Refunds"
    store.delete("policies/refunds.md")
    assert not (tmp_path / "landing" / "policies").exists()  # empty folders are tidied
    with pytest.raises(KeyError):
        store.get("policies/refunds.md")


def test_version_changes_when_bytes_change(tmp_path: Path) -> None:
    store = FolderStore(tmp_path)
    store.put("a.md", b"one")
    first = next(store.list()).version
    store.put("a.md", b"one plus")
    assert next(store.list()).version != first


@pytest.mark.parametrize("key", ["../outside.md", "a/../../outside.md", "/etc/passwd"])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="escapes"):
        FolderStore(tmp_path / "root").put(key, b"x")


def test_half_written_temp_files_are_not_listed(tmp_path: Path) -> None:
    (tmp_path / ".hybridops-tmp-abc").write_bytes(b"partial")
    assert list(FolderStore(tmp_path).list()) == []
