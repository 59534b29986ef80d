"""One lock per namespace and resource, held in Weaviate, whichever path runs the work.

Weaviate is what every run of a namespace shares (a CLI in any home, a served flow, a worker on another
machine), so the lock lives there: a lease object with a fixed id per (namespace, resource) in the
namespace's `<prefix>_Locks` collection. Creating an object whose id exists fails atomically, which makes
the create the acquire. The holder renews its lease in a background thread; a lease whose holder died
expires after `lock_ttl_s` and is taken over through a one-time successor object, so two waiters never
both take over the same stale lease.

Resources: `index` (refresh, rebuild), `adapters` (retrain, promote, rollback) and `watcher` (one landing
watcher per namespace). Index and adapters are separate so a minutes-long retrain never holds back a
landing's refresh.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from weaviate.classes.config import Configure, DataType, Property
from weaviate.exceptions import UnexpectedStatusCodeError

from hybridops.tasks.core.errors import ConflictError
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session

Resource = Literal["index", "adapters", "watcher"]
LOCK_NAMESPACE = uuid.UUID("0b7f9a52-4f3e-4d55-8c1e-2a6f5d1c9e41")
POLL_S = 0.5


@dataclass(frozen=True)
class Lease:
    resource: str
    holder: str
    token: str
    expires_at: float


def lock_collection(settings: Settings) -> str:
    return f"{settings.collection_prefix}_Locks"


def lock_uuid(settings: Settings, resource: str, successor_of: str = "") -> str:
    return str(uuid.uuid5(LOCK_NAMESPACE, f"{settings.namespace}/{resource}/{successor_of}"))


def describe_holder(operation: str) -> str:
    return f"{operation} (pid {os.getpid()} on {socket.gethostname()})"


@contextmanager
def namespace_lock(
    settings: Settings, resource: Resource, operation: str, *, timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Lease]:
    """Hold the namespace's `resource` lock for `operation`; wait up to `timeout` s (settings.lock_timeout_s).

    `on_wait(holder)` is called once when someone else holds it. Raises ConflictError on timeout."""
    timeout = settings.lock_timeout_s if timeout is None else timeout
    with weaviate_session(settings) as client:
        locks = _ensure_collection(client, settings)
        lease = _acquire(settings, locks, resource, describe_holder(operation), timeout, on_wait)
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, args=(settings, locks, lease, stop), daemon=True,
                                   name=f"lock-renew-{resource}")
        renewer.start()
        try:
            yield lease
        finally:
            stop.set()
            renewer.join(timeout=5)
            _release(settings, locks, lease)


def current_holder(settings: Settings, resource: Resource) -> Lease | None:
    """Who holds the lock now (None when free or expired)."""
    with weaviate_session(settings) as client:
        if not client.collections.exists(lock_collection(settings)):
            return None
        lease = _read(client.collections.use(lock_collection(settings)), lock_uuid(settings, resource))
        return lease if lease is not None and lease.expires_at > time.time() else None


def _ensure_collection(client, settings: Settings):
    name = lock_collection(settings)
    if not client.collections.exists(name):
        try:
            client.collections.create(
                name,
                description="hybridops namespace locks (lease objects; see tasks/core/locks.py)",
                vector_config=Configure.Vectors.self_provided(),
                properties=[Property(name=n, data_type=t) for n, t in
                            (("resource", DataType.TEXT), ("holder", DataType.TEXT), ("token", DataType.TEXT),
                             ("expires_at", DataType.NUMBER))],
            )
        except UnexpectedStatusCodeError:
            if not client.collections.exists(name):  # not a concurrent create: a real failure
                raise
    return client.collections.use(name)


def _acquire(settings, locks, resource, holder, timeout, on_wait) -> Lease:
    deadline = time.monotonic() + timeout
    told = False
    key = lock_uuid(settings, resource)
    while True:
        lease = Lease(resource, holder, uuid.uuid4().hex, time.time() + settings.lock_ttl_s)
        if _create(locks, key, lease):
            return lease
        current = _read(locks, key)
        if current is not None and current.expires_at < time.time():
            _take_over(settings, locks, resource, current)
            continue
        if current is not None and not told and on_wait:
            on_wait(current.holder)
            told = True
        if time.monotonic() >= deadline:
            who = current.holder if current else "another run"
            raise ConflictError(f"the {settings.namespace} {resource} lock is held by {who}; gave up after "
                                f"{timeout:.0f} s (settings.lock_timeout_s)")
        time.sleep(POLL_S)


def _take_over(settings, locks, resource, stale: Lease) -> None:
    """Only the waiter that creates the stale lease's successor object removes it; the others keep waiting."""
    successor = lock_uuid(settings, resource, successor_of=stale.token)
    marker = Lease(resource, "takeover", stale.token, time.time() + settings.lock_ttl_s)
    if _create(locks, successor, marker):
        current = _read(locks, lock_uuid(settings, resource))
        if current is not None and current.token == stale.token:
            locks.data.delete_by_id(lock_uuid(settings, resource))
        locks.data.delete_by_id(successor)


def _renew(settings, locks, lease: Lease, stop: threading.Event) -> None:
    key = lock_uuid(settings, lease.resource)
    while not stop.wait(settings.lock_ttl_s / 3):
        try:
            current = _read(locks, key)
            if current is None or current.token != lease.token:
                return  # lost it (expired and taken over): nothing to renew
            locks.data.update(uuid=key, properties={"expires_at": time.time() + settings.lock_ttl_s})
        except Exception:  # noqa: BLE001 - a missed renewal only shortens the lease; the next try may work
            continue


def _release(settings, locks, lease: Lease) -> None:
    key = lock_uuid(settings, lease.resource)
    current = _read(locks, key)
    if current is not None and current.token == lease.token:
        locks.data.delete_by_id(key)


def _create(locks, key: str, lease: Lease) -> bool:
    try:
        locks.data.insert(uuid=key, properties={"resource": lease.resource, "holder": lease.holder,
                                                "token": lease.token, "expires_at": lease.expires_at})
        return True
    except UnexpectedStatusCodeError as exc:
        if exc.status_code == 422 and "already exists" in str(exc):
            return False
        raise


def _read(locks, key: str) -> Lease | None:
    obj = locks.query.fetch_object_by_id(key)
    if obj is None:
        return None
    p = obj.properties
    return Lease(p.get("resource") or "", p.get("holder") or "?", p.get("token") or "", float(p.get("expires_at") or 0))
