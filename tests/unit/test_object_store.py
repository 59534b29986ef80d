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


# --- Hostile entries in a folder landing zone: listed with a problem code, never opened -----------------
def _hostile_landing(tmp_path: Path) -> tuple[FolderStore, Path]:
    import os
    import socket

    root, outside = tmp_path / "landing", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    (root / "good.md").write_text("# Good")
    (root / "sub").mkdir()
    (root / "sub" / "inner.md").write_text("inner")
    os.symlink(outside / "secret.txt", root / "leak.md")
    os.symlink(outside, root / "leakdir")
    os.symlink(root / "good.md", root / "alias.md")  # inside the root: fine, read through
    os.symlink(root / "sub", root / "sub-alias")  # a folder inside: its files are listed under their real keys
    os.symlink(root / "missing", root / "dangling.md")
    os.mkfifo(root / "pipe.md")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.md"))
    sock.close()
    (root / os.fsdecode(b"caf\xe9 100%.md")).write_bytes(b"bad name")
    return FolderStore(root), outside


def test_listing_flags_what_must_never_be_read(tmp_path: Path) -> None:
    from hybridops.tasks.knowledge.documents import DocumentError

    store, _ = _hostile_landing(tmp_path)
    listed = {i.key: i for i in store.list()}
    assert {k: i.problem for k, i in listed.items()} == {
        "alias.md": None, "good.md": None, "sub/inner.md": None,
        "leak.md": "symlink_outside_root", "leakdir": "symlink_outside_root", "dangling.md": "broken_symlink",
        "pipe.md": "not_a_regular_file", "sock.md": "not_a_regular_file",
        "caf%E9 100%25.md": "invalid_file_name",
    }
    assert store.get("alias.md") == b"# Good"
    for key, info in listed.items():
        if info.problem:
            with pytest.raises(DocumentError) as err:  # a FIFO would block forever if opened for reading
                store.get(key)
            assert err.value.reason_code == info.problem
            assert str(err.value).startswith(info.problem + ": ")
    assert listed["alias.md"].version == listed["good.md"].version  # content versions


def test_undecodable_names_get_a_reversible_percent_encoded_key(tmp_path: Path) -> None:
    import os

    from hybridops.tasks.core.object_store import decode_name, encode_name

    name = os.fsdecode(b"r\xe9sum\xe9 50%.md")
    assert encode_name(name) == "r%E9sum%E9 50%25.md" and decode_name(encode_name(name)) == name
    assert encode_name("plain 50%.md") == "plain 50%.md"  # valid UTF-8 names are kept as they are
    (tmp_path / name).write_bytes(b"x")
    (tmp_path / os.fsdecode(b"dir\xff")).mkdir()
    (tmp_path / os.fsdecode(b"dir\xff") / "a.md").write_bytes(b"y")
    store = FolderStore(tmp_path)
    assert sorted((i.key, i.problem) for i in store.list()) == [
        ("dir%FF/a.md", "invalid_file_name"), ("r%E9sum%E9 50%25.md", "invalid_file_name")]
    assert store.exists("r%E9sum%E9 50%25.md")
    store.delete("r%E9sum%E9 50%25.md")  # removable by its key (hybridops land --remove)
    store.delete("dir%FF/a.md")
    assert list(tmp_path.iterdir()) == []


def test_deleting_a_symlink_removes_the_link_never_its_target(tmp_path: Path) -> None:
    store, outside = _hostile_landing(tmp_path)
    store.delete("leak.md")
    store.delete("alias.md")
    assert (outside / "secret.txt").read_text() == "top secret"
    assert store.get("good.md") == b"# Good"
    assert "leak.md" not in {i.key for i in store.list()}


def test_a_same_size_edit_with_the_old_mtime_gets_a_new_version(tmp_path: Path) -> None:
    import os

    path = tmp_path / "a.md"
    path.write_bytes(b"version one")
    before = os.stat(path)
    store = FolderStore(tmp_path)
    first = next(store.list()).version
    assert next(store.list()).version == first  # stable while nothing changes (stat fast path)
    with open(path, "r+b") as handle:  # in place, same size, then the mtime put back (cp -p, rsync -a)
        handle.write(b"VERSION ONE")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert next(store.list()).version != first
    path.write_bytes(b"version one")  # the same bytes again: the same (content) version
    assert next(store.list()).version == first


def test_listing_is_iterative_for_deep_folders(tmp_path: Path) -> None:
    import os

    deep = os.path.join(*(["d"] * 300))
    os.makedirs(tmp_path / deep)
    (tmp_path / deep / "x.md").write_bytes(b"x")
    assert [i.key for i in FolderStore(tmp_path).list()] == [deep.replace(os.sep, "/") + "/x.md"]


def test_land_skips_links_out_of_the_folder_and_special_files_with_reasons(tmp_path: Path) -> None:
    from hybridops.tasks.knowledge.landing import land_report

    source, _ = _hostile_landing(tmp_path)
    target = FolderStore(tmp_path / "zone")
    result = land_report(target, [Path(source.root)], prefix="kb")
    assert [f.doc_id for f in result.landed] == ["kb/alias.md", "kb/good.md", "kb/sub/inner.md"]
    assert {Path(s.source).name: s.code for s in result.skipped} == {
        "leak.md": "symlink_outside_root", "leakdir": "symlink_outside_root", "dangling.md": "broken_symlink",
        "pipe.md": "not_a_regular_file", "sock.md": "not_a_regular_file", "sub-alias": "symlinked_folder",
        "caf\\xe9 100%.md": "invalid_file_name",
    }
    assert b"top secret" not in b"".join(target.get(i.key) for i in target.list())
