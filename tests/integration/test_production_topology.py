"""The production topology on one machine, with faults injected into its real processes (issue 14).

One stack for the whole module (PostgreSQL, Prefect server + two workers, three Weaviate nodes, MinIO over four
drive folders), so the faults are paid for once; each test works in a namespace of its own, except the
orchestration tests, which use the namespace whose deployments `up` registered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from hybridops.infra import postgres
from hybridops.infra.binaries import InstallError
from hybridops.infra.services import free_port_block, http_get, stop_service
from hybridops.infra.topology import private_production_settings, production_services, up
from hybridops.tasks.core.errors import HybridopsError
from hybridops.tasks.core.object_store import artifact_store, landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.index import count_objects, live_name
from hybridops.tasks.knowledge.refresh import run_refresh
from hybridops.tasks.knowledge.search import search
from tests.conftest import TRANSFER_SUITE_SMALL
from tests.integration.knowledge_support import (
    assert_index_matches_landing,
    drop_namespace,
    expected_state,
    put,
    wait_searchable,
)

try:
    postgres.bin_dir()
except InstallError as exc:  # the one prerequisite outside the venv and the Go builds
    pytest.skip(f"production topology: {exc}", allow_module_level=True)


def _cli(cfg: Settings, *args: str) -> dict:
    """`hybridops <args> --json` as a user runs it (its own process, settings from the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDOPS_")} | cfg.as_env()
    done = subprocess.run([sys.executable, "-m", "hybridops.flows.cli", *args, "--json"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def production():
    """One production topology of its own for the module, started and stopped through the CLI."""
    with tempfile.TemporaryDirectory(prefix="hybridops-production-") as home:
        cfg = private_production_settings(Path(home), s3_bucket="hybridops-test", transfer_suite=TRANSFER_SUITE_SMALL,
                                          landing="s3://hybridops-test/hybridops/landing",  # MinIO notifies
                                          worker_health_port=free_port_block(3),  # room for the scale-out worker
                                          topology="embedded")  # the flag below chooses, not the setting
        try:
            started = _cli(cfg, "up", "--topology", "production")
            cfg = cfg.model_copy(update={"topology": "production"})
            assert started["topology"] == "production"
            assert {started["services"][s.name]["action"] for s in production_services(cfg)} == {"started"}
            yield cfg
        finally:
            stopped = _cli(cfg, "down")["services"]  # the recorded topology: every process `up` started
        assert {info["action"] for info in stopped.values()} == {"stopped"}, stopped


def _namespace(production: Settings, tmp_path: Path, **overrides) -> Settings:
    values = production.model_dump() | {"home": tmp_path / "home", "namespace": "p" + uuid.uuid4().hex[:10],
                                        "landing": None}  # a folder of its own unless the test says otherwise
    return Settings(**(values | overrides))


def _service(production: Settings, name: str):
    return next(s for s in production_services(production) if s.name == name)


def _kill(production: Settings, name: str) -> int:
    """SIGKILL one process `up` started (a crash: no shutdown of any kind)."""
    pid = int((production.run_dir / f"{name}.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


def _doc(i: int) -> str:
    topic = ("refunds", "shipping", "warranty", "invoices", "accounts")[i % 5]
    return (f"---\ntitle: Policy note {i}\ntags: {topic}\n---\n# Policy note {i} on {topic}\n\n"
            f"Customers asking about {topic} case {i} get an answer within {i % 9 + 1} business days. "
            f"Reference code {topic.upper()}-{i:04d}; escalate to the {topic} desk after {i % 4 + 2} attempts.\n")


def test_status_reports_every_node_and_worker_on_postgres(production: Settings) -> None:
    report = _cli(production.model_copy(update={"topology": "embedded"}), "status")  # the recorded one applies
    services = report["services"]
    assert report["topology"] == "production"
    assert set(services) == {"postgres", "prefect", "weaviate-1", "weaviate-2", "weaviate-3", "s3", "worker-1",
                             "worker-2", "gateway"}
    assert all(info["healthy"] and info["managed_pid"] for info in services.values()), services
    assert "PostgreSQL" in services["postgres"]["version"]
    assert sorted(report["weaviate_cluster"].values()) == ["HEALTHY"] * 3
    # Prefect keeps its state in PostgreSQL: the deployments `up` registered are rows there, on the work pool.
    rows = postgres._psql(production, "SELECT d.name || '@' || wp.name FROM deployment d JOIN work_queue wq ON "
                          "wq.id = d.work_queue_id JOIN work_pool wp ON wp.id = wq.work_pool_id;", "prefect")
    assert {f"hybridops-{key}@{production.work_pool_name}" for key in
            ("watch-landing", "refresh-index", "evaluate-behaviour", "retrain-adapter", "rebuild-index",
             "rollback-adapter")} <= set(rows.splitlines())


def test_the_gateway_turns_bucket_notifications_into_runs_on_the_workers_and_answers_warm(
        production: Settings) -> None:
    """The webhook and the answering service that `serve` hosts in the embedded topology, hosted by `gateway`."""
    webhook = f"http://127.0.0.1:{production.landing_webhook_port}/landing/health"
    before = json.loads(http_get(webhook)[1])
    assert before["namespace"] == production.namespace
    key = "kb/through-the-gateway.md"
    put(production, {key: "# Pallet heights\n\nThe heron rule applies to pallets stacked over 2.4 m.\n"})
    searchable_s = wait_searchable(production, "heron rule pallets", key, timeout=240, k=3)
    after = json.loads(http_get(webhook)[1])
    assert after["keys_recorded"] > before["keys_recorded"] and after["events"] > before["events"], after

    answers = f"http://127.0.0.1:{production.answer_service_port}/answer/health"
    deadline = time.monotonic() + 180
    while json.loads(http_get(answers)[1] or b"{}").get("status") != "ok":
        assert time.monotonic() < deadline, http_get(answers)
        time.sleep(1)
    answer = _cli(production, "ask", "What does the heron rule apply to?")
    assert answer["answered_by"] == "service" and key in answer["retrieved"], answer
    print(f"land -> searchable through the gateway's webhook and a worker: {searchable_s:.1f} s")


def test_weaviate_node_killed_during_refresh(production: Settings, tmp_path: Path) -> None:
    cfg = _namespace(production, tmp_path, refresh_batch_docs=20)
    try:
        put(cfg, {f"kb/note-{i:03d}.md": _doc(i) for i in range(100)})
        run_refresh(cfg)
        with weaviate_session(cfg) as client:
            live = live_name(client, cfg)
            baseline = count_objects(client.collections.use(live))
            assert client.collections.use(live).config.get().replication_config.factor == 3

        put(cfg, {f"kb/note-{i:03d}.md": _doc(i) for i in range(100, 300)})
        outcome: dict = {}

        def refresh_in_background() -> None:
            try:
                outcome["report"] = run_refresh(cfg)
            except Exception as exc:  # judged below: it must be one of ours
                outcome["error"] = exc

        clock = time.monotonic()
        worker = threading.Thread(target=refresh_in_background)
        worker.start()
        with weaviate_session(cfg) as client:
            deadline = time.monotonic() + 120
            while count_objects(client.collections.use(live)) <= baseline and worker.is_alive():
                assert time.monotonic() < deadline, "the refresh wrote nothing in 120 s"
                time.sleep(0.05)
        victim = _follower(production)
        _kill(production, victim)  # mid-refresh: batches are still being written
        print(f"killed {victim} {time.monotonic() - clock:.1f} s into the refresh")
        answered = 0
        while worker.is_alive() or answered == 0:  # search keeps answering through node 1 during the outage
            hits = search(cfg, "how long do refunds take", k=3)
            assert hits, "search returned nothing while one node was down"
            answered += 1
            time.sleep(0.2)
        worker.join()
        print(f"refresh ended {time.monotonic() - clock:.1f} s after its start: {outcome}; {answered} searches "
              "answered meanwhile")
        if "error" in outcome:  # failing is allowed, but only cleanly: one of hybridops' errors
            assert isinstance(outcome["error"], HybridopsError), repr(outcome["error"])

        restarted = up(production)  # starts only the missing node, which rejoins through the running ones
        assert restarted[victim]["action"] == "started"
        assert {restarted[s.name]["action"] for s in production_services(production) if s.name != victim} == {
            "already running"}
        print(f"node back {time.monotonic() - clock:.1f} s")
        run_refresh(cfg)  # converges
        assert_index_matches_landing(cfg)
        print(f"converged {time.monotonic() - clock:.1f} s")
        chunks = sum(len(found) for found in expected_state(cfg).values())
        _assert_every_node_holds(cfg, live, chunks)
        print(f"every replica complete {time.monotonic() - clock:.1f} s")
    finally:
        drop_namespace(cfg)


def test_node_1_killed_clients_go_on_through_the_other_nodes(production: Settings, tmp_path: Path) -> None:
    """Node 1 is where every client connects first: with it gone, a user's search and a refresh still work,
    through node 2 (a new raft leader is elected first when node 1 led)."""
    cfg = _namespace(production, tmp_path)
    try:
        put(cfg, {f"kb/note-{i:03d}.md": _doc(i) for i in range(20)})
        run_refresh(cfg)
        _kill(production, "weaviate-1")
        clock, deadline = time.monotonic(), time.monotonic() + 150  # a read may wait out its 60 s timeout once
        while True:
            try:
                hits = _cli(cfg, "search", "Reference code REFUNDS-0005", "--k", "3")["results"]
                break
            except AssertionError:  # refused until the cluster has a leader again
                assert time.monotonic() < deadline, "no search answered in 150 s with node 1 down"
                time.sleep(2)
        print(f"search answered {time.monotonic() - clock:.1f} s after node 1 was killed")
        assert "kb/note-005.md" in [hit["doc_id"] for hit in hits]
        put(cfg, {"kb/note-100.md": _doc(100)})
        report = run_refresh(cfg)  # the lock, the plan and the writes at QUORUM, on nodes 2 and 3
        assert report.documents.added == 1
        assert_index_matches_landing(cfg)
    finally:
        restarted = up(production)  # node 1 rejoins through the running nodes
        assert restarted["weaviate-1"]["action"] == "started"
        drop_namespace(cfg)


def _follower(production: Settings) -> str:
    """A node other than node 1 (the clients' entry point) that is not the raft leader: the fault a replica
    survives. (Killing the leader also stops schema reads, alias look-ups included, until a new one is elected.)"""
    code, body = http_get(f"{production.weaviate_url}/v1/cluster/statistics")
    assert code == 200
    leader = json.loads(body)["statistics"][0]["leaderId"]
    return next(f"weaviate-{n}" for n in range(production.weaviate_nodes, 1, -1)
                if f"{production.namespace}-node{n}" != leader)


def _assert_every_node_holds(cfg: Settings, collection: str, expected: int, timeout: float = 120.0) -> None:
    """Each node's own replica of the collection holds every object (async replication repairs the node that
    was down): the per-node shard counts of /v1/nodes, asked until they agree or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        with weaviate_session(cfg) as client:
            nodes = client.cluster.nodes(collection=collection, output="verbose")
        counts = {node.name: sum(shard.object_count for shard in node.shards) for node in nodes}
        if len(counts) == 3 and set(counts.values()) == {expected}:
            return
        assert time.monotonic() < deadline, f"replicas differ after {timeout:.0f} s: {counts}, expected {expected}"
        time.sleep(2)


def test_minio_drive_folder_lost(production: Settings, tmp_path: Path) -> None:
    cfg = _namespace(production, tmp_path)
    cfg = _namespace(production, tmp_path, namespace=cfg.namespace,
                     landing=f"s3://{production.s3_bucket}/{cfg.namespace}/landing")
    landing, store = landing_zone(cfg), artifact_store(cfg)
    documents = {f"kb/note-{i:03d}.md": _doc(i).encode() for i in range(20)}
    adapter = {"adapters/v-test/adapter_model.safetensors": os.urandom(3 << 20),  # multipart, erasure-coded
               "adapters/v-test/manifest.json": b'{"version": "v-test"}'}
    for key, data in documents.items():
        landing.put(key, data)
    for key, data in adapter.items():
        store.put(key, data)

    drive = production.home / "data" / "minio-erasure" / "drive2"
    shutil.rmtree(drive)
    assert {o.key for o in landing.list("kb/")} == set(documents)
    assert all(landing.get(key) == data for key, data in documents.items())
    assert all(hashlib.sha256(store.get(k)).digest() == hashlib.sha256(d).digest() for k, d in adapter.items())
    store.put("adapters/v-test/after-loss.txt", b"written with a drive missing")  # writes keep quorum too

    drive.mkdir()  # a replaced (empty) drive: MinIO formats it and heals the objects back onto it
    deadline = time.monotonic() + 180
    while not any(drive.rglob("xl.meta")):
        assert time.monotonic() < deadline, "MinIO did not heal the replaced drive within 180 s"
        time.sleep(2)
    assert store.get("adapters/v-test/after-loss.txt") == b"written with a drive missing"


def _runs_of(production: Settings, key: str, since) -> list:
    """Flow runs of one of this stack's deployments created after `since`, read from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: production.prefect_api_url}):
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[f"{production.namespace}-{key}"])),
                flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)))


