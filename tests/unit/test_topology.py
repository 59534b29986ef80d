"""The production topology's wiring, without starting anything: cluster env, replication, consistency, workers."""

from __future__ import annotations

from pathlib import Path

from weaviate.classes.config import ConsistencyLevel

from hybridops.infra import postgres
from hybridops.infra.topology import services_for, weaviate_cluster_node, weaviate_node_ports
from hybridops.infra.work_pool import worker_service
from hybridops.tasks.core.settings import Settings, load_settings
from hybridops.tasks.core.weaviate_connection import _AtConsistency
from hybridops.tasks.knowledge.index import _replication_config

PRODUCTION = Settings(topology="production", namespace="acme")


def test_replicas_follow_the_topology_unless_set() -> None:
    assert Settings().weaviate_replicas == 1
    assert PRODUCTION.weaviate_replicas == 3
    assert Settings(topology="production", weaviate_nodes=5, weaviate_replication_factor=2).weaviate_replicas == 2
    assert _replication_config(Settings()) is None  # embedded collections are created exactly as before
    config = _replication_config(PRODUCTION)
    assert (config.factor, config.asyncEnabled, config.deletionStrategy.value) == (3, True, "TimeBasedResolution")


def test_cluster_nodes_form_one_raft_cluster() -> None:
    founder = weaviate_cluster_node(PRODUCTION, 1).env
    joiner = weaviate_cluster_node(PRODUCTION, 3, ["127.0.0.1:7946", "127.0.0.1:7962"]).env
    assert "CLUSTER_JOIN" not in founder and joiner["CLUSTER_JOIN"] == "127.0.0.1:7946,127.0.0.1:7962"
    raft = {n: weaviate_node_ports(PRODUCTION, n) for n in (1, 2, 3)}
    assert founder["RAFT_JOIN"] == joiner["RAFT_JOIN"] == ",".join(f"acme-node{n}:{raft[n]['raft']}" for n in raft)
    assert all(ports["raft_rpc"] == ports["raft"] + 1 for ports in raft.values())  # how local nodes find RPC ports
    assert [weaviate_cluster_node(PRODUCTION, n).env["CLUSTER_HOSTNAME"] for n in raft] == [
        "acme-node1", "acme-node2", "acme-node3"]
    assert founder["RAFT_BOOTSTRAP_EXPECT"] == founder["REPLICATION_MINIMUM_FACTOR"] == "3"
    assert weaviate_cluster_node(PRODUCTION, 1).url == PRODUCTION.weaviate_url  # node 1: the clients' entry point


def test_collections_handed_out_carry_the_consistency_level() -> None:
    class Handle:
        def __init__(self, level=None):
            self.level = level

        def with_consistency_level(self, level):
            return Handle(level)

    class Collections:
        def use(self, name):
            return Handle()

        get = use

        def exists(self, name):
            return name == "X"

    wrapped = _AtConsistency(Collections(), ConsistencyLevel.QUORUM)
    assert wrapped.use("X").level == wrapped.get("X").level == ConsistencyLevel.QUORUM
    assert wrapped.exists("X")  # everything else passes through


