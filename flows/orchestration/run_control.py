"""Starting, finding and waiting for deployment runs through the Prefect API (CLI `run`, demo, tests, bench)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import BaseModel

from hybridops.tasks.core.settings import Settings


class RunInfo(BaseModel):
    """A flow run as a person (or a JSON consumer) wants to see it."""

    id: UUID
    name: str
    deployment: str | None = None
    state: str
    state_message: str | None = None
    created_by: str | None = None
    """'AUTOMATION' for runs started by an event trigger, 'SCHEDULE'/None otherwise."""
    automation: str | None = None
    created: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    parameters: dict[str, Any] = {}
    url: str

    @property
    def final(self) -> bool:
        return self.state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _ui(settings: Settings) -> str:
    return settings.prefect_api_url.removesuffix("/").removesuffix("/api")


def run_info(settings: Settings, run, deployment: str | None = None) -> RunInfo:
    created_by = getattr(run, "created_by", None)
    return RunInfo(
        id=run.id, name=run.name, deployment=deployment,
        state=run.state.type.value if run.state else "UNKNOWN",
        state_message=run.state.message if run.state else None,
        created_by=created_by.type if created_by else None,
        automation=created_by.display_value if created_by else None,
        created=run.created, start_time=run.start_time, end_time=run.end_time,
        parameters=run.parameters or {}, url=f"{_ui(settings)}/runs/flow-run/{run.id}",
    )


@contextmanager
def prefect_client(settings: Settings) -> Iterator:
    """A sync Prefect client for the server these settings name (whatever PREFECT_API_URL says)."""
    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):
        with get_client(sync_client=True) as client:
            yield client


def start_run(settings: Settings, full_name: str, parameters: dict[str, Any] | None = None) -> RunInfo:
    """Create a run of `flow/deployment` now (the served runner picks it up within its poll interval)."""
    with prefect_client(settings) as client:
        try:
            deployment = client.read_deployment_by_name(full_name)
        except ObjectNotFound as exc:
            raise RuntimeError(f"deployment {full_name} is not registered") from exc
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters or {},
                                                     tags=["hybridops", "manual"])
        return run_info(settings, run, full_name)


def read_run(settings: Settings, run_id: UUID) -> RunInfo:
    with prefect_client(settings) as client:
        return run_info(settings, client.read_flow_run(run_id))


def wait_for_run(settings: Settings, run_id: UUID, timeout: float = 3600, poll: float = 0.5,
                 on_poll: Callable[[RunInfo], None] | None = None) -> RunInfo:
    """Poll until the run reaches a final state (`on_poll` sees every state read); TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        info = read_run(settings, run_id)
        if on_poll is not None:
            on_poll(info)
        if info.final:
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {info.name} still {info.state} after {timeout:.0f} s")
        time.sleep(poll)


def deployment_runs(settings: Settings, full_name: str, since: datetime | None = None) -> list[RunInfo]:
    """Runs of one deployment, oldest first (optionally only those created after `since`)."""
    with prefect_client(settings) as client:
        deployment = client.read_deployment_by_name(full_name)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200,
        )
    infos = [run_info(settings, run, full_name) for run in runs]
    return [i for i in infos if since is None or (i.created and i.created >= since)]


def wait_for_new_run(
    settings: Settings, full_name: str, since: datetime, timeout: float = 600, final: bool = True,
    created_by: str | None = None, poll: float = 0.5,
) -> RunInfo:
    """The first run of a deployment created after `since` (optionally by an automation), once final."""
    deadline = time.monotonic() + timeout
    while True:
        runs = [r for r in deployment_runs(settings, full_name, since)
                if created_by is None or r.created_by == created_by]
        if runs and (not final or runs[0].final):
            return runs[0]
        if time.monotonic() > deadline:
            state = f"{runs[0].name} is {runs[0].state}" if runs else "no run was created"
            raise TimeoutError(f"{full_name}: {state} after {timeout:.0f} s")
        time.sleep(poll)


def read_events(settings: Settings, event: str, resource_id: str, since: datetime) -> list:
    """Events of one name and resource since a time, oldest first (from the server's event store)."""
    flt = EventFilter(
        occurred=EventOccurredFilter(since=since),
        event=EventNameFilter(name=[event]),
        resource=EventResourceFilter(id=[resource_id]),
    )
    events = []
    with prefect_client(settings) as client:
        page = client.read_events(filter=flt, limit=50)  # the server's page size limit
        events.extend(page.events)
        while page.next_page and len(events) < 5000:
            page = client.read_events_page(page.next_page)
            events.extend(page.events)
    return sorted(events, key=lambda e: e.occurred)