def test_postgres_restart_then_events_and_schedules_resume(production: Settings) -> None:
    from datetime import UTC, datetime

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridops.flows.orchestration.events import from_the_cli, landing_changed
    from hybridops.tasks.knowledge.change_feed import record_changes

    stopped = stop_service(production, postgres.postgres_service(production))
    assert stopped["action"] == "stopped" and not stopped["forced"]
    restarted = up(production)  # PostgreSQL only; the Prefect server and the workers keep running
    assert restarted["postgres"]["action"] == "started" and restarted["prefect"]["action"] == "already running"

    since = datetime.now(UTC)
    key = "kb/after-postgres-restart.md"
    put(production, {key: "# After the restart\n\nThe zebra protocol applies to parcels over 30 kg.\n"})
    record_changes(artifact_store(production), [key], "test")  # what every notifier does before the event
    deadline = time.monotonic() + 240
    sent = False
    while True:
        if not sent:
            try:  # the server's connections to PostgreSQL are re-established on its next requests
                sent = from_the_cli(production, lambda: landing_changed(
                    production, {"added": [key], "removed": [], "counts": {"added": 1}, "keys": [key],
                                 "source": "test"})) is not None
            except Exception:  # noqa: BLE001 - retried until the deadline below
                pass
        runs = _runs_of(production, "refresh-index", since) if sent else []
        if any(run.state and run.state.is_completed() for run in runs):
            break
        assert not any(run.state and run.state.is_final() and not run.state.is_completed() for run in runs), runs
        assert time.monotonic() < deadline, f"no completed refresh-index run 240 s after the restart: {runs}"
        time.sleep(2)
    hits = search(production, "zebra protocol parcels", k=3)
    assert hits and hits[0].doc_id == key

    # Schedules: the server's scheduler loop (every 60 s, on the restarted database) makes a cron's runs again.
    from prefect.client.orchestration import get_client

    def scheduled() -> list:
        return [run for run in _runs_of(production, "evaluate-behaviour", since) if run.state.is_scheduled()]

    before = scheduled()
    assert before, "evaluate-behaviour's daily cron has no scheduled run"
    with temporary_settings(updates={PREFECT_API_URL: production.prefect_api_url}):
        with get_client(sync_client=True) as client:
            for run in before:
                client.delete_flow_run(run.id)
    deadline = time.monotonic() + 180
    while not (after := scheduled()):
        assert time.monotonic() < deadline, "the scheduler made no evaluate-behaviour run 180 s after the restart"
        time.sleep(3)
    assert {run.id for run in after}.isdisjoint(run.id for run in before)
    assert all(run.created_by and run.created_by.type == "SCHEDULE" for run in after), after


