"""Flow runs in the production topology: a process work pool, `prefect worker` processes polling it, and every
deployment of flows/orchestration/deployments.py registered against the pool (instead of `hybridops serve`).

The deployments are the ones `serve` registers (same names, schedules and event triggers), with module-path
entrypoints (`hybridops.flows.refresh_index.refresh_index`), so a worker imports them from the installed package
whatever its working folder. A worker starts each run as a fresh process with the worker's environment: the
settings (HYBRIDOPS_*, secrets included, resolved only at start) and PREFECT_API_URL. Not carried over from
`serve`: warm start (each run pays its ~8 s of imports). The landing webhook and the answering service `serve`
hosts run in the topology's `gateway` process instead (flows/orchestration/gateway.py).
"""

from __future__ import annotations

import sys
from datetime import timedelta

from hybridops.infra.services import Service
from hybridops.tasks.core.settings import PROJECT_ROOT, Settings


HEARTBEAT_SECONDS = 30
"""How often a flow run started by a worker reports that it is alive (Prefect's minimum; default 180)."""
CRASHED_AFTER = 2 * HEARTBEAT_SECONDS
"""A run of this namespace silent for this long (its process or its worker died) is marked Crashed."""


def worker_name(settings: Settings, index: int) -> str:
    return f"{settings.namespace}-worker-{index}"


def worker_service(settings: Settings, index: int) -> Service:
    """Worker `index` (1-based): polls the pool every runner_poll_seconds (at least 1 s), health on 127.0.0.1."""
    port = settings.worker_health_port + index - 1
    poll = max(1.0, settings.runner_poll_seconds)
    return Service(
        name=f"worker-{index}",
        url=f"http://127.0.0.1:{port}",
        health_path="/health",
        ports={"health": port},
        command=lambda: [sys.executable, "-m", "prefect", "worker", "start", "--pool", settings.work_pool_name,
                         "--type", "process", "--name", worker_name(settings, index), "--with-healthcheck"],
        env={
            "PREFECT_API_URL": settings.prefect_api_url,
            "PREFECT_WORKER_QUERY_SECONDS": str(poll),
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "10",
            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
            "PREFECT_WORKER_WEBSERVER_PORT": str(port),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),  # inherited by the flow-run processes
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        },
        version=lambda: f"prefect worker ({settings.work_pool_name})",
        marker="worker",
        secret_env=settings.as_env,
        cwd=PROJECT_ROOT,  # relative settings paths (examples/...) resolve as they do for `serve`
    )


def worker_services(settings: Settings) -> list[Service]:
    """The `workers` workers the setting names: what `up` starts."""
    return [worker_service(settings, index) for index in range(1, settings.workers + 1)]


def known_workers(settings: Settings) -> list[Service]:
    """Those plus every worker a PID file says `up` started with a larger setting (`HYBRIDOPS_WORKERS=4 hybridops
    up` to scale out): `status` shows them and `down` stops them whatever the setting says now."""
    recorded = [int(path.stem.removeprefix("worker-")) for path in settings.run_dir.glob("worker-*.pid")
                if path.stem.removeprefix("worker-").isdigit()]
    return [worker_service(settings, index) for index in range(1, max([settings.workers, *recorded]) + 1)]


def register_deployments(settings: Settings) -> dict:
    """The process work pool (created when missing), the crash-detection automation, and every deployment
    applied against the pool; then a watch-landing run is queued, as `serve` does, so landings are noticed from
    the first second."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridops.flows.orchestration.deployments import deployment_specs, start_watcher

    pool = settings.work_pool_name
    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):
        with get_client(sync_client=True) as client:
            try:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
                pool_action = "created"
            except ObjectAlreadyExists:
                pool_action = "kept"
        _ensure_crash_detection(settings)
        names = []
        for spec in deployment_specs(settings):
            deployment = spec.flow().to_deployment(**spec.options(settings), work_pool_name=pool,
                                                   entrypoint_type=EntrypointType.MODULE_PATH)
            deployment.apply()
            names.append(spec.name(settings))
        start_watcher(settings)
    return {"work_pool": pool, "action": pool_action, "deployments": names}


def _ensure_crash_detection(settings: Settings) -> None:
    """The automation Prefect's docs give for runs whose process died with no one left to report it (a killed
    worker, a lost machine): heartbeats stopped for CRASHED_AFTER -> Crashed. One per namespace, replaced on `up`."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    name = f"{settings.namespace}: crash flow runs that stopped sending heartbeats"
    with get_client(sync_client=True) as client:
        for stale in client.read_automations_by_name(name):
            client.delete_automation(stale.id)
    finished = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}
    Automation(
        name=name,
        description=f"A flow run of namespace {settings.namespace} with no heartbeat for {CRASHED_AFTER} s is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},  # armed before the first beat
            expect={"prefect.flow-run.heartbeat", *finished},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.tag.namespace:{settings.namespace}"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=CRASHED_AFTER),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {CRASHED_AFTER} s: its "
                                    "process or its worker died")],
    ).create()
