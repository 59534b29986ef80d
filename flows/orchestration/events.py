"""Every hybridops event in one place: names, resource ids and the emitters the flows and the CLI share.

Automations match on `prefect.resource.id` = `hybridops.<namespace>.<resource>`. Inside a flow run Prefect
already knows its server; `from_the_cli` points an in-process command at the configured server, emits, and
waits until the events are sent (a CLI exits right after), so automations see manual runs too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hybridops.tasks.core.settings import Settings

LANDING_CHANGED = "hybridops.landing.changed"
INDEX_REFRESHED = "hybridops.index.refreshed"
MASS_DELETE_BLOCKED = "hybridops.index.mass_delete_blocked"
KNOWLEDGE_GAP = "hybridops.knowledge.gap"
BEHAVIOUR_DRIFT = "hybridops.behaviour.drift"
ADAPTER_PROMOTED, ADAPTER_REJECTED = "hybridops.adapter.promoted", "hybridops.adapter.rejected"
ADAPTER_ROLLED_BACK = "hybridops.adapter.rolled_back"


def resource_id(settings: Settings, resource: str) -> str:
    """`hybridops.<namespace>.<resource>`: what triggers match (landing, index, knowledge, behaviour, adapter)."""
    return f"hybridops.{settings.namespace}.{resource}"


def resource(settings: Settings, name: str, **labels: str) -> dict[str, str]:
    return {"prefect.resource.id": resource_id(settings, name), "hybridops.namespace": settings.namespace} | labels


def _emit(event: str, resource_: dict[str, str], payload: dict[str, Any]) -> str:
    from prefect.events import emit_event

    emit_event(event=event, resource=resource_, payload=payload)
    return event


def landing_changed(settings: Settings, payload: dict[str, Any]) -> str:
    """Documents landed, changed or left the landing zone (refresh-index is triggered by it)."""
    return _emit(LANDING_CHANGED, resource(settings, "landing", **{"prefect.resource.name":
                                                                   f"{settings.namespace} landing zone"}), payload)


def index_refreshed(settings: Settings, report: Any) -> str:
    """A refresh (or rebuild) finished: counts, collection and whether the alias flipped."""
    return _emit(INDEX_REFRESHED, resource(settings, "index"),
                 report.model_dump(mode="json", include={"documents", "chunks", "collection", "duration_s", "mode",
                                                         "alias_flipped"}))


def mass_delete_blocked(settings: Settings, blocked: Any) -> str:
    """A refresh or rebuild stopped before writing: it would have removed too much of the live index.
    Payload: counts, examples and how to confirm (blocked: a MassDeletionBlocked)."""
    return _emit(MASS_DELETE_BLOCKED, resource(settings, "index"), dict(blocked.details))


def behaviour_evaluated(settings: Settings, entry: Any, gaps: list[Any]) -> list[str]:
    """After a behaviour eval: hybridops.behaviour.drift on drift (retrain-adapter is triggered by it), and one
    hybridops.knowledge.gap per knowledge-side case (missing_document, retrieval_miss) with its route, the
    affected documents (and where each stands) and the action that fixes it."""
    sent = []
    if entry.drift.drift:
        sent.append(_emit(BEHAVIOUR_DRIFT, resource(settings, "behaviour"),
                          entry.drift.event_payload() | {"run_id": entry.run_id}))
    questions = {case.case_id: case.question for case in entry.cases}
    for gap in (g for g in gaps if g.knowledge_side):
        sent.append(_emit(KNOWLEDGE_GAP, resource(settings, "knowledge", **{"hybridops.route": gap.kind}),
                          {"case_id": gap.case_id, "question": questions.get(gap.case_id), "route": gap.kind,
                           "missing_gold": gap.missing_gold, "action": gap.action, "run_id": entry.run_id,
                           "documents": [d.model_dump(mode="json") for d in gap.documents]}))
    return sent


def adapter_decided(settings: Settings, outcome: Any) -> str:
    """A challenger was promoted or rejected, with the evidence."""
    return _emit(
        ADAPTER_PROMOTED if outcome.promoted else ADAPTER_REJECTED,
        resource(settings, "adapter", **{"hybridops.adapter.version": outcome.version or ""}),
        {"version": outcome.version, "reason": outcome.reason, "previous": outcome.champion_version,
         "challenger": outcome.challenger, "champion": outcome.champion, "drifted": outcome.drifted},
    )


def adapter_rolled_back(settings: Settings, version: str | None, reason: str) -> str:
    return _emit(ADAPTER_ROLLED_BACK, resource(settings, "adapter"), {"version": version, "reason": reason})


def from_the_cli(settings: Settings, emit: Callable[[], Any]) -> Any:
    """Emit to the configured Prefect server when it answers: what `emit` returned, or None (nothing sent).

    Prefect keeps one events worker per process, bound to the API URL it first saw; it is drained (stopped)
    before and after, so these events go to `settings`' server even when this process emitted to another."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridops.infra.services import healthy, prefect_service

    if not healthy(prefect_service(settings), settings):
        return None
    EventsWorker.drain_all(timeout=15)
    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):
        sent = emit()
        EventsWorker.drain_all(timeout=15)
    return sent
