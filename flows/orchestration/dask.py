"""Scale-out of the refresh: its document batches as Prefect tasks on Dask (a local cluster or a scheduler).

Each Prefect task on Dask costs ~0.3 s of overhead, so only coarse batches (settings.refresh_batch_docs
documents each) go there, never a task per chunk. Every worker process loads the embedding model once and
keeps it; torch gets one thread per worker so two workers on two cores do not fight over them.
"""

from __future__ import annotations

from typing import Any

from hybridops.tasks.core.settings import Settings


def dask_cluster_kwargs(settings: Settings) -> dict[str, Any]:
    """A LocalCluster of `dask_workers` processes, one thread each, no dashboard (offline, no port to open)."""
    return {
        "n_workers": settings.dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    }


def refresh_task_runner(settings: Settings):
    """DaskTaskRunner when a scheduler address or a worker count is set, else None (the flow's own runner)."""
    if not settings.dask_address and settings.dask_workers <= 0:
        return None
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=dask_cluster_kwargs(settings))
