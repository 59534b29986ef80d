"""A real MinIO server through boto3 and through hybridops' S3Store."""

from __future__ import annotations

import pytest

from hybridops.tasks.core.object_store import S3Store, s3_client
from hybridops.tasks.core.settings import Settings

KEYS = ["plain.txt", "with space/and more.md", "ünïcødé/日本語 ファイル.json"]


def test_boto3_put_list_get_delete(s3_settings: Settings) -> None:
    client = s3_client(s3_settings)
    bucket, prefix = s3_settings.s3_bucket, f"{s3_settings.namespace}/raw/"
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    for i, key in enumerate(KEYS):
        client.put_object(Bucket=bucket, Key=prefix + key, Body=f"body {i}".encode())
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert sorted(listed) == sorted(prefix + k for k in KEYS)
    for i, key in enumerate(KEYS):
        assert client.get_object(Bucket=bucket, Key=prefix + key)["Body"].read() == f"body {i}".encode()
    for key in KEYS:
        client.delete_object(Bucket=bucket, Key=prefix + key)
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=prefix)


def test_s3_store_matches_folder_semantics(s3_settings: Settings) -> None:
    store = S3Store(s3_settings.landing_uri, s3_settings)
    store.ensure_bucket()
    for key in KEYS:
        store.put(key, key.encode("utf-8"))
    infos = {info.key: info for info in store.list()}
    assert set(infos) == set(KEYS)
    assert all(store.get(k) == k.encode() for k in KEYS)
    assert store.exists(KEYS[1]) and not store.exists("missing.md")
    assert all(store.info(k) == infos[k] for k in KEYS)  # one key's entry, as the listing gives it
    store.put("plain.txt.bak", b"a longer key with the same start")
    assert store.info("plain.txt") == infos["plain.txt"] and store.info("plain") is None
    assert store.info("with space") is None and store.info("missing.md") is None
    store.delete("plain.txt.bak")
    before = infos[KEYS[0]].version
    store.put(KEYS[0], b"changed")
    assert {i.key: i for i in store.list()}[KEYS[0]].version != before
    for key in KEYS:
        store.delete(key)
    assert list(store.list()) == []
    with pytest.raises(KeyError):
        store.get(KEYS[0])
