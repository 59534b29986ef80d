"""The orchestration surface against the REAL Prefect server of the `stack` fixture (plus Weaviate/MinIO).

A module-scoped `hybridops serve` (a child process, as users run it) serves one test namespace; events
emitted here or by its watcher start runs through the server's automations, exactly as in production.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hybridops.flows.orchestration.deployments import deployment_specs, spec_for
from hybridops.flows.orchestration.run_control import (
    deployment_runs,
    prefect_client,
    read_events,
    start_run,
    wait_for_new_run,
    wait_for_run,
)
from hybridops.flows.orchestration.serving import ServeProcess
from hybridops.flows.orchestration.events import LANDING_CHANGED
from hybridops.tasks.knowledge.landing_changes import snapshot
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.knowledge.search import search
from hybridops.tasks.core.settings import Settings
from tests.integration.knowledge_support import CORPUS, cli, drop_namespace, wait_events, wait_searchable


def now() -> datetime:
    return datetime.now(timezone.utc)


def namespaced(stack: Settings, home: Path, prefix: str = "o") -> Settings:
    return Settings(**(stack.model_dump() | {"home": home, "namespace": prefix + uuid.uuid4().hex[:10]}))


@pytest.fixture(scope="module")
def served(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """`hybridops serve` for a fresh namespace, stopped (and its index dropped) after the module."""
    cfg = namespaced(stack, tmp_path_factory.mktemp("served") / "home")
    serve = ServeProcess(cfg).start()
    try:
        yield cfg
    finally:
        serve.stop()
        drop_namespace(cfg)


def test_served_deployments_have_their_schedules_triggers_and_parameter_forms(served: Settings) -> None:
    with prefect_client(served) as client:
        for spec in deployment_specs(served):
            deployment = client.read_deployment_by_name(spec.full_name(served))
            assert not deployment.paused and deployment.description == spec.description
            assert set(spec.tags(served)) <= set(deployment.tags)
            schedules = [s.schedule for s in deployment.schedules if s.active]
            intervals = [s.interval.total_seconds() for s in schedules if getattr(s, "interval", None)]
            crons = [s.cron for s in schedules if getattr(s, "cron", None)]
            automations = client.read_resource_related_automations(f"prefect.deployment.{deployment.id}")
            events = {event for a in automations if a.enabled for event in a.trigger.expect}
            if spec.key == "watch-landing":
                assert intervals == [served.watch_run_minutes * 60]
            elif spec.key == "refresh-index":
                assert intervals == [served.refresh_interval_minutes * 60]
                assert events == {"hybridops.landing.changed"}
                (automation,) = automations
                assert automation.trigger.match.model_dump() == {
                    "prefect.resource.id": f"hybridops.{served.namespace}.landing"}
                params = deployment.parameter_openapi_schema
                form = params["definitions"]["RefreshParams"]["properties"]
                assert all(field.get("description") for field in form.values())  # the UI shows a real form
            elif spec.key == "evaluate-behaviour":
                assert crons == [served.eval_cron]
            elif spec.key == "retrain-adapter":
                assert crons == [served.retrain_cron] and events == {"hybridops.behaviour.drift"}
            else:
                assert not schedules and not automations  # rebuild-index, rollback-adapter: manual


def test_a_landed_document_becomes_searchable_through_the_event_path(served: Settings) -> None:
    since = now()
    token = "zq" + uuid.uuid4().hex[:10]
    doc_id = "orchestration/ferry.md"
    landing_zone(served).put(doc_id, f"# Ferry timetable\n\nThe {token} ferry leaves the pier at 07:40.\n".encode())
    wait_searchable(served, token, doc_id)

    announced = read_events(served, LANDING_CHANGED, f"hybridops.{served.namespace}.landing", since)
    assert any(doc_id in e.payload["added"] for e in announced)  # watch-landing saw the file
    full = spec_for(served, "refresh-index").full_name(served)
    runs = [r for r in deployment_runs(served, full, since) if r.created_by == "AUTOMATION"]
    assert runs and runs[0].state == "COMPLETED"  # ... and its event started the refresh
    assert runs[0].automation == f"{served.namespace}-refresh-index: on hybridops.landing.changed"


def test_a_drift_event_starts_retrain_adapter(served: Settings, prefect_api: str) -> None:
    from prefect.events import emit_event

    since = now()
    emit_event(event="hybridops.behaviour.drift", resource={"prefect.resource.id": f"hybridops.{served.namespace}.behaviour"},
               payload={"checks": ["json_format", "sources_valid"], "n": 20})
    full = spec_for(served, "retrain-adapter").full_name(served)
    # the namespace has no training examples, so the run decides to skip: started by the event all the same
    run = wait_for_new_run(served, full, since, timeout=600, created_by="AUTOMATION")
    assert run.parameters["params"]["drifted_checks"] == ["json_format", "sources_valid"]
    assert run.state == "COMPLETED", run.state_message


def test_the_namespace_lock_serialises_two_refreshes(served: Settings) -> None:
    full = spec_for(served, "refresh-index").full_name(served)
    runs = [start_run(served, full, {"params": {"verify": True}}) for _ in range(2)]
    finished = [wait_for_run(served, run.id, timeout=600) for run in runs]
    assert [run.state for run in finished] == ["COMPLETED", "COMPLETED"]
    windows = []
    with prefect_client(served) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        for run in finished:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            first = min(t.start_time for t in tasks if t.name.startswith("landing-snapshot"))
            last = max(t.end_time for t in tasks if t.name.startswith(("finish-refresh", "announce_follow_up")))
            windows.append((first, last))
    (a_start, a_end), (b_start, b_end) = sorted(windows)
    assert a_end <= b_start  # the second refresh's work began only after the first one's ended


def test_manual_run_from_the_cli_waits_for_the_result(served: Settings, child_env) -> None:
    done = cli(child_env(served), "run", "refresh-index", "--param", "params.verify=true", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "COMPLETED" and run["created_by"] != "AUTOMATION"
    assert run["parameters"] == {"params": {"verify": True}}
    bad = cli(child_env(served), "run", "no-such-deployment", "--json")
    assert bad.returncode != 0 and "known:" in bad.stderr


@pytest.mark.parametrize("backend", ["settings", "s3_settings"])
def test_watch_landing_announces_a_burst_as_one_event(backend: str, request, prefect_api: str, monkeypatch) -> None:
    from hybridops.flows.watch_landing import WatchParams, watch_landing

    cfg: Settings = request.getfixturevalue(backend)
    for key, value in cfg.as_env().items():  # the flow builds its settings from the environment
        monkeypatch.setenv(key, value)
    landing = landing_zone(cfg)
    since = now()
    for i in range(25):
        landing.put(f"burst/doc-{i:02d}.md", f"# Doc {i}\n\nBurst document number {i}.\n".encode())

    stats = watch_landing(WatchParams(run_for_seconds=0))
    assert stats.events == 1 and stats.added == 25
    resource = f"hybridops.{cfg.namespace}.landing"
    events = wait_events(cfg, LANDING_CHANGED, resource, since, at_least=1)
    time.sleep(2)  # anything else would have arrived by now
    events = read_events(cfg, LANDING_CHANGED, resource, since)
    assert len(events) == 1
    assert events[0].payload["counts"] == {"added": 25, "updated": 0, "removed": 0}
    assert len(events[0].payload["added"]) == 25

    assert watch_landing(WatchParams(run_for_seconds=0)).events == 0  # the cursor persisted: no repeat
    landing.delete("burst/doc-03.md")
    again = watch_landing(WatchParams(run_for_seconds=0))
    assert again.events == 1 and again.removed == 1


def test_a_refresh_announces_a_follow_up_when_the_landing_zone_moved_meanwhile(settings: Settings, prefect_api: str,
                                                                                 monkeypatch) -> None:
    from hybridops.flows.watch_landing import announce_follow_up

    landing = landing_zone(settings)
    landing.put("a.md", b"# A\n\nfirst")
    before = snapshot(landing)
    since = now()
    assert announce_follow_up.fn(settings, before) == 0  # nothing moved: no follow-up
    landing.put("b.md", b"# B\n\nlanded while the refresh ran")
    assert announce_follow_up.fn(settings, before) == 1
    (event,) = wait_events(settings, LANDING_CHANGED, f"hybridops.{settings.namespace}.landing", since, 1)
    assert event.payload["added"] == ["b.md"] and "follow-up" in event.payload["reason"]


def test_refresh_batches_run_on_a_two_worker_dask_cluster(settings: Settings, prefect_api: str, monkeypatch) -> None:
    """The flow as a worker or `serve` runs it (imported as is, settings from the environment): with
    HYBRIDOPS_DASK_WORKERS=2 its batches go to a two-process Dask cluster."""
    from prefect_dask import DaskTaskRunner

    from hybridops.flows.refresh_index import RefreshParams, refresh_index

    for key, value in settings.model_copy(update={"dask_workers": 2}).as_env().items():
        monkeypatch.setenv(key, value)
    on_dask = []
    submit = DaskTaskRunner.submit
    monkeypatch.setattr(DaskTaskRunner, "submit", lambda runner, task, *args, **kwargs: on_dask.append(task.name)
                        or submit(runner, task, *args, **kwargs))  # a spy: the real cluster runs every batch
    landing = landing_zone(settings)
    docs = sorted(p for p in CORPUS.rglob("*.md"))[:6]
    for path in docs:
        landing.put(path.relative_to(CORPUS).as_posix(), path.read_bytes())
    try:
        report = refresh_index(RefreshParams(batch_size=2))  # 3 batches
        assert on_dask == ["index-batch"] * 3
        assert report.documents.added == len(docs) and report.chunks.embedded > 0
        first = docs[0].relative_to(CORPUS).as_posix()
        assert first in {hit.doc_id for hit in search(settings, docs[0].stem.replace("-", " "), k=5)}
        landing.put("kb/one-more.md", b"# One more\n\nA single changed document is a single batch.\n")
        assert refresh_index(RefreshParams(batch_size=2)).documents.added == 1
        assert len(on_dask) == 3  # one batch: no cluster to start for it
    finally:
        drop_namespace(settings)


@pytest.mark.slow
@pytest.mark.timeout(3700)  # ~25 min on a busy 2-core box (a 45-step retrain plus its in- and out-of-domain evals)
def test_the_demo_tells_the_whole_story(stack: Settings, child_env) -> None:
    """`hybridops demo --json` end to end: every step happens, started by events where the story says so."""
    done = cli(child_env(stack), "demo", "--json", timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    steps = {step["step"]: step for step in report["steps"]}
    assert report["ok"] and all(step["ok"] for step in report["steps"])
    for name in ("Refresh starts by event", "Refresh starts by event again", "Retrain starts by event"):
        assert steps[name]["created_by"] == "AUTOMATION", name
    assert steps["Ask again"]["format_ok"] is True and steps["Ask again"]["adapter"]
    evaluation = steps["Evaluate behaviour"]
    assert evaluation["drift"] and evaluation["gaps"]["behaviour"] > 0
    assert "seattle-sunday-hours" in evaluation["knowledge_gap_cases"]  # the held-back document
    assert steps["Retrain starts by event"]["promoted"]
    assert steps["Ask about the new fact"]["mentions_new_fact"]
