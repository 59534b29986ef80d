"""Every hybridops deployment, defined once: `hybridops serve` registers these, prefect.yaml mirrors them.

| deployment          | started by                                                   |
| ------------------- | ------------------------------------------------------------ |
| watch-landing       | interval schedule (each run watches for that long) + `serve`|
| refresh-index       | `hybridops.landing.changed` event (targeted) + interval (full reconcile) |
| evaluate-behaviour  | daily cron                                                   |
| retrain-adapter     | `hybridops.behaviour.drift` event + weekly cron (skips when nothing to do) |
| rebuild-index       | manual                                                       |
| rollback-adapter    | manual                                                       |

Deployment names carry the namespace (`<namespace>-refresh-index`), so several hybridops instances can
share one Prefect server; events match on this namespace's resource ids (`hybridops.<namespace>.landing`).

Bursts of landings: every notifier records the changed keys in the landing change feed before it emits
the event (tasks/knowledge/change_feed.py), and the trigger fires on every event (no throttle window, so
nothing is dropped) with `params.targeted=true`: a targeted run plans only the keys pending in the feed.
Overlapping runs queue on the namespace's index lock; the first to get it applies everything pending, the
others find nothing and end at once. A lost event or a crashed run leaves its entries pending for the next
run, and the interval schedule is the full reconcile, which also repairs whatever no notifier saw.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prefect.deployments import run_deployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Interval

from hybridops.flows.orchestration.events import BEHAVIOUR_DRIFT, LANDING_CHANGED
from hybridops.tasks.core.settings import Settings

KNOWLEDGE, BEHAVIOUR = "knowledge", "behaviour"


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: which flow, how it starts, and what the UI shows about it."""

    key: str
    flow_ref: str
    description: str
    loop: str
    started_by: str
    interval_minutes: str | None = None
    cron: str | None = None
    event: str | None = None
    resource: str | None = None
    trigger_parameters: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def name(self, settings: Settings) -> str:
        return f"{settings.namespace}-{self.key}"

    def full_name(self, settings: Settings) -> str:
        """`flow/deployment`, as `prefect deployment run` and `run_deployment` take it."""
        return f"{self.flow().name}/{self.name(settings)}"

    def flow(self):
        """The flow object (imported on demand so listing deployments stays cheap)."""
        module, attr = self.flow_ref.split(":")
        return getattr(importlib.import_module(module), attr)

    def schedules(self, settings: Settings) -> list:
        schedules = []
        if self.interval_minutes:
            minutes = float(getattr(settings, self.interval_minutes))
            schedules.append(Interval(timedelta(minutes=minutes), slug=f"{self.key}-interval"))
        if self.cron:
            schedules.append(Cron(getattr(settings, self.cron), timezone=settings.schedule_timezone,
                                  slug=f"{self.key}-cron"))
        return schedules

    def triggers(self, settings: Settings) -> list:
        if not self.event:
            return []
        resource_id = f"hybridops.{settings.namespace}.{self.resource}"
        return [DeploymentEventTrigger(
            name=f"{self.name(settings)}: on {self.event}",
            description=f"Start {self.name(settings)} on every {self.event} event of {resource_id}.",
            expect={self.event},
            match={"prefect.resource.id": resource_id},
            threshold=1,
            within=timedelta(0),  # fire on every event: a throttle window would drop the rest of a burst
            parameters=self.trigger_parameters or None,
        )]

    def tags(self, settings: Settings) -> list[str]:
        return ["hybridops", f"namespace:{settings.namespace}", self.loop, self.started_by]

    def options(self, settings: Settings) -> dict[str, Any]:
        """Keyword arguments for `Flow.to_deployment` / `Runner.add_flow`."""
        return {
            "name": self.name(settings),
            "description": self.description,
            "tags": self.tags(settings),
            "schedules": self.schedules(settings),
            "triggers": self.triggers(settings),
            "parameters": self.parameters or None,
            "version": _version(),
        }


