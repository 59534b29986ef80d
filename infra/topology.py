"""Which processes `hybridops up` runs: the embedded topology (one process per service, infra/services.py) or
the production one, on one machine with the same binaries:

1. `postgres`: PostgreSQL from the OS packages, its own cluster, a role and database for Prefect, the migrations
   (infra/postgres.py);
2. `prefect` on that database; `weaviate-1..N`: one raft cluster (every collection replicated
   `weaviate_replicas` times, reads and writes at `weaviate_consistency`); `s3`: MinIO erasure-coded over
   `minio_drives` folders, its bucket versioned (infra/bucket_versioning.py);
3. the bucket, then a process work pool with every deployment registered against it (infra/work_pool.py);
4. `worker-1..W`: `prefect worker` processes running the flow runs; `gateway`: the landing webhook and the
   answering service `serve` hosts in the embedded topology (flows/orchestration/gateway.py).

`up` records the topology in $HOME/run/topology (settings.topology_record); `load_settings` reads it, so every
command of that home (CLI, flows) runs against the topology that is up, whatever HYBRIDOPS_TOPOLOGY says; `down` stops
the recorded one's services in the reverse order, and `up` refuses to start one topology over the other.
Clients reach the cluster through node 1 (`weaviate_url`); Weaviate routes each request to the replicas, so
nodes 2..N may fail, node 1 is the single entry point locally (a Kubernetes Service spreads it in production).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hybridops.flows.orchestration.answer_client import HEALTH_PATH as ANSWER_HEALTH
from hybridops.infra import postgres, work_pool
from hybridops.infra.bucket_versioning import enable_versioning
from hybridops.infra.minio_notifications import HEALTH_PATH as WEBHOOK_HEALTH
from hybridops.infra.services import (
    Service,
    ServiceError,
    await_healthy,
    free_port,
    free_port_block,
    http_get,
    is_running,
    launch,
    local_services,
    minio_service,
    port_in_use,
    prepare_storage,
    private_stack,
    private_stack_settings,
    start_services,
    weaviate_node,
    weaviate_headers,
    weaviate_ports,
)
from hybridops.infra.services import down as stop_services
from hybridops.infra.services import status as services_status
from hybridops.tasks.core.errors import ConflictError
from hybridops.tasks.core.settings import PROJECT_ROOT, WEAVIATE_PEER_PORTS, Settings

EMBEDDED, PRODUCTION = "embedded", "production"
ASYNC_REPLICATION_FREQUENCY = "5s"
"""How often a replica compares its hash tree with the others (Weaviate's default: 30 s). Also triggered at once
when a node comes back."""

OnEvent = Callable[[str], None]


# --- which topology ------------------------------------------------------------------------------


def as_topology(settings: Settings, topology: str) -> Settings:
    return settings.model_copy(update={"topology": topology})


# --- the production topology's services ----------------------------------------------------------


def weaviate_node_ports(settings: Settings, node: int) -> dict[str, int]:
    """Node 1 keeps the embedded node's ports; node n > 1 has six from weaviate_peer_port."""
    if node == 1:
        return weaviate_ports(settings)
    base = settings.weaviate_peer_ports_start(node)
    return {label: base + offset for offset, label in enumerate(WEAVIATE_PEER_PORTS)}


def _node_name(settings: Settings, node: int) -> str:
    return f"{settings.namespace}-node{node}"


def weaviate_cluster_node(settings: Settings, node: int, join: list[str] = ()) -> Service:
    """Node `node` of the cluster; `join`: gossip addresses of running nodes to join (none: the founder)."""
    nodes = range(1, settings.weaviate_nodes + 1)
    ports = weaviate_node_ports(settings, node)
    url = settings.weaviate_url if node == 1 else f"http://127.0.0.1:{ports['http']}"
    cluster = {
        "CLUSTER_HOSTNAME": _node_name(settings, node),
        "RAFT_BOOTSTRAP_EXPECT": str(settings.weaviate_nodes),
        "RAFT_JOIN": ",".join(f"{_node_name(settings, n)}:{weaviate_node_ports(settings, n)['raft']}" for n in nodes),
        # Also for the collections index.py does not create (the namespace locks): every replica, and a lease
        # deleted while a node was down is not a conflict when it is taken again (the newest write wins).
        "REPLICATION_MINIMUM_FACTOR": str(settings.weaviate_replicas),
        "REPLICATION_FORCE_DELETION_STRATEGY": "TimeBasedResolution",
        "ASYNC_REPLICATION_FREQUENCY": ASYNC_REPLICATION_FREQUENCY,
    }
    if join:
        cluster["CLUSTER_JOIN"] = ",".join(join)
    return weaviate_node(settings, f"weaviate-{node}", url, ports, cluster)


def weaviate_cluster(settings: Settings) -> list[Service]:
    return [weaviate_cluster_node(settings, node) for node in range(1, settings.weaviate_nodes + 1)]


def gateway_services(settings: Settings) -> list[Service]:
    """The edge process (flows/orchestration/gateway.py) hosting the landing webhook and the answering service
    `serve` hosts in the embedded topology; none when both are off. Its health is the answering service's (the
    webhook's when that one is off), so `up` returns once the models are loading and `status` shows it."""
    webhook = settings.landing_uri.startswith("s3://")
    if not (settings.answer_service or webhook):
        return []
    port, health = ((settings.answer_service_port, ANSWER_HEALTH) if settings.answer_service
                    else (settings.landing_webhook_port, WEBHOOK_HEALTH))
    return [Service(
        name="gateway",
        url=f"http://127.0.0.1:{port}",
        health_path=health,
        ports={"answer": settings.answer_service_port} | ({"webhook": settings.landing_webhook_port} if webhook else {}),
        command=lambda: [sys.executable, "-m", "hybridops.flows.orchestration.gateway"],
        env={"PREFECT_API_URL": settings.prefect_api_url, "PYTHONUNBUFFERED": "1", "DO_NOT_TRACK": "1"},
        version=lambda: "hybridops gateway (landing webhook, answering service)",
        marker="hybridops.flows.orchestration.gateway",
        secret_env=settings.as_env,
        cwd=PROJECT_ROOT,
    )]


def production_services(settings: Settings) -> list[Service]:
    """Every process of the production topology, in start order."""
    services = [postgres.postgres_service(settings), postgres.prefect_on_postgres(settings), *weaviate_cluster(settings)]
    if settings.s3_endpoint:
        services.append(minio_service(settings, drives=settings.minio_drives))
    return services + work_pool.known_workers(settings) + gateway_services(settings)


def services_for(settings: Settings) -> list[Service]:
    return production_services(settings) if settings.topology == PRODUCTION else local_services(settings)


# --- up / down / status --------------------------------------------------------------------------


def up(settings: Settings, on_event: OnEvent = lambda _: None, timeout: float = 240.0) -> dict:
    """Start `settings.topology` and record it; a second `up` starts only what is missing."""
    from hybridops.infra.services import up as up_embedded

    running = settings.recorded_topology() or EMBEDDED  # a home from before topologies were recorded: embedded
    if running != settings.topology and any(is_running(settings, s) for s in services_for(as_topology(settings, running))):
        raise ConflictError(f"the {running} topology is running under {settings.home}; `hybridops down` first")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.topology_record.write_text(settings.topology + "\n")
    if settings.topology == EMBEDDED:
        return up_embedded(settings, timeout=timeout, on_event=on_event)
    return _up_production(settings, on_event, timeout)


def _up_production(settings: Settings, on_event: OnEvent, timeout: float) -> dict:
    clock = time.monotonic()
    initialised = postgres.init_cluster(settings)
    report = start_services(settings, [postgres.postgres_service(settings)], timeout, on_event)
    report["postgres"] |= {"initdb": initialised, **postgres.ensure_database(settings)}
    started = time.monotonic()
    postgres.migrate(settings)
    on_event(f"prefect database migrated in {time.monotonic() - started:.1f} s")

    services = [postgres.prefect_on_postgres(settings)] + ([minio_service(settings, drives=settings.minio_drives)]
                                                            if settings.s3_endpoint else [])
    running, launched = launch(settings, services, on_event)
    report |= running
    node_report, node_launched = _launch_weaviate_nodes(settings, on_event)
    report |= node_report
    report |= await_healthy(settings, launched | node_launched, timeout, on_event)

    prepare_storage(settings, on_event)
    if settings.s3_endpoint:
        versioning = enable_versioning(settings)
        on_event(f"bucket {settings.s3_bucket}: versioning {versioning['versioning']}, noncurrent versions kept "
                 f"{versioning['noncurrent_days']} days")
    workers = work_pool.worker_services(settings)
    if report["prefect"]["action"] == "started" or not all(is_running(settings, w) for w in workers):
        # (again) after a restart: the deployments are current and a watcher run is queued for the new workers
        registered = work_pool.register_deployments(settings)
        on_event(f"work pool {registered['work_pool']} ({registered['action']}): "
                 f"{len(registered['deployments'])} deployments registered against it")
    report |= start_services(settings, workers + gateway_services(settings), timeout, on_event)
    on_event(f"production topology up in {time.monotonic() - clock:.1f} s")
    return report


def _launch_weaviate_nodes(settings: Settings, on_event: OnEvent) -> tuple[dict, dict]:
    """Start the missing nodes one by one, each joining the nodes already listening (memberlist refuses a join
    list of which no address answers, so the first node of a new cluster starts alone and founds it)."""
    report: dict = {}
    launched: dict = {}
    for node in range(1, settings.weaviate_nodes + 1):
        join = [f"127.0.0.1:{weaviate_node_ports(settings, peer)['gossip']}" for peer in range(1, settings.weaviate_nodes + 1)
                if peer != node and port_in_use(weaviate_node_ports(settings, peer)["gossip"])]
        running, started = launch(settings, [weaviate_cluster_node(settings, node, join)], on_event)
        report |= running
        launched |= started
        if started:
            _wait_listening(weaviate_node_ports(settings, node)["gossip"], f"weaviate-{node}")
    return report, launched


def _wait_listening(port: int, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_in_use(port):
        if time.monotonic() > deadline:
            raise ServiceError(f"{name} does not listen on its gossip port {port} after {timeout:.0f} s")
        time.sleep(0.1)


def down(settings: Settings, timeout: float = 30.0) -> dict:
    """Stop exactly what `up` started, in the reverse order (workers before the server, PostgreSQL last): the
    recorded topology's services whatever topology is asked for, so no process is left without a record."""
    settings = as_topology(settings, settings.recorded_topology() or settings.topology)
    report = stop_services(settings, timeout, services=list(reversed(services_for(settings))))
    settings.topology_record.unlink(missing_ok=True)
    return report


def status(settings: Settings) -> dict:
    """Every service, node and worker of the topology in force, plus the Weaviate cluster as node 1 sees it."""
    report = services_status(settings, services_for(settings)) | {"topology": settings.topology}
    if settings.topology == PRODUCTION:
        report["weaviate_cluster"] = weaviate_cluster_view(settings)
    return report


def weaviate_cluster_view(settings: Settings) -> dict:
    """Node name -> status (HEALTHY, UNHEALTHY, UNAVAILABLE...) from node 1's /v1/nodes; empty when it is down."""
    code, body = http_get(f"{settings.weaviate_url}/v1/nodes", headers=weaviate_headers(settings))
    if code != 200:
        return {}
    return {node["name"]: node.get("status", "") for node in json.loads(body).get("nodes", [])}


# --- a private production stack (tests, benchmarks) ----------------------------------------------


def private_production_settings(home: Path, **overrides) -> Settings:
    """Settings for a production topology of its own under `home` on fresh free ports. The home is made
    traversable (not listable) by others: PostgreSQL runs as the `postgres` user when we are root."""
    home.chmod(0o711)
    nodes = overrides.get("weaviate_nodes", Settings.model_fields["weaviate_nodes"].default)
    workers = overrides.get("workers", Settings.model_fields["workers"].default)
    values = dict(
        topology=PRODUCTION,
        weaviate_peer_port=free_port_block(len(WEAVIATE_PEER_PORTS) * (nodes - 1)),
        postgres_port=free_port(),
        worker_health_port=free_port_block(workers),
    )
    return private_stack_settings(home, **(values | overrides))


def private_production_stack(prefix: str, on_event: OnEvent = lambda _: None, **overrides):
    """A production topology of our own under a temp home (benchmarks), stopped and deleted afterwards."""
    return private_stack(prefix, on_event, make_settings=private_production_settings, start=up, stop=down, **overrides)
