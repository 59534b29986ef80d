"""One small interface over a folder or an S3 prefix, so the landing zone and the store behave the same."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.errors import BadInputError, DocumentError, ServiceUnavailableError

TEMP_MARK = ".hybridops-tmp-"


@dataclass(frozen=True)
class ObjectInfo:
    """A stored object: its key (relative, '/'-separated), size and a token that changes when it changes.

    `problem` is a reason code when the object must not be read as data (the folder store never opens it):
    'symlink_outside_root', 'broken_symlink', 'not_a_regular_file' (FIFO, socket, device) or
    'invalid_file_name' (not valid UTF-8; the key is then the name with those bytes percent-encoded).
    `get` of such a key raises DocumentError with that code, so a refresh quarantines it with a reason.
    """

    key: str
    size: int
    version: str
    problem: str | None = None


class ObjectStoreError(ServiceUnavailableError):
    """The store could not be reached or refused an operation."""


class StoreRootUnavailable(ObjectStoreError):
    """A folder store's root does not exist, is not a folder or cannot be listed (an unmounted disk, a typo):
    never to be read as an empty store. Unavailable (exit 3, retried by flows): a mount can come back."""


class BucketMissing(BadInputError):
    """An S3 store's bucket does not exist or may not be listed; only `hybridops up` creates buckets."""


