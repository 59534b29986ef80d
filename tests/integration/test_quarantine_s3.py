"""Quarantine on the real MinIO server: hostile ids, listing, release and prune through S3Store."""

from __future__ import annotations

from hybridops.tasks.core.object_store import S3Store, artifact_store
from hybridops.tasks.core.quarantine import list_quarantined, prune, quarantine, read_copy, release
from hybridops.tasks.core.settings import Settings

IDS = ["../escape.md", "/abs/x.md", "with space/ünï 日本.md", "dos\\p.md", "deep/" + "x" * 900 + ".md"]


def test_quarantine_round_trip_on_minio(s3_settings: Settings) -> None:
    store = artifact_store(s3_settings)
    assert isinstance(store, S3Store) and store.prefix.startswith(s3_settings.namespace + "/")
    try:
        for i, item_id in enumerate(IDS):
            quarantine(store, "documents", item_id, f"body {i}".encode(), [f"unsafe_id: {i}"], f"etag{i}")
        quarantine(store, "training", "_training/a.jsonl#3", b"{}", ["missing_field: answer"], "etag")

        keys = [info.key for info in store.list()]
        assert len(keys) == 2 * (len(IDS) + 1)
        assert all(k.startswith(("quarantine/documents/", "quarantine/training/")) for k in keys)
        assert all(".." not in k.split("/") for k in keys)

        held = {e.item_id: e for e in list_quarantined(store, "documents")}
        assert set(held) == set(IDS)
        assert read_copy(store, held[IDS[2]]) == b"body 2"
        assert held[IDS[0]].reasons == ["unsafe_id: 0"] and held[IDS[0]].source_version == "etag0"

        assert release(store, "documents", IDS[0]) is True
        assert sorted(prune(store, "documents", keep={IDS[1]})) == sorted(IDS[2:])
        assert [(e.kind, e.item_id) for e in list_quarantined(store)] == [
            ("documents", IDS[1]), ("training", "_training/a.jsonl#3")
        ]
    finally:
        for info in list(store.list("quarantine/")):
            store.delete(info.key)
    assert list_quarantined(store) == []
