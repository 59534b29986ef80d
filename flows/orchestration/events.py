"""hybridops events that both a flow and its in-process CLI twin emit, so automations see either one.

Inside a flow run Prefect already knows its server; `from_the_cli` points an in-process command at the
configured server, emits, and waits until the events are sent (a CLI exits right after).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hybridops.tasks.core.settings import Settings

INDEX_REFRESHED = "hybridops.index.refreshed"
ADAPTER_PROMOTED, ADAPTER_REJECTED = "hybridops.adapter.promoted", "hybridops.adapter.rejected"


def index_refreshed(settings: Settings, report: Any) -> str:
    """A refresh (or rebuild) finished: counts, collection and whether the alias flipped. Returns the event name."""
    from prefect.events import emit_event

    emit_event(event=INDEX_REFRESHED, resource={"prefect.resource.id": f"hybridops.{settings.namespace}.index"},
               payload=report.model_dump(mode="json", include={"documents", "chunks", "collection", "duration_s",
                                                                "mode", "alias_flipped"}))
    return INDEX_REFRESHED


def adapter_decided(settings: Settings, outcome: Any) -> str:
    """A challenger was promoted or rejected, with the evidence. Returns the event name."""
    from prefect.events import emit_event

    event = ADAPTER_PROMOTED if outcome.promoted else ADAPTER_REJECTED
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"hybridops.{settings.namespace}.adapter",
                  "hybridops.adapter.version": outcome.version or ""},
        payload={"version": outcome.version, "reason": outcome.reason, "previous": outcome.champion_version,
                 "challenger": outcome.challenger, "champion": outcome.champion, "drifted": outcome.drifted},
    )
    return event


def from_the_cli(settings: Settings, emit: Callable[[], str]) -> str | None:
    """Emit to the configured Prefect server when it answers: the event sent, or None (nothing sent)."""
    from hybridops.infra.services import healthy, prefect_service

    if not healthy(prefect_service(settings), settings):
        return None
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):
        event = emit()
        EventsWorker.drain_all(timeout=15)
    return event
