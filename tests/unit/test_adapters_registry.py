"""Adapter registry on a folder store: manifest hashing, tamper detection, pickle refusal, champion pointer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hybridops.tasks.behaviour import adapters
from hybridops.tasks.behaviour.adapters import AdapterError, AdapterIntegrityError
from tests.adapter_support import adapter_folder, register


def test_manifest_records_sha256_of_every_file(cfg, store, tmp_path) -> None:
    folder = adapter_folder(tmp_path)
    manifest = register(cfg, store, folder)
    assert set(manifest.files) == {"adapter_model.safetensors", "adapter_config.json"}
    for name, digest in manifest.files.items():
        data = (folder / name).read_bytes()
        assert digest.sha256 == hashlib.sha256(data).hexdigest()
        assert digest.size == len(data)
    stored = adapters.show(cfg, manifest.version, store)
    assert stored.dataset_fingerprint == "f" * 64
    assert stored.training.steps == 3 and stored.train.final_loss == 1.0
    assert [m.version for m in adapters.list_versions(cfg, store)] == [manifest.version]
    fetched = adapters.fetch_verified(store, stored, tmp_path / "fetched")
    assert (fetched / "adapter_model.safetensors").read_bytes() == b"weights"


def test_one_flipped_byte_is_refused(cfg, store, tmp_path) -> None:
    manifest = register(cfg, store, adapter_folder(tmp_path))
    key = f"adapters/{manifest.version}/adapter_model.safetensors"
    data = bytearray(store.get(key))
    data[0] ^= 0x01
    store.put(key, bytes(data))
    with pytest.raises(AdapterIntegrityError, match="tampered"):
        adapters.fetch_verified(store, manifest, tmp_path / "x")
    with pytest.raises(AdapterIntegrityError):
        adapters.promote(cfg, manifest.version, "test", store=store)
    assert adapters.champion(cfg, store) is None


def test_pickle_weights_are_refused_at_registration_and_at_load(cfg, store, tmp_path) -> None:
    folder = adapter_folder(tmp_path)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(AdapterIntegrityError, match="pickle"):
        register(cfg, store, folder)

    manifest = register(cfg, store, adapter_folder(tmp_path, b"other"))
    store.put(f"adapters/{manifest.version}/adapter_model.bin", b"\x80\x04pickle")
    with pytest.raises(AdapterIntegrityError, match="pickle"):
        adapters.fetch_verified(store, manifest, tmp_path / "y")


def test_unlisted_file_is_refused(cfg, store, tmp_path) -> None:
    manifest = register(cfg, store, adapter_folder(tmp_path))
    store.put(f"adapters/{manifest.version}/extra.safetensors", b"x")
    with pytest.raises(AdapterIntegrityError, match="not in the manifest"):
        adapters.fetch_verified(store, manifest, tmp_path / "z")


def test_promote_and_rollback_move_the_pointer_with_history(cfg, store, tmp_path) -> None:
    first = register(cfg, store, adapter_folder(tmp_path, b"one"))
    second = register(cfg, store, adapter_folder(tmp_path, b"two"), parent=first.version)
    assert adapters.champion_version(cfg, store) is None
    with pytest.raises(AdapterError, match="nothing to roll back"):
        adapters.rollback(cfg, store=store)

    adapters.promote(cfg, first.version, "first", {"json_format": 0.9}, store=store)
    pointer = adapters.promote(cfg, second.version, "second", store=store)
    assert pointer.version == second.version
    assert [e.version for e in pointer.history] == [None, first.version]
    with pytest.raises(AdapterError, match="already the champion"):
        adapters.promote(cfg, second.version, "again", store=store)

    back = adapters.rollback(cfg, store=store)
    assert back.version == first.version and back.current.scores == {"json_format": 0.9}
    assert adapters.champion_version(cfg, store) == first.version
    assert adapters.rollback(cfg, store=store).version is None  # back to the bare base model
    with pytest.raises(AdapterError):
        adapters.rollback(cfg, store=store)


def test_unknown_version_and_bad_names_are_clear_errors(cfg, store) -> None:
    with pytest.raises(AdapterError, match="no adapter version"):
        adapters.show(cfg, "20260101-000000-dead", store)
    with pytest.raises(AdapterError, match="invalid adapter version"):
        adapters.show(cfg, "../escape", store)


def test_unfinished_upload_is_ignored_then_cleaned(cfg, store, tmp_path) -> None:
    store.put("adapters/20260101-000000-dead/adapter_model.safetensors", b"half")  # a crash long ago
    in_flight = adapters.new_version()  # another process uploading right now
    store.put(f"adapters/{in_flight}/adapter_model.safetensors", b"uploading")
    assert adapters.list_versions(cfg, store) == []
    manifest = register(cfg, store, adapter_folder(tmp_path))
    versions = [info.key.split("/")[1] for info in store.list("adapters/")]
    assert sorted(set(versions)) == sorted({manifest.version, in_flight})
    assert [m.version for m in adapters.list_versions(cfg, store)] == [manifest.version]


# State repair (hardening §4) ----------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"   \n", b"{not json", b'{"current": {"version": 3}}'])
def test_corrupt_or_empty_pointer_is_an_integrity_error_and_promote_repairs_it(cfg, store, tmp_path, content) -> None:
    first = register(cfg, store, adapter_folder(tmp_path, b"one"))
    store.put(adapters.CHAMPION_KEY, content)
    with pytest.raises(adapters.ChampionPointerError, match="adapters promote") as caught:
        adapters.champion_version(cfg, store)
    assert caught.value.exit_code == 4
    # the registry still lists every version
    assert [m.version for m in adapters.list_versions(cfg, store)] == [first.version]
    pointer = adapters.promote(cfg, first.version, "repair", store=store)  # corrupt = no history
    assert pointer.version == first.version and [e.version for e in pointer.history] == [None]
    assert adapters.champion_version(cfg, store) == first.version


def test_rollback_resets_a_corrupt_pointer_to_the_base_model(cfg, store, tmp_path) -> None:
    store.put(adapters.CHAMPION_KEY, b"\x00garbage")
    pointer = adapters.rollback(cfg, store=store)
    assert pointer.version is None and "corrupt" in pointer.current.reason
    assert adapters.champion(cfg, store).version is None  # a valid pointer again


def test_corrupt_manifest_is_listed_invalid_and_the_rest_as_usual(cfg, store, tmp_path) -> None:
    good = register(cfg, store, adapter_folder(tmp_path, b"good"))
    bad = register(cfg, store, adapter_folder(tmp_path, b"bad"))
    store.put(f"adapters/{bad.version}/manifest.json", b'{"version": "truncated')
    manifests, invalid = adapters.scan_versions(cfg, store)
    assert [m.version for m in manifests] == [good.version]
    assert [b.version for b in invalid] == [bad.version] and "manifest is corrupt" in invalid[0].reason
    assert [m.version for m in adapters.list_versions(cfg, store)] == [good.version]
    row = adapters.invalid_summary(invalid[0], None)
    assert row["valid"] is False and row["reason"]
    assert adapters.manifest_summary(manifests[0], None)["valid"] is True
    with pytest.raises(AdapterIntegrityError, match="manifest is corrupt"):
        adapters.show(cfg, bad.version, store)
    with pytest.raises(AdapterIntegrityError):
        adapters.promote(cfg, bad.version, "no", store=store)


@pytest.mark.parametrize("name", ["../../x", "..", "sub/file", "/etc/passwd", "", "a\\b"])
def test_manifest_file_names_must_be_plain(cfg, store, tmp_path, name) -> None:
    manifest = register(cfg, store, adapter_folder(tmp_path, b"names"))
    raw = json.loads(store.get(f"adapters/{manifest.version}/manifest.json"))
    raw["files"][name] = {"sha256": "0" * 64, "size": 1}
    store.put(f"adapters/{manifest.version}/manifest.json", json.dumps(raw).encode())
    with pytest.raises(AdapterIntegrityError, match="invalid file name"):
        adapters.show(cfg, manifest.version, store)
    assert [b.version for b in adapters.scan_versions(cfg, store)[1]] == [manifest.version]
    # a manifest object built in code (no validation) still never writes outside the destination
    forged = manifest.model_copy(update={"files": {**manifest.files, name: manifest.files["adapter_config.json"]}})
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(AdapterIntegrityError):
        adapters.fetch_verified(store, forged, dest)
    assert not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()
    assert not dest.exists() or list(dest.iterdir()) == []


def test_fetch_never_follows_a_symlink_out_of_the_destination(cfg, store, tmp_path) -> None:
    manifest = register(cfg, store, adapter_folder(tmp_path, b"link"))
    dest = tmp_path / "dest"
    dest.mkdir()
    outside = tmp_path / "outside.json"
    (dest / "adapter_config.json").symlink_to(outside)
    with pytest.raises(AdapterIntegrityError, match="outside"):
        adapters.fetch_verified(store, manifest, dest)
    assert not outside.exists()


def test_promote_is_compare_and_swap(cfg, store, tmp_path) -> None:
    first = register(cfg, store, adapter_folder(tmp_path, b"one"))
    second = register(cfg, store, adapter_folder(tmp_path, b"two"))
    adapters.promote(cfg, first.version, "first", store=store)
    adapters.rollback(cfg, store=store)  # e.g. a manual rollback while a retrain judged against `first`
    with pytest.raises(adapters.ChampionMovedError, match="champion changed during the run") as caught:
        adapters.promote(cfg, second.version, "retrain", store=store, expected_champion=first.version)
    assert caught.value.exit_code == 5
    assert adapters.champion_version(cfg, store) is None  # nothing moved
    pointer = adapters.promote(cfg, second.version, "retrain", store=store, expected_champion=None)
    assert pointer.version == second.version
    store.put(adapters.CHAMPION_KEY, b"{}")  # edited by hand: CAS refuses, plain promote repairs
    with pytest.raises(adapters.ChampionMovedError):
        adapters.promote(cfg, first.version, "retrain", store=store, expected_champion=second.version)


def test_undecided_challenger_is_found_by_fingerprint(cfg, store, tmp_path) -> None:
    decided = register(cfg, store, adapter_folder(tmp_path, b"decided"))
    adapters.record_evaluation(cfg, decided.version, {"json_format": 1.0}, 4, {"promote": False, "reason": "x"},
                               store=store)
    assert adapters.undecided_challenger(cfg, "f" * 64, store) is None
    pending = register(cfg, store, adapter_folder(tmp_path, b"pending"))
    assert adapters.undecided_challenger(cfg, "f" * 64, store).version == pending.version
    assert adapters.undecided_challenger(cfg, "e" * 64, store) is None  # other data: train afresh
    adapters.promote(cfg, pending.version, "by hand", store=store)  # a champion is not pending
    assert adapters.undecided_challenger(cfg, "f" * 64, store) is None