def deployment_specs(settings: Settings) -> list[DeploymentSpec]:
    """The full set, in the order the UI lists them."""
    return [
        DeploymentSpec(
            key="watch-landing", flow_ref="hybridops.flows.watch_landing:watch_landing", loop=KNOWLEDGE, started_by="schedule",
            description="Watches the landing zone (filesystem notifications for a folder, plus a fallback listing "
            "every watch_fallback_seconds; an S3 zone gets only that listing, its notifications reach the webhook) "
            "and emits one hybridops.landing.changed event per change set, its keys recorded in the change feed "
            "first.",
            interval_minutes="watch_run_minutes",
        ),
        DeploymentSpec(
            key="refresh-index", flow_ref="hybridops.flows.refresh_index:refresh_index", loop=KNOWLEDGE, started_by="event",
            description="Reconciles the Weaviate index with the landing zone: validates documents against the "
            "GX contract (bad ones quarantined), re-embeds only changed chunks, deletes vanished ones. Started by "
            "hybridops.landing.changed as a targeted run (only the keys in the landing change feed); the interval "
            "schedule runs the full reconcile.",
            interval_minutes="refresh_interval_minutes", event=LANDING_CHANGED, resource="landing",
            trigger_parameters={"params": {"targeted": True}},
        ),
        DeploymentSpec(
            key="evaluate-behaviour", flow_ref="hybridops.flows.evaluate_behaviour:evaluate_behaviour", loop=BEHAVIOUR,
            started_by="schedule",
            description="Runs the behaviour suite on the champion adapter, separates knowledge gaps from "
            "behaviour gaps, tests drift against the champion's baseline and emits hybridops.behaviour.drift.",
            cron="eval_cron",
        ),
        DeploymentSpec(
            key="retrain-adapter", flow_ref="hybridops.flows.retrain_adapter:retrain_adapter", loop=BEHAVIOUR,
            started_by="event",
            description="Trains a LoRA challenger on the training area + approved interactions, compares it with "
            "the champion on the same held-out suite and promotes it only if better. Started by "
            "hybridops.behaviour.drift; the weekly cron skips when there is no drift and no new data.",
            cron="retrain_cron", event=BEHAVIOUR_DRIFT, resource="behaviour",
            trigger_parameters={"params": {"drifted_checks": "{{ event.payload.checks }}"}},
        ),
        DeploymentSpec(
            key="rebuild-index", flow_ref="hybridops.flows.rebuild_index:rebuild_index", loop=KNOWLEDGE, started_by="manual",
            description="Full rebuild into a new index generation; the alias flips only if the golden-set "
            "retrieval eval passes (the previous generation is kept for rollback).",
        ),
        DeploymentSpec(
            key="rollback-adapter", flow_ref="hybridops.flows.rollback_adapter:rollback_adapter", loop=BEHAVIOUR,
            started_by="manual",
            description="Moves the champion adapter pointer back one step (the restored adapter is verified).",
        ),
    ]


def spec_for(settings: Settings, key: str) -> DeploymentSpec:
    """A deployment by its short name (`refresh-index`) or its full one (`<namespace>-refresh-index`)."""
    for spec in deployment_specs(settings):
        if key in {spec.key, spec.name(settings), spec.full_name(settings)}:
            return spec
    known = ", ".join(spec.key for spec in deployment_specs(settings))
    raise KeyError(f"unknown deployment {key!r}; known: {known}")


def start_watcher(settings: Settings) -> None:
    """Queue a watch-landing run now, so changes are noticed from the first second rather than the first tick."""
    run_deployment(spec_for(settings, "watch-landing").full_name(settings), timeout=0,
                   tags=["hybridops", f"namespace:{settings.namespace}", "serve-start"])


def _version() -> str:
    try:
        return f"hybridops-{version('hybridops')}"
    except PackageNotFoundError:
        return "hybridops-dev"
