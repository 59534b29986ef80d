"""What hybridops survives: hostile files landed next to good ones never stall or fail the refresh.

Each case lands hostile items together with good documents, runs the real `hybridops refresh --json` as a
subprocess with a timeout (a hang fails the test), and checks: exit code 0, every good document of the same
run indexed, and each hostile item held in `hybridops quarantine list` with its reason code.

Parser cases (both backends, one refresh per backend):
    front-matter date 2024-13-45 ........ invalid_front_matter
    recursive YAML alias ................ alias_bomb
    YAML alias bomb (billion laughs) .... alias_bomb
    5000-digit number (YAML, JSON) ...... number_too_large
    lone surrogate "\\ud800" in JSON ..... invalid_text
    JSON nested 100k deep ............... too_deep
    HTML nested 5000 elements deep ...... too_deep
Folder landing zone only (one refresh):
    symlink to a file outside the root .. symlink_outside_root
    symlink to a folder outside the root  symlink_outside_root
    dangling symlink .................... broken_symlink
    FIFO (would block forever if read) .. not_a_regular_file
    unix socket ......................... not_a_regular_file
    file name that is not UTF-8 ......... invalid_file_name   (key: bytes percent-encoded, e.g. caf%E9.md)
Change detection (folder): a same-size edit that keeps its mtime (cp -p, rsync -a) is re-indexed.
`hybridops land`: never copies a symlink's target outside the landed folder, never opens a FIFO.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path


from hybridops.tasks.core.object_store import artifact_store, landing_zone
from hybridops.tasks.knowledge.landing_changes import snapshot
from tests.integration.knowledge_support import (
    assert_index_matches_landing,
    cli,
    index_state,
    put,
)

TIMEOUT_S = 120

GOOD = {
    "good/returns.md": "---\ntitle: Returns\ntags: [returns]\nupdated: 2025-03-04\n---\n# Returns\n\n"
                       "Unused gear can be returned within 45 days of purchase with the original receipt.",
    "good/hours.txt": "Store hours\n\nThe Reno store opens at nine in the morning, seven days a week.",
    "good/gift-cards.json": json.dumps({"title": "Gift cards", "text": "Gift cards never expire and can be "
                                        "used online or in any store.", "metadata": {"audience": "customers"}}),
    "good/rentals.html": "<html><head><title>Rentals</title></head><body><h1>Rentals</h1>"
                         "<p>Tents and stoves can be rented by the day at every store.</p></body></html>",
}


def _alias_bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        name, prev = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "---\n" + "\n".join(lines) + "\n---\n# Laughs\n\nbody text"


PARSER_HOSTILES: dict[str, tuple[str, str]] = {  # doc id -> (content, reason code)
    "hostile/bad-date.md": ("---\ntitle: Bad date\nupdated: 2024-13-45\n---\nbody text", "invalid_front_matter"),
    "hostile/recursive-alias.md": ("---\na: &a [1, *a]\n---\nbody text", "alias_bomb"),
    "hostile/alias-bomb.md": (_alias_bomb(), "alias_bomb"),
    "hostile/huge-number.md": ("---\nn: " + "9" * 5000 + "\n---\nbody text", "number_too_large"),
    "hostile/huge-number.json": ('{"text": "body", "metadata": {"n": ' + "9" * 5000 + "}}", "number_too_large"),
    "hostile/surrogate.json": ('{"text": "broken \\ud800 text"}', "invalid_text"),
    "hostile/deep.json": ('{"text": "x", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}", "too_deep"),
    "hostile/deep.html": ("<html><body>" + "<div>" * 5000 + "deep" + "</div>" * 5000 + "</body></html>", "too_deep"),
}


def refresh(env: dict[str, str]) -> dict:
    """`hybridops refresh --json` must finish in bounded time, exit 0 and print one JSON object."""
    done = cli(env, "refresh", "--json", timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout[-3000:]
    return json.loads(lines[0])


def quarantine_entries(env: dict[str, str]) -> dict[str, dict]:
    done = cli(env, "quarantine", "list", "--json", timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return {e["item_id"]: e for e in json.loads(done.stdout)["quarantined"]}


def quarantined_codes(env: dict[str, str]) -> dict[str, list[str]]:
    return {item_id: [code for r in e["reasons"] for code in reason_codes(r)]
            for item_id, e in quarantine_entries(env).items()}


def reason_codes(reason: str) -> list[str]:
    """'code: message' -> [code]. A read error the refresh wraps ('unreadable: DocumentError: code: message')
    also yields the store's own code."""
    code, _, rest = reason.partition(": ")
    wrapped = rest.removeprefix("DocumentError: ")
    return [code, wrapped.partition(": ")[0]] if wrapped != rest else [code]


def assert_held(report: dict, held: dict[str, list[str]], expected: dict[str, str]) -> None:
    reported = {q["doc_id"] for q in report["quarantined"]}
    for doc_id, code in expected.items():
        assert doc_id in reported, (doc_id, sorted(reported))
        assert code in held.get(doc_id, []), (doc_id, held.get(doc_id))


