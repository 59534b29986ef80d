"""One lock per namespace and resource, held in Weaviate, whichever path runs the work.

Weaviate is what every run of a namespace shares (a CLI in any home, a served flow, a worker on another
machine), so the lock lives there. Creating an object whose id exists is NOT atomic in Weaviate (an
existence check, then a write: 1 in 20 rounds of 8 racing creates had several winners), but creating an
alias is: it goes through the schema's Raft log, and a second create of the same name fails (0 in 30
rounds; ~8 ms). So the alias `<prefix>_Lock_<Resource>` is the mutex, and a lease object with a fixed id in
the `<prefix>_Locks` collection says who holds it and until when. The holder renews its lease in a
background thread; a lease whose holder died expires after `lock_ttl_s` (an alias left without a lease
counts as expired once that long has passed) and is taken over through a one-time successor alias, so two
waiters never both remove the same stale lock.

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
ORPHAN_RECHECK_S = 1.0
ORPHAN = "orphan"  # the stale 'token' of an alias whose holder died before it wrote its lease


@dataclass(frozen=True)
class Lease:
    resource: str
    holder: str
    token: str
    expires_at: float


def lock_collection(settings: Settings) -> str:
    return f"{settings.collection_prefix}_Locks"


def lock_alias(settings: Settings, resource: str, successor_of: str = "") -> str:
    """The alias whose creation is the acquire (or, with `successor_of`, the right to remove a stale lock)."""
    name = f"{settings.collection_prefix}_Lock_{resource.capitalize()}"
    return f"{name}_Takeover_{successor_of}" if successor_of else name


def lock_uuid(settings: Settings, resource: str) -> str:
    return str(uuid.uuid5(LOCK_NAMESPACE, f"{settings.namespace}/{resource}/"))


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
        lease = _acquire(settings, client, locks, resource, describe_holder(operation), timeout, on_wait)
        stop = threading.Event()
        renewer = threading.Thread(target=_renew, args=(settings, locks, lease, stop), daemon=True,
                                   name=f"lock-renew-{resource}")
        renewer.start()
        try:
            yield lease
        finally:
            stop.set()
            renewer.join(timeout=5)
            _release(settings, client, locks, lease)


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


def _acquire(settings, client, locks, resource, holder, timeout, on_wait) -> Lease:
    deadline = time.monotonic() + timeout
    told = False
    key = lock_uuid(settings, resource)
    orphan_since: float | None = None
    while True:
        if _claim(client, lock_alias(settings, resource), locks.name):
            lease = Lease(resource, holder, uuid.uuid4().hex, time.time() + settings.lock_ttl_s)
            locks.data.delete_by_id(key)  # a dead holder's leftover lease, if any; the alias is ours now
            _write(locks, key, lease)
            return lease
        current = _read(locks, key)
        orphan_since = None if current is not None else orphan_since or time.monotonic()
        if current is not None and current.expires_at < time.time():
            _take_over(settings, client, locks, resource, current.token)
            continue
        if current is None and time.monotonic() - orphan_since > settings.lock_ttl_s:
            _take_over(settings, client, locks, resource, ORPHAN)
            orphan_since = None
            continue
        if current is not None and not told and on_wait:
            on_wait(current.holder)
            told = True
        if time.monotonic() >= deadline:
            who = current.holder if current else "another run"
            raise ConflictError(f"the {settings.namespace} {resource} lock is held by {who}; gave up after "
                                f"{timeout:.0f} s (settings.lock_timeout_s)")
        time.sleep(POLL_S)


def _take_over(settings, client, locks, resource, stale_token: str) -> None:
    """Only the waiter that creates the stale lock's successor alias removes it; the others keep waiting."""
    successor = lock_alias(settings, resource, successor_of=stale_token)
    if not _claim(client, successor, locks.name):
        return
    key = lock_uuid(settings, resource)
    try:
        if not _is_held_by(locks, key, stale_token):
            return  # taken over already (we won a successor another waiter had finished with)
        if stale_token == ORPHAN:  # a new holder writes its lease just after its alias: look twice to be sure
            time.sleep(ORPHAN_RECHECK_S)
            if not _is_held_by(locks, key, ORPHAN):
                return
        locks.data.delete_by_id(key)
        client.alias.delete(alias_name=lock_alias(settings, resource))
    finally:
        client.alias.delete(alias_name=successor)


def _is_held_by(locks, key: str, token: str) -> bool:
    lease = _read(locks, key)
    return (lease.token if lease is not None else ORPHAN) == token


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


def _release(settings, client, locks, lease: Lease) -> None:
    """The lease first, then the alias: the other order could delete the lease of the next holder."""
    key = lock_uuid(settings, lease.resource)
    current = _read(locks, key)
    if current is not None and current.token == lease.token:
        locks.data.delete_by_id(key)
        client.alias.delete(alias_name=lock_alias(settings, lease.resource))


def _claim(client, alias: str, target: str) -> bool:
    """Create `alias` (atomic: Raft-ordered schema change); False when it exists."""
    try:
        client.alias.create(alias_name=alias, target_collection=target)
        return True
    except UnexpectedStatusCodeError as exc:
        if exc.status_code == 422 and "already exists" in str(exc):
            return False
        raise


def _write(locks, key: str, lease: Lease) -> None:
    locks.data.insert(uuid=key, properties={"resource": lease.resource, "holder": lease.holder,
                                            "token": lease.token, "expires_at": lease.expires_at})


def _read(locks, key: str) -> Lease | None:
    obj = locks.query.fetch_object_by_id(key)
    if obj is None:
        return None
    p = obj.properties
    return Lease(p.get("resource") or "", p.get("holder") or "?", p.get("token") or "", float(p.get("expires_at") or 0))
