"""Orchestration pieces that need no server: landing change detection, deployment definitions, CLI params."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from hybridops.flows.cli.orchestration import parse_params
from hybridops.flows.orchestration.deployments import deployment_specs, spec_for
from hybridops.tasks.knowledge.landing_changes import CURSOR_KEY, LandingChanges, diff, load_cursor, snapshot, watch
from hybridops.tasks.core.object_store import FolderStore
from hybridops.tasks.core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", namespace="unit_ns")


def stores(cfg: Settings) -> tuple[FolderStore, FolderStore]:
    return FolderStore(cfg.landing_uri), FolderStore(cfg.store_uri)


def test_diff_reports_added_updated_and_removed_keys_sorted() -> None:
    before = {"a.md": "1", "b.md": "1", "c.md": "1"}
    after = {"a.md": "1", "b.md": "2", "d.md": "1", "0.md": "1"}
    assert diff(before, after) == LandingChanges(added=["0.md", "d.md"], updated=["b.md"], removed=["c.md"])
    assert not diff(after, dict(after))


def test_snapshot_skips_the_training_area(cfg: Settings) -> None:
    landing, _ = stores(cfg)
    landing.put("docs/a.md", b"a")
    landing.put("_training/examples.jsonl", b"{}")
    assert set(snapshot(landing)) == {"docs/a.md"}


def test_payload_keeps_exact_counts_when_key_lists_are_cut() -> None:
    changes = LandingChanges(added=[f"k{i}" for i in range(250)], removed=["x"])
    payload = changes.payload(limit=100)
    assert payload["count"] == 251 and payload["counts"] == {"added": 250, "updated": 0, "removed": 1}
    assert len(payload["added"]) == 100 and payload["truncated"] is True


def test_watch_announces_a_burst_once_and_resumes_from_its_cursor(cfg: Settings) -> None:
    landing, store = stores(cfg)
    for i in range(30):
        landing.put(f"burst/doc-{i:02d}.md", f"doc {i}".encode())
    announced: list[LandingChanges] = []

    first = watch(cfg, landing, store, announced.append, run_for_s=0, poll_s=0.05)
    assert first.events == 1 and first.added == 30 and len(announced) == 1
    assert store.exists(CURSOR_KEY)

    again = watch(cfg, landing, store, announced.append, run_for_s=0, poll_s=0.05)
    assert again.events == 0 and len(announced) == 1  # a new watcher resumes: nothing is reported twice

    landing.put("burst/doc-00.md", b"changed text")
    landing.delete("burst/doc-01.md")
    watch(cfg, landing, store, announced.append, run_for_s=0, poll_s=0.05)
    assert announced[-1] == LandingChanges(updated=["burst/doc-00.md"], removed=["burst/doc-01.md"])


def test_a_corrupt_or_foreign_cursor_restarts_from_scratch(cfg: Settings) -> None:
    landing, store = stores(cfg)
    store.put(CURSOR_KEY, b"not json")
    assert load_cursor(store, cfg) is None
    landing.put("a.md", b"a")
    announced: list[LandingChanges] = []
    watch(cfg, landing, store, announced.append, run_for_s=0, poll_s=0.05)
    assert announced == [LandingChanges(added=["a.md"])]
    other = cfg.model_copy(update={"landing": str(cfg.home / "elsewhere")})
    assert load_cursor(store, cfg) is not None and load_cursor(store, other) is None


def test_deployments_cover_every_way_of_starting_and_carry_the_namespace(cfg: Settings) -> None:
    specs = {spec.key: spec for spec in deployment_specs(cfg)}
    assert set(specs) == {"watch-landing", "refresh-index", "evaluate-behaviour", "retrain-adapter",
                          "rebuild-index", "rollback-adapter"}
    refresh = specs["refresh-index"]
    (trigger,) = refresh.triggers(cfg)
    assert trigger.expect == {"hybridops.landing.changed"}
    assert trigger.match.model_dump() == {"prefect.resource.id": "hybridops.unit_ns.landing"}
    assert trigger.threshold == 1 and trigger.within == timedelta(0)  # no window: no event is dropped
    assert [s.interval for s in refresh.schedules(cfg)] == [timedelta(minutes=cfg.refresh_interval_minutes)]
    (drift,) = specs["retrain-adapter"].triggers(cfg)
    assert drift.match.model_dump() == {"prefect.resource.id": "hybridops.unit_ns.behaviour"}
    assert [s.cron for s in specs["retrain-adapter"].schedules(cfg)] == [cfg.retrain_cron]
    assert [s.cron for s in specs["evaluate-behaviour"].schedules(cfg)] == [cfg.eval_cron]
    assert not specs["rebuild-index"].schedules(cfg) and not specs["rollback-adapter"].triggers(cfg)
    for spec in specs.values():
        options = spec.options(cfg)
        assert options["name"] == f"unit_ns-{spec.key}" and spec.description
        assert "namespace:unit_ns" in options["tags"]
    assert spec_for(cfg, "unit_ns-refresh-index").key == "refresh-index"
    with pytest.raises(KeyError, match="known"):
        spec_for(cfg, "nope")


def test_prefect_yaml_declares_the_same_deployments_as_serve() -> None:
    cfg = Settings()  # prefect.yaml is written for the default namespace
    declared = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    specs = {spec.name(cfg): spec for spec in deployment_specs(cfg)}
    assert set(declared) == set(specs)
    for name, spec in specs.items():
        entry = declared[name]
        path, attr = entry["entrypoint"].split(":")
        assert "hybridops." + path.removesuffix(".py").replace("/", ".") + ":" + attr == spec.flow_ref
        assert entry["description"] == spec.description
        assert entry["tags"] == spec.tags(cfg)
        schedules = [(s.interval.total_seconds() if s.interval else None, s.cron) for s in spec.schedules(cfg)]
        assert [(s.get("interval"), s.get("cron")) for s in entry.get("schedules", [])] == schedules
        triggers = spec.triggers(cfg)
        assert len(entry.get("triggers", [])) == len(triggers)
        for declared_trigger, trigger in zip(entry.get("triggers", []), triggers):
            assert set(declared_trigger["expect"]) == trigger.expect
            assert declared_trigger["match"] == trigger.match.model_dump()
            assert declared_trigger["within"] == 0 and declared_trigger["threshold"] == 1
            assert declared_trigger.get("parameters") == trigger.parameters


def test_kubernetes_job_template_declares_every_variable_it_uses() -> None:
    template = json.loads((REPO / "infra" / "k8s" / "base-job-template.json").read_text())
    used = set(re.findall(r"{{\s*(\w+)\s*}}", json.dumps(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"])
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": "hybridops-settings"}} in container["envFrom"]
    for name in ("worker.yaml", "settings.yaml", "weaviate-values.yaml", "prefect-server-values.yaml"):
        assert list(yaml.safe_load_all((REPO / "infra" / "k8s" / name).read_text()))


def test_run_params_parse_json_values_and_dotted_model_fields() -> None:
    assert parse_params(["params.full=true", "params.batch_size=8", "reason=manual check"]) == {
        "params": {"full": True, "batch_size": 8}, "reason": "manual check"}
    assert parse_params(["drifted_checks=[\"json_format\"]"]) == {"drifted_checks": ["json_format"]}
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["novalue"])


def test_every_flow_takes_one_described_params_model_so_the_ui_shows_a_form(cfg: Settings) -> None:
    from prefect.utilities.callables import parameter_schema

    for spec in deployment_specs(cfg):
        schema = parameter_schema(spec.flow()).model_dump()
        assert list(schema["properties"]) == ["params"], spec.key
        model = schema["definitions"][schema["properties"]["params"]["$ref"].rsplit("/", 1)[-1]]
        assert model["properties"] and all(field.get("description") for field in model["properties"].values()), spec.key


def test_retrain_params_accept_the_check_list_as_a_trigger_renders_it() -> None:
    from hybridops.flows.retrain_adapter import RetrainParams

    rendered = ['["json_format", "sources_valid"]', ["json_format", "sources_valid"], "json_format, sources_valid"]
    assert {tuple(RetrainParams(drifted_checks=value).drifted_checks) for value in rendered} == {
        ("json_format", "sources_valid")}
    assert RetrainParams(drifted_checks=None).drifted_checks == [] and RetrainParams().force is False
    with pytest.raises(ValueError):
        RetrainParams(steps=0)