def test_parser_hostiles_are_quarantined_with_reasons_on_both_backends(cfg, child_env):
    cfg, env = cfg, child_env(cfg)
    put(cfg, {**GOOD, **{doc_id: content for doc_id, (content, _) in PARSER_HOSTILES.items()}})
    report = refresh(env)
    assert report["documents"]["added"] == len(GOOD)
    assert report["documents"]["quarantined"] == len(PARSER_HOSTILES)
    assert_held(report, quarantined_codes(env), {doc_id: code for doc_id, (_, code) in PARSER_HOSTILES.items()})
    assert set(index_state(cfg)) == set(GOOD)
    assert_index_matches_landing(cfg)


def test_special_files_in_a_folder_landing_zone_are_quarantined_never_opened(folder_cfg, child_env, tmp_path):
    """The folder store lists these with a problem code and its get() raises DocumentError(code) instead of
    reading them; the refresh holds a per-document read error (tasks/knowledge/refresh_apply.py)."""
    cfg, env = folder_cfg, child_env(folder_cfg)
    put(cfg, GOOD)
    root = Path(cfg.landing_uri)
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "secret.md").write_text("# Secret\n\nThe vault code is 0000.")
    (outside / "folder" / "more.md").write_text("# More secrets\n\nNot for the index.")
    (root / "hostile").mkdir()
    os.symlink(outside / "secret.md", root / "hostile" / "leak.md")
    os.symlink(outside / "folder", root / "hostile" / "leak-folder")
    os.symlink(root / "nowhere.md", root / "hostile" / "dangling.md")
    os.mkfifo(root / "hostile" / "pipe.md")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "hostile" / "socket.md"))
    (root / "hostile" / os.fsdecode(b"caf\xe9.md")).write_bytes(b"# Cafe\n\nA name that is not UTF-8.")
    expected = {
        "hostile/leak.md": "symlink_outside_root",
        "hostile/leak-folder": "symlink_outside_root",
        "hostile/dangling.md": "broken_symlink",
        "hostile/pipe.md": "not_a_regular_file",
        "hostile/socket.md": "not_a_regular_file",
        "hostile/caf%E9.md": "invalid_file_name",
    }
    try:
        assert set(snapshot(landing_zone(cfg))) == set(GOOD) | set(expected)  # the watcher's listing survives
        report = refresh(env)
    finally:
        sock.close()
    assert report["documents"]["added"] == len(GOOD)
    assert_held(report, quarantined_codes(env), expected)
    state = index_state(cfg)
    assert set(state) == set(GOOD)
    assert "vault code" not in json.dumps([r.text for records in state.values() for r in records])


def test_a_same_size_edit_that_keeps_its_mtime_is_reindexed(folder_cfg, child_env):
    cfg, env = folder_cfg, child_env(folder_cfg)
    put(cfg, GOOD)
    assert refresh(env)["documents"]["added"] == len(GOOD)
    path = Path(cfg.landing_uri) / "good" / "hours.txt"
    before = path.stat()
    data = path.read_bytes()
    path.write_bytes(data.replace(b"nine", b"NINE"))  # same size, different bytes
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as cp -p / rsync -a leave it
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    report = refresh(env)
    assert report["documents"]["updated"] == 1 and report["documents"]["unchanged"] == len(GOOD) - 1
    assert any("NINE" in r.text for r in index_state(cfg)["good/hours.txt"])


def test_land_never_follows_links_out_of_the_folder_nor_opens_a_fifo(folder_cfg, child_env, tmp_path):
    cfg, env = folder_cfg, child_env(folder_cfg)
    source, outside = tmp_path / "to-land", tmp_path / "private"
    source.mkdir()
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nThe vault code is 0000.")
    (source / "returns.md").write_text(GOOD["good/returns.md"])
    os.symlink(outside / "secret.md", source / "leak.md")
    os.symlink(outside, source / "leak-folder")
    os.mkfifo(source / "pipe.md")
    done = cli(env, "land", str(source), "--json", timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["landed"] == ["returns.md"]
    assert sorted(os.listdir(cfg.landing_uri)) == ["returns.md"]
    skipped = {Path(s["source"]).name: s["reason"].split(":", 1)[0] for s in out["skipped"]}
    assert skipped == {"leak.md": "symlink_outside_root", "leak-folder": "symlink_outside_root",
                       "pipe.md": "not_a_regular_file"}


def test_an_oversized_document_is_held_by_reference_never_copied_nor_reread(cfg, child_env):
    """Size comes from the listing: a document over max_document_bytes is never parsed or copied; its
    quarantine entry names key, size and a streamed sha256, and the next run does not hash it again."""
    env = child_env(cfg) | {"HYBRIDOPS_MAX_DOCUMENT_BYTES": "20000"}
    big = b"# Big\n\n" + b"A line of a far too large document.\n" * 2000
    put(cfg, {**GOOD, "big/huge.md": big})
    first = refresh(env)
    assert first["documents"]["added"] == len(GOOD) and first["documents"]["quarantined"] == 1
    held = quarantine_entries(env)["big/huge.md"]
    assert held["by_reference"] is True and held["copy_key"] == "" and held["size"] == len(big)
    assert held["sha256"] == hashlib.sha256(big).hexdigest()
    assert held["reasons"][0].startswith("too_large: ")
    assert not any("original" in info.key for info in artifact_store(cfg).list("quarantine/documents/"))
    second = refresh(env)
    assert second["documents"]["quarantined"] == 1
    again = quarantine_entries(env)["big/huge.md"]
    assert again["quarantined_at"] == held["quarantined_at"]  # the same version was not hashed or rewritten
    assert set(index_state(cfg)) == set(GOOD)