def test_every_command_of_a_home_runs_against_the_topology_up_started_there(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HYBRIDOPS_TOPOLOGY", raising=False)
    assert load_settings(home=tmp_path).topology == "embedded"
    cfg = Settings(home=tmp_path)
    cfg.run_dir.mkdir(parents=True)
    cfg.topology_record.write_text("production\n")  # as `up --topology production` leaves it
    found = load_settings(home=tmp_path)
    assert found.topology == "production" and found.weaviate_replicas == 3  # so its writes reach 3 replicas at QUORUM
    assert [s.name for s in services_for(found)][:2] == ["postgres", "prefect"]
    assert load_settings(home=tmp_path, topology="embedded").topology == "embedded"  # --topology wins
    monkeypatch.setenv("HYBRIDOPS_TOPOLOGY", "embedded")
    assert load_settings(home=tmp_path).topology == "production"  # what runs beats a stale environment
    cfg.topology_record.unlink()
    assert load_settings(home=tmp_path).topology == "embedded"  # nothing up: the environment decides
    assert [s.name for s in services_for(cfg)] == ["prefect", "weaviate", "s3"]
    relative = Settings(home=Path("var"))  # services start inside the home: the paths they get are absolute
    assert relative.home == Path("var").absolute()


def test_workers_get_the_settings_and_distinct_health_ports(tmp_path: Path) -> None:
    cfg = Settings(topology="production", home=Path("relative-home"))
    first, second = worker_service(cfg, 1), worker_service(cfg, 2)
    assert (first.ports["health"], second.ports["health"]) == (cfg.worker_health_port, cfg.worker_health_port + 1)
    env = first.secret_env()
    assert env["HYBRIDOPS_TOPOLOGY"] == "production" and Path(env["HYBRIDOPS_HOME"]).is_absolute()
    assert first.env["PREFECT_API_URL"] == cfg.prefect_api_url and "HYBRIDOPS_TOPOLOGY" not in first.env
    assert "--pool" in first.command() and cfg.work_pool_name in first.command()


def test_prefect_database_url_and_sql_literals(tmp_path: Path) -> None:
    cfg = Settings(home=tmp_path, postgres_password="p@ss:w/rd'x", postgres_port=5999)
    assert postgres.database_url(cfg) == "postgresql+asyncpg://prefect:p%40ss%3Aw%2Frd%27x@127.0.0.1:5999/prefect"
    assert postgres._literal("it's") == "'it''s'"
    server = postgres.prefect_on_postgres(cfg)
    assert server.env["PREFECT_API_DATABASE_MIGRATE_ON_START"] == "false"
    assert set(server.secret_env()) == {postgres.DATABASE_URL_VAR}  # the password never in argv or plain env
    assert not any("p@ss" in part for part in server.command())


def test_clients_know_every_node_of_the_production_topology_and_only_node_1_otherwise():
    embedded = Settings(weaviate_peer_port=9000)
    production = embedded.model_copy(update={"topology": "production", "weaviate_nodes": 3})
    assert embedded.weaviate_peer_entry_points == []
    assert production.weaviate_peer_entry_points == [
        (weaviate_node_ports(production, n)["http"], weaviate_node_ports(production, n)["grpc"]) for n in (2, 3)]


def test_the_gateway_hosts_what_serve_would_beside_the_workers(tmp_path: Path) -> None:
    s3 = Settings(topology="production", home=tmp_path, s3_endpoint="http://127.0.0.1:9000", landing="s3://b/ns/landing")
    names = [s.name for s in services_for(s3)]
    assert names[-3:] == ["worker-1", "worker-2", "gateway"]  # started last, so `down` stops it first
    gateway = services_for(s3)[-1]
    assert gateway.ports == {"answer": s3.answer_service_port, "webhook": s3.landing_webhook_port}
    assert gateway.health_path == "/answer/health" and gateway.secret_env()["HYBRIDOPS_TOPOLOGY"] == "production"
    webhook_only = services_for(s3.model_copy(update={"answer_service": False}))[-1]
    assert (webhook_only.name, webhook_only.health_path) == ("gateway", "/landing/health")
    folder = Settings(topology="production", home=tmp_path, landing=str(tmp_path / "landing"), answer_service=False)
    assert "gateway" not in [s.name for s in services_for(folder)]  # nothing to host


def test_status_and_down_know_every_worker_up_started_whatever_the_setting_says_now(tmp_path: Path) -> None:
    cfg = Settings(topology="production", home=tmp_path)
    cfg.run_dir.mkdir(parents=True)
    assert [s.name for s in services_for(cfg) if s.name.startswith("worker")] == ["worker-1", "worker-2"]
    (cfg.run_dir / "worker-4.pid").write_text("12345")  # `HYBRIDOPS_WORKERS=4 hybridops up` was run
    workers = [s for s in services_for(cfg) if s.name.startswith("worker")]
    assert [s.name for s in workers] == ["worker-1", "worker-2", "worker-3", "worker-4"]
    assert len({s.ports["health"] for s in workers}) == 4