class ObjectStore(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def info(self, key: str) -> ObjectInfo | None: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def check_root(self) -> None: ...
    def sha256(self, key: str) -> str: ...


# Reason codes of landing-zone entries the folder store lists but never reads.
SYMLINK_OUTSIDE_ROOT = "symlink_outside_root"
BROKEN_SYMLINK = "broken_symlink"
NOT_A_REGULAR_FILE = "not_a_regular_file"
INVALID_FILE_NAME = "invalid_file_name"
PERMISSION_DENIED = "permission_denied"

HASH_LIMIT_BYTES = 256 * 1024 * 1024
"""Files up to this size get a content version (sha256); bigger ones (model weights, never documents) a
stat version (inode, size, mtime, ctime), which still changes on every write."""

_HASHES: dict[str, tuple[tuple[int, int, int, int, int], str]] = {}
"""In-process cache: path -> (stat key, sha256). ctime moves on every content write even when mtime is put
back (cp -p, rsync -a), so an unchanged (dev, inode, size, mtime_ns, ctime_ns) means unchanged bytes."""
_HASHES_LOCK = threading.Lock()


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def encode_name(name: str) -> str:
    """A key segment for a file name as os.fsdecode gives it: when the name is not valid UTF-8, its
    undecodable bytes (surrogate escapes) and '%' become %XX; valid names are kept as they are."""
    if not has_surrogates(name):
        return name
    return "".join(
        "%25" if ch == "%" else "".join(f"%{b:02X}" for b in os.fsencode(ch)) if has_surrogates(ch) else ch
        for ch in name
    )


def decode_name(segment: str) -> str:
    """The os-level name (surrogate escapes for undecodable bytes) of an encode_name'd segment."""
    from urllib.parse import unquote_to_bytes

    return os.fsdecode(unquote_to_bytes(segment))


def has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def read_regular_file(path: str | os.PathLike, follow_symlinks: bool = False, what: str = "") -> bytes:
    """The bytes of a regular file, opened without blocking (a FIFO never stalls us) and checked after
    opening (no race between the check and the read); anything else raises DocumentError."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise DocumentError(NOT_A_REGULAR_FILE, f"{what or path} is a symbolic link") from None
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket, or a FIFO/device without a peer
            raise DocumentError(NOT_A_REGULAR_FILE, f"{what or path} is not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DocumentError(NOT_A_REGULAR_FILE, f"{what or path} is a {_kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return handle.read()


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return name
    return "special file"


class FolderStore:
    """Objects are files below a root folder; writes are atomic (temp file + rename).

    Listing never opens anything but regular files inside the root: it walks with lstat, does not descend
    into symlinked folders, and reports symlinks leading outside the root, FIFOs, sockets, devices and
    undecodable names as entries with a `problem` (see ObjectInfo) so they can be quarantined. Versions are
    content hashes (sha256), cached per process by stat key, so an edit that keeps size and mtime is seen.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.uri = str(self.root)

    def _real_root(self) -> str:
        return os.path.realpath(self.root)

    def check_root(self) -> None:
        """Raise StoreRootUnavailable unless the root is an existing folder this process can list."""
        try:
            with os.scandir(self.root) as entries:
                next(entries, None)
        except FileNotFoundError:
            raise StoreRootUnavailable(f"{self.root} does not exist (an unmounted disk, or a typo in the "
                                       f"setting?); nothing was read as deleted") from None
        except NotADirectoryError:
            raise StoreRootUnavailable(f"{self.root} is not a folder; nothing was read as deleted") from None
        except OSError as exc:
            raise StoreRootUnavailable(f"{self.root} cannot be listed ({exc.strerror or exc}); nothing was "
                                       f"read as deleted") from None

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        root = self.root.resolve()
        if root != path and root not in path.parents:
            raise ValueError(f"key {key!r} escapes the store root {self.root}")
        return path

    def _lexical(self, key: str) -> Path:
        """The path of a key without following symlinks; a key with '..'/absolute segments is refused.
        A segment that is not there but whose percent-decoded form is (an undecodable name) maps to that."""
        parts = [part for part in key.split("/") if part not in ("", ".")]
        if key.startswith("/") or ".." in parts or not parts:
            raise ValueError(f"key {key!r} escapes the store root {self.root}")
        path = self.root
        for part in parts:
            candidate = path / part
            if "%" in part and not os.path.lexists(candidate):
                decoded = path / decode_name(part)
                if os.path.lexists(decoded):
                    candidate = decoded
            path = candidate
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return
        real_root = self._real_root()
        start = os.path.relpath(base, self.root)
        start_parts = [] if start == "." else list(Path(start).parts)
        # explicit stack of (folder, its key segments, whether a segment is undecodable): no recursion
        stack: list[tuple[str, list[str], bool]] = [(str(base), [encode_name(p) for p in start_parts],
                                                     any(has_surrogates(p) for p in start_parts))]
        while stack:
            folder, parts, bad_name = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    found = sorted(entries, key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):  # removed while listing
                continue
            subfolders = []
            for entry in found:
                if entry.name.startswith(TEMP_MARK):
                    continue
                key_parts = [*parts, encode_name(entry.name)]
                bad = bad_name or has_surrogates(entry.name)
                try:
                    info = self._describe(entry, "/".join(key_parts), real_root, bad)
                except FileNotFoundError:  # removed while listing
                    continue
                if info is None:
                    subfolders.append((entry.path, key_parts, bad))
                elif info:
                    yield info
            stack.extend(reversed(subfolders))  # depth-first in name order, like os.walk + sorted

    def info(self, key: str) -> ObjectInfo | None:
        """One key's listing entry (None when absent or a folder): reads its folder, not the whole tree."""
        try:
            path = self._lexical(key)
        except ValueError:
            return None
        bad = has_surrogates(str(path.relative_to(self.root)))
        try:
            with os.scandir(path.parent) as entries:
                entry = next((e for e in entries if e.name == path.name), None)
            described = self._describe(entry, key, self._real_root(), bad) if entry else None
        except (FileNotFoundError, NotADirectoryError):
            return None
        return described if isinstance(described, ObjectInfo) else None

    def _describe(self, entry: os.DirEntry, key: str, real_root: str, bad_name: bool) -> ObjectInfo | None | bool:
        """ObjectInfo for a file or a flagged entry, None for a folder to descend into, False to skip."""
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            return None
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(entry.path)
            if os.path.commonpath([real_root, target]) != real_root:
                return ObjectInfo(key, 0, _stat_version(st, SYMLINK_OUTSIDE_ROOT), SYMLINK_OUTSIDE_ROOT)
            try:
                target_st = os.stat(entry.path)
            except OSError:  # dangling, or a loop
                return ObjectInfo(key, 0, _stat_version(st, BROKEN_SYMLINK), BROKEN_SYMLINK)
            if stat.S_ISDIR(target_st.st_mode):
                return False  # a folder inside the root: its files are listed under their own keys
            st = target_st
        if not stat.S_ISREG(st.st_mode):
            return ObjectInfo(key, 0, _stat_version(st, NOT_A_REGULAR_FILE), NOT_A_REGULAR_FILE)
        if bad_name:
            return ObjectInfo(key, st.st_size, _stat_version(st, INVALID_FILE_NAME), INVALID_FILE_NAME)
        return ObjectInfo(key, st.st_size, _content_version(entry.path, st))

    def get(self, key: str) -> bytes:
        path = self._lexical(key)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise KeyError(key) from exc
        if has_surrogates(str(path.relative_to(self.root))):
            raise DocumentError(INVALID_FILE_NAME, f"the name of {key!r} is not valid UTF-8 (bytes shown as %XX)")
        # no folder on the way may be a symlink that leaves the root either
        real_root, target = self._real_root(), os.path.realpath(path)
        if os.path.commonpath([real_root, target]) != real_root:
            where = "is a symbolic link" if stat.S_ISLNK(st.st_mode) else "lies below a symbolic link"
            raise DocumentError(SYMLINK_OUTSIDE_ROOT, f"{key!r} {where} leading outside the landing zone")
        if stat.S_ISLNK(st.st_mode) and not os.path.exists(path):
            raise DocumentError(BROKEN_SYMLINK, f"{key!r} is a symbolic link to nothing (dangling or a loop)")
        try:
            return read_regular_file(target, what=repr(key))
        except FileNotFoundError as exc:
            raise KeyError(key) from exc
        except PermissionError:
            raise DocumentError(PERMISSION_DENIED, f"{key!r} cannot be read: permission denied") from None

    def sha256(self, key: str) -> str:
        """Digest of a regular file read in 1 MiB chunks (a huge file is never held in memory)."""
        path = self._lexical(key)
        if not path.is_file() or path.is_symlink():
            return hashlib.sha256(self.get(key)).hexdigest()  # let get() say what is wrong with it
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def put(self, key: str, data: bytes) -> None:
        """Durable and atomic: a temp file in the same folder is written and fsynced, renamed over the key,
        then the folder is fsynced (new folders too). Readers see the old or the new bytes, never a torn
        file, also after a power cut; a write that fails at any point leaves no temp file behind."""
        path = self._path(key)
        created = self._make_parents(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_MARK, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        for folder in {path.parent, *(c.parent for c in created)}:
            self._fsync_dir(folder)

    @staticmethod
    def _make_parents(folder: Path) -> list[Path]:
        """mkdir -p, returning the folders it created (their parents need an fsync to keep them)."""
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for each in reversed(missing):
            each.mkdir(exist_ok=True)
        return missing

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        """Persist a folder's entries (a rename or a new file); a no-op where folders cannot be fsynced."""
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise
        finally:
            os.close(fd)

    def delete(self, key: str) -> None:
        path = self._lexical(key)
        if os.path.islink(path) or has_surrogates(str(path)):  # remove the entry itself, never a link target
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            path = self._path(key)
            path.unlink(missing_ok=True)
        real_root = self.root.resolve()
        for parent in path.parents:
            if parent.resolve() == real_root or not parent.resolve().is_relative_to(real_root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def exists(self, key: str) -> bool:
        path = self._lexical(key)
        return os.path.lexists(path) and not os.path.isdir(path)


def _stat_version(st: os.stat_result, kind: str = "stat") -> str:
    """A version token from metadata only (for entries that are never read, and for huge files)."""
    return f"{kind}:{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}"


def _content_version(path: str, st: os.stat_result) -> str:
    """sha256 of a regular file's bytes; re-hashed only when its stat key changed since the last look."""
    if st.st_size > HASH_LIMIT_BYTES:
        return _stat_version(st)
    key = _stat_key(st)
    with _HASHES_LOCK:
        cached = _HASHES.get(path)
    if cached and cached[0] == key:
        return cached[1]
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise
    except OSError:  # unreadable (permissions): still listed; get() reports the error
        return _stat_version(st)
    with os.fdopen(fd, "rb") as handle:
        after = os.fstat(fd)
        if not stat.S_ISREG(after.st_mode):  # swapped for something else since the lstat
            return _stat_version(after, NOT_A_REGULAR_FILE)
        os.set_blocking(fd, True)
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        key = _stat_key(after)
    version = digest.hexdigest()
    with _HASHES_LOCK:
        _HASHES[path] = (key, version)
    return version


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
        """Create the bucket if it is missing: only `hybridops up` (and tests) call this explicitly."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def check_root(self) -> None:
        """Raise BucketMissing unless the bucket exists and may be read (never creates it)."""
        from botocore.exceptions import ClientError

        try:
            _wrap(lambda: self.client.head_bucket(Bucket=self.bucket))
        except ObjectStoreError as exc:
            cause = exc.__cause__
            code = cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise BucketMissing(f"bucket {self.bucket!r} of {self.uri} does not exist (a typo in the "
                                    f"setting?); it is never created here, `hybridops up` creates the "
                                    f"configured buckets") from None
            if code in {"403", "AccessDenied", "Forbidden"}:
                raise BucketMissing(f"bucket {self.bucket!r} of {self.uri} may not be read with these "
                                    f"credentials") from None
            raise

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pages = iter(self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)))
        while (page := _wrap(lambda: next(pages, None))) is not None:  # page by page: a listing is never held
            for obj in page.get("Contents", []):
                yield ObjectInfo(
                    key=obj["Key"][len(self.prefix) :], size=obj["Size"], version=obj["ETag"].strip('"')
                )

    def info(self, key: str) -> ObjectInfo | None:
        """One key's listing entry (None when absent): one LIST of at most one key, since a key sorts
        before every longer key it prefixes; the version is the same ETag token `list` gives."""
        page = _wrap(lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1))
        found = [obj for obj in page.get("Contents", []) if obj["Key"] == self._key(key)]
        return ObjectInfo(key=key, size=found[0]["Size"], version=found[0]["ETag"].strip('"')) if found else None

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise KeyError(key) from exc
            raise ObjectStoreError(f"S3 get {key!r} failed: {exc}") from exc

    def sha256(self, key: str) -> str:
        """Digest of an object read in 1 MiB chunks (a huge object is never held in memory)."""
        from botocore.exceptions import ClientError

        digest = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            for chunk in body.iter_chunks(1 << 20):
                digest.update(chunk)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise KeyError(key) from exc
            raise ObjectStoreError(f"S3 get {key!r} failed: {exc}") from exc
        return digest.hexdigest()

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
    """A boto3 S3 client: the configured keys, the built-in keys for the local MinIO, or (no keys set, any
    other endpoint) boto3's default credential chain. Settings.s3_credentials decides and refuses misuse."""
    import boto3
    from botocore.config import Config

    credentials = settings.s3_credentials()  # BadInputError before any request is made
    keys = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]} if credentials else {}
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        **keys,
        region_name=settings.s3_region,
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
            s3={"addressing_style": "path"},
        ),
    )


def open_store(uri: str, settings: Settings, create_bucket: bool = False) -> ObjectStore:
    """A folder path or s3://bucket/prefix -> the matching store. A missing bucket is created only when
    asked (`hybridops up`): a mistyped landing bucket must fail, not appear empty."""
    if uri.startswith("s3://"):
        store = S3Store(uri, settings)
        if create_bucket:
            _wrap(store.ensure_bucket)
        return store
    return FolderStore(uri)


def landing_zone(settings: Settings) -> ObjectStore:
    return open_store(settings.landing_uri, settings)


def artifact_store(settings: Settings) -> ObjectStore:
    return open_store(settings.store_uri, settings)
