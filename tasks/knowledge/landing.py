"""Putting documents into the landing zone and listing the ones the refresh owns (not `_training/`)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.object_store import (
    BROKEN_SYMLINK,
    INVALID_FILE_NAME,
    NOT_A_REGULAR_FILE,
    SYMLINK_OUTSIDE_ROOT,
    ObjectInfo,
    ObjectStore,
    has_surrogates,
    read_regular_file,
)

log = logging.getLogger(__name__)

SYMLINKED_FOLDER = "symlinked_folder"

TRAINING_PREFIX = "_training/"
"""The landing zone's training area (JSONL examples for the behaviour loop), never indexed."""


@dataclass(frozen=True)
class LandedFile:
    source: str
    doc_id: str
    size: int


def is_document_key(key: str) -> bool:
    return not key.startswith(TRAINING_PREFIX)


def landed_documents(store: ObjectStore) -> list[ObjectInfo]:
    """Every document object in the landing zone, by id."""
    return sorted(iter_landed_documents(store), key=lambda o: o.key)


def iter_landed_documents(store: ObjectStore) -> Iterator[ObjectInfo]:
    """Every document object in the landing zone, as the listing goes (a full reconcile never holds it)."""
    return (o for o in store.list() if is_document_key(o.key))


def require_landing_root(store: ObjectStore) -> None:
    """The landing root must exist and be listable (a folder, or an S3 bucket; never created here): a missing
    one raises instead of being read as 'every document was removed'."""
    store.check_root()


def landed_doc_ids(store: ObjectStore) -> set[str]:
    return {o.key for o in landed_documents(store)}


@dataclass(frozen=True)
class SkippedFile:
    """An input `land` did not copy, and why (reason is 'code: message', like quarantine reasons).
    `source` is printable: bytes of a name that are not UTF-8 are shown as backslash escapes."""

    source: str
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", os.fsencode(self.source).decode("utf-8", "backslashreplace"))

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass
class LandingPlan:
    files: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


@dataclass
class LandingResult:
    landed: list[LandedFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


def plan_landing(paths: list[Path], prefix: str = "") -> list[tuple[Path, str]]:
    """(file, doc id) pairs: a file lands under its name, a folder's files under their path relative to it."""
    return survey_landing(paths, prefix).files


def survey_landing(paths: list[Path], prefix: str = "") -> LandingPlan:
    """What `land` copies and what it skips. A folder is walked without following symlinks out of it: a
    symlink whose target lies outside the folder, a dangling one, a symlinked sub-folder (its files land
    under their real path), a FIFO/socket/device and a name that is not valid UTF-8 are skipped with a
    reason, never opened. A file named explicitly is taken as given (a symlink to it is followed)."""
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    plan = LandingPlan()
    for path in paths:
        if path.is_dir():
            _survey_folder(path, prefix, plan)
        elif path.is_file():
            if has_surrogates(path.name):
                plan.skipped.append(SkippedFile(str(path), f"{INVALID_FILE_NAME}: the file name is not valid UTF-8"))
            else:
                plan.files.append((path, prefix + path.name))
        elif os.path.lexists(path):
            plan.skipped.append(SkippedFile(str(path), _special(path, os.stat(path).st_mode)))
        else:
            raise BadInputError(f"{path} does not exist")
    ids = [doc_id for _, doc_id in plan.files]
    duplicates = sorted({d for d in ids if ids.count(d) > 1})
    if duplicates:
        raise BadInputError(f"several inputs would land as the same document id: {', '.join(duplicates)}")
    return plan


def _survey_folder(folder: Path, prefix: str, plan: LandingPlan) -> None:
    """Iterative walk (no recursion), lstat only; regular files in (relative path) order."""
    root = os.path.realpath(folder)
    found: list[tuple[tuple[str, ...], Path]] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(folder, ())]
    while stack:
        current, parts = stack.pop()
        with os.scandir(current) as entries:
            listed = list(entries)
        for entry in listed:
            path, rel = Path(entry.path), (*parts, entry.name)
            if any(has_surrogates(part) for part in rel):
                plan.skipped.append(SkippedFile(entry.path, f"{INVALID_FILE_NAME}: the file name is not valid UTF-8"))
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                stack.append((path, rel))
            elif stat.S_ISLNK(mode):
                target = os.path.realpath(path)
                if os.path.commonpath([root, target]) != root:
                    plan.skipped.append(SkippedFile(
                        entry.path, f"{SYMLINK_OUTSIDE_ROOT}: a symbolic link to {target}, outside {folder}"))
                    continue
                try:
                    target_mode = os.stat(path).st_mode
                except OSError:
                    plan.skipped.append(SkippedFile(entry.path, f"{BROKEN_SYMLINK}: a symbolic link to nothing"))
                    continue
                if stat.S_ISDIR(target_mode):
                    plan.skipped.append(SkippedFile(entry.path, f"{SYMLINKED_FOLDER}: a link to a folder "
                                                                f"inside {folder}; its files land under their real path"))
                elif stat.S_ISREG(target_mode):
                    found.append((rel, path))
                else:
                    plan.skipped.append(SkippedFile(entry.path, _special(path, target_mode)))
            elif stat.S_ISREG(mode):
                found.append((rel, path))
            else:
                plan.skipped.append(SkippedFile(entry.path, _special(path, mode)))
    for rel, path in sorted(found):
        plan.files.append((path, prefix + "/".join(rel)))
    plan.skipped.sort(key=lambda s: s.source)


def _special(path: Path, mode: int) -> str:
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{NOT_A_REGULAR_FILE}: {path.name} is {kind}; it is never opened"


def land_report(store: ObjectStore, paths: list[Path], prefix: str = "") -> LandingResult:
    """Copy files/folders into the landing zone keeping relative paths (atomic puts; existing ids are
    replaced); what cannot be landed safely is skipped and listed with a reason."""
    from hybridops.tasks.knowledge.documents import DocumentError

    plan = survey_landing(paths, prefix)
    result = LandingResult(skipped=list(plan.skipped))
    for file, doc_id in plan.files:
        try:  # non-blocking open + fstat: a file swapped for a FIFO since the survey is skipped, not waited on
            data = read_regular_file(file, follow_symlinks=True)
        except DocumentError as exc:
            result.skipped.append(SkippedFile(str(file), str(exc)))
            continue
        store.put(doc_id, data)
        result.landed.append(LandedFile(source=str(file), doc_id=doc_id, size=len(data)))
    return result


def land(store: ObjectStore, paths: list[Path], prefix: str = "") -> list[LandedFile]:
    """land_report's landed files; skipped inputs are logged as warnings."""
    result = land_report(store, paths, prefix)
    for skipped in result.skipped:
        log.warning("not landed: %s (%s)", skipped.source, skipped.reason)
    return result.landed


def remove(store: ObjectStore, doc_id: str) -> bool:
    """Delete one document from the landing zone; False if it was not there."""
    if not store.exists(doc_id):
        return False
    store.delete(doc_id)
    return True
