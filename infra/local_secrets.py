"""Secrets `hybridops up` generates for the services it runs: one file each under $HOME/run, readable by this
user only (0600), passed to processes through their environment, never argv or logs."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_secret_file(path: Path) -> None:
    """Write a fresh random secret to `path` unless it exists (a concurrent `up` that won the race keeps its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")


def read_or_create_secret(path: Path) -> str:
    """The secret stored in `path`, generated the first time."""
    create_secret_file(path)
    return path.read_text().strip()
