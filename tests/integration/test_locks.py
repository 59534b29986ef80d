"""The namespace lock on the real Weaviate: exclusive, waits and says for whom, times out, survives a dead holder."""

from __future__ import annotations

import threading
import time

import pytest

from hybridops.tasks.core.errors import ConflictError
from hybridops.tasks.core.locks import (Lease, _claim, _ensure_collection, _write, current_holder, lock_alias, lock_uuid,
                                        namespace_lock)
from hybridops.tasks.core.weaviate_connection import weaviate_session


def test_second_holder_waits_is_told_who_holds_it_and_gets_it_after_release(settings):
    order: list[str] = []
    waited_for: list[str] = []
    with namespace_lock(settings, "index", "refresh") as lease:
        assert current_holder(settings, "index").token == lease.token

        def second():
            with namespace_lock(settings, "index", "rebuild", timeout=30, on_wait=waited_for.append):
                order.append("second")

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.5)
        order.append("first done")
    thread.join(timeout=30)
    assert order == ["first done", "second"]
    assert waited_for and waited_for[0].startswith("refresh (pid ")
    assert current_holder(settings, "index") is None


def test_resources_are_independent_and_a_busy_lock_times_out_with_a_conflict(settings):
    with namespace_lock(settings, "adapters", "retrain"):
        with namespace_lock(settings, "index", "refresh", timeout=5):  # a retrain never blocks a refresh
            pass
        with pytest.raises(ConflictError, match="held by retrain"):
            with namespace_lock(settings, "adapters", "promote", timeout=1):
                pass


def test_a_dead_holders_expired_lease_is_taken_over(settings):
    with weaviate_session(settings) as client:  # a holder that died without releasing
        locks = _ensure_collection(client, settings)
        assert _claim(client, lock_alias(settings, "index"), locks.name)
        _write(locks, lock_uuid(settings, "index"), Lease("index", "refresh (pid 1 gone)", "dead", time.time() - 1))
    started = time.monotonic()
    with namespace_lock(settings, "index", "refresh", timeout=10) as lease:
        assert lease.token != "dead"
    assert time.monotonic() - started < 10
    assert current_holder(settings, "index") is None


def test_a_holder_that_died_between_its_claim_and_its_lease_is_taken_over_after_the_ttl(settings):
    quick = settings.model_copy(update={"lock_ttl_s": 3.0})
    with weaviate_session(quick) as client:  # the alias exists, the lease was never written
        assert _claim(client, lock_alias(quick, "index"), _ensure_collection(client, quick).name)
    started = time.monotonic()
    with namespace_lock(quick, "index", "refresh", timeout=30) as lease:
        assert current_holder(quick, "index").token == lease.token
    assert 3.0 <= time.monotonic() - started < 30


def test_many_racing_waiters_hold_the_lock_one_at_a_time(settings):
    """Weaviate's object create is check-then-write (racing creates of one id can all succeed); the lock
    must not be: eight threads released at once, each holding the lock briefly, never overlap."""
    inside, overlaps, entered = [0], [], []
    guard = threading.Lock()
    start = threading.Barrier(8)

    def contender(i: int) -> None:
        start.wait()
        for _ in range(3):
            with namespace_lock(settings, "index", f"contender {i}", timeout=120):
                with guard:
                    inside[0] += 1
                    overlaps.append(inside[0] > 1)
                    entered.append(i)
                time.sleep(0.05)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(entered) == 24 and not any(overlaps)
    assert current_holder(settings, "index") is None
