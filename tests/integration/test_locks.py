"""The namespace lock on the real Weaviate: exclusive, waits and says for whom, times out, survives a dead holder."""

from __future__ import annotations

import threading
import time

import pytest

from hybridops.tasks.core.errors import ConflictError
from hybridops.tasks.core.locks import Lease, _create, _ensure_collection, current_holder, lock_uuid, namespace_lock
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
        assert _create(locks, lock_uuid(settings, "index"), Lease("index", "refresh (pid 1 gone)", "dead", time.time() - 1))
    started = time.monotonic()
    with namespace_lock(settings, "index", "refresh", timeout=10) as lease:
        assert lease.token != "dead"
    assert time.monotonic() - started < 10