def _flow_run_process(production: Settings, flow_run_id: str) -> tuple[str, int] | None:
    """(worker name, PID) of the process running this flow run: a descendant of one of the workers."""
    import psutil

    for index in range(1, production.workers + 1):
        name = f"worker-{index}"
        worker = psutil.Process(int((production.run_dir / f"{name}.pid").read_text()))
        for child in worker.children(recursive=True):
            try:
                if child.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                    return name, child.pid
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return None


def test_worker_killed_mid_run_is_crashed_and_the_next_run_converges(production: Settings) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridops.flows.orchestration.deployments import spec_for

    put(production, {f"kb/crash-{i:03d}.md": _doc(i) for i in range(60)})
    deployment = spec_for(production, "refresh-index").full_name(production)
    with temporary_settings(updates={PREFECT_API_URL: production.prefect_api_url}):
        with get_client(sync_client=True) as client:
            run = run_deployment(deployment, timeout=0, parameters={"params": {"targeted": False}})
            deadline = time.monotonic() + 120
            while (found := _flow_run_process(production, str(run.id))) is None or \
                    not client.read_flow_run(run.id).state.is_running():
                assert time.monotonic() < deadline, "the run never started on a worker"
                time.sleep(0.5)
            worker, pid = found
            os.killpg(int((production.run_dir / f"{worker}.pid").read_text()), signal.SIGKILL)  # the worker
            with contextlib.suppress(ProcessLookupError):  # usually gone with the worker's group already
                os.kill(pid, signal.SIGKILL)  # and its run (a lost machine takes both)

            deadline = time.monotonic() + 180  # heartbeats every 30 s; silent for 60 s -> Crashed
            while not (state := client.read_flow_run(run.id).state).is_crashed():
                assert not state.is_final(), state
                assert time.monotonic() < deadline, f"still {state.name} 180 s after its worker was killed"
                time.sleep(2)

            assert up(production)[worker]["action"] == "started"
            again = run_deployment(deployment, timeout=300, parameters={"params": {"targeted": False}})
            assert again.state.is_completed(), again.state
    assert_index_matches_landing(production)  # nothing indexed twice, nothing lost


