"""One small interface over a folder or an S3 prefix, so the landing zone and the store behave the same."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.errors import ServiceUnavailableError

TEMP_MARK = ".hybridops-tmp-"


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its key (relative, '/'-separated), size and a token that changes when it changes."""

    key: str
    size: int
    version: str


class ObjectStoreError(ServiceUnavailableError):
    """The store could not be reached or refused an operation."""


class ObjectStore(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...


class FolderStore:
    """Objects are files below a root folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        root = self.root.resolve()
        if root != path and root not in path.parents:
            raise ValueError(f"key {key!r} escapes the store root {self.root}")
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(TEMP_MARK):
                    continue
                path = Path(dirpath) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed while listing
                    continue
                key = path.relative_to(self.root).as_posix()
                yield ObjectInfo(key=key, size=stat.st_size, version=f"{stat.st_mtime_ns}-{stat.st_size}")

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(key) from exc

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_MARK, dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.root.resolve() or not parent.is_relative_to(self.root.resolve()):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


class S3Store:
    """Objects below s3://bucket/prefix, through boto3 (MinIO locally, AWS S3 in production)."""

    def __init__(self, uri: str, settings: Settings, client=None):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        self.uri = uri
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or s3_client(settings)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in _wrap(lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)))):
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=obj["Key"][len(self.prefix) :], size=obj["Size"], version=obj["ETag"].strip('"')
                )

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise KeyError(key) from exc
            raise ObjectStoreError(f"S3 get {key!r} failed: {exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        _wrap(lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))

    def delete(self, key: str) -> None:
        _wrap(lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise ObjectStoreError(f"S3 head {key!r} failed: {exc}") from exc


def _wrap(call):
    """Turn connection failures into one clear error type."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except (BotoCoreError, ClientError) as exc:
        raise ObjectStoreError(f"S3 request failed: {exc}") from exc


def s3_client(settings: Settings):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        aws_access_key_id=settings.s3_access_key.get_secret_value(),
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        region_name=settings.s3_region,
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
            s3={"addressing_style": "path"},
        ),
    )


def open_store(uri: str, settings: Settings) -> ObjectStore:
    """A folder path or s3://bucket/prefix -> the matching store."""
    if uri.startswith("s3://"):
        store = S3Store(uri, settings)
        _wrap(store.ensure_bucket)
        return store
    return FolderStore(uri)


def landing_zone(settings: Settings) -> ObjectStore:
    return open_store(settings.landing_uri, settings)


def artifact_store(settings: Settings) -> ObjectStore:
    return open_store(settings.store_uri, settings)