def test_runbook_scale_out_adds_a_worker_that_status_and_down_know(production: Settings) -> None:
    """PRODUCTION.md's runbook: `HYBRIDOPS_WORKERS=3 hybridops up` beside the running stack."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    scaled = _cli(production.model_copy(update={"workers": 3}), "up")["services"]
    assert scaled["worker-3"]["action"] == "started"
    assert {scaled[name]["action"] for name in ("prefect", "weaviate-1", "worker-1", "gateway")} == {"already running"}
    services = _cli(production, "status")["services"]  # the setting still says 2: the PID file tells
    assert services["worker-3"]["healthy"] and services["worker-3"]["managed_pid"], services
    deadline = time.monotonic() + 60
    with temporary_settings(updates={PREFECT_API_URL: production.prefect_api_url}):
        with get_client(sync_client=True) as client:
            while True:
                online = {w.name for w in client.read_workers_for_work_pool(production.work_pool_name)
                          if w.status and w.status.value == "ONLINE"}
                if f"{production.namespace}-worker-3" in online:
                    break
                assert time.monotonic() < deadline, f"worker-3 never polled the pool: {online}"
                time.sleep(2)
    # the fixture's `down` (default setting: 2 workers) must stop worker-3 too: it asserts every process stopped


def test_runbook_restore_the_adapter_registry_from_bucket_versions(production: Settings, tmp_path: Path) -> None:
    """PRODUCTION.md's runbook, step by step (boto3 making the `aws s3api` calls it lists), after the registry of
    a namespace was deleted by mistake: delete markers removed, the older champion pointer copied back."""
    from hybridops.tasks.behaviour import adapters
    from hybridops.tasks.core.object_store import s3_client
    from tests.adapter_support import adapter_folder, register

    cfg = _namespace(production, tmp_path)
    cfg = _namespace(production, tmp_path, namespace=cfg.namespace,
                     store=f"s3://{production.s3_bucket}/{cfg.namespace}/store")
    store = artifact_store(cfg)
    first = register(cfg, store, adapter_folder(tmp_path, b"one"))
    second = register(cfg, store, adapter_folder(tmp_path, b"two"), parent=first.version)
    adapters.promote(cfg, first.version, "first")
    adapters.promote(cfg, second.version, "second")
    for info in list(store.list(adapters.PREFIX)):  # the accident
        store.delete(info.key)
    gone = _cli(cfg, "adapters", "list")
    assert gone["adapters"] == [] and gone["champion"] is None

    client, bucket = s3_client(cfg), production.s3_bucket
    prefix = f"{cfg.namespace}/store/{adapters.PREFIX}"
    for marker in client.list_object_versions(Bucket=bucket, Prefix=prefix).get("DeleteMarkers", []):
        if marker["IsLatest"]:
            client.delete_object(Bucket=bucket, Key=marker["Key"], VersionId=marker["VersionId"])
    pointer = f"{cfg.namespace}/store/{adapters.CHAMPION_KEY}"
    versions = [v for v in client.list_object_versions(Bucket=bucket, Prefix=pointer)["Versions"] if v["Key"] == pointer]
    assert len(versions) == 2 and versions[0]["IsLatest"]  # newest first: the pointer naming `second`, then `first`
    client.copy_object(Bucket=bucket, Key=pointer, CopySource={"Bucket": bucket, "Key": pointer,
                                                               "VersionId": versions[1]["VersionId"]})

    restored = _cli(cfg, "adapters", "list")
    assert restored["champion"] == first.version
    assert {row["version"]: row["valid"] for row in restored["adapters"]} == {first.version: True, second.version: True}
    shown = _cli(cfg, "adapters", "show", second.version)
    assert shown["files"] == second.model_dump(mode="json")["files"]
    assert adapters.verify(cfg, second.version).version == second.version  # every file's sha256 checked again
