"""The transfer gate's plumbing without servers: settings, the side namespace, its landing, the small CI suite and
how a retrain outcome shows out-of-domain rates."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from hybridops.tasks.behaviour import adapters, retrain, transfer
from hybridops.tasks.behaviour.promotion import RegressionCase, decide
from hybridops.tasks.behaviour.retrain import RetrainOutcome, decision_markdown, transfer_rows
from hybridops.tasks.behaviour.suite import Suite, load_suite
from hybridops.tasks.behaviour.transfer import load_transfer_suite, prepare_transfer_index, transfer_settings
from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.object_store import FolderStore, landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.landing import landed_doc_ids
from tests.unit.test_adapters_registry import adapter_folder, register
from tests.unit.test_behaviour_stats import result
from tests.unit.test_state_repair import report

REPO = Path(__file__).resolve().parents[2]
SHIPPED_SUITE = REPO / "examples" / "transfer" / "behaviour_suite.yaml"
SHIPPED_CORPUS = REPO / "examples" / "transfer" / "corpus"
SMALL_SUITE = REPO / "tests" / "data" / "transfer_suite_small.yaml"


def test_transfer_settings_are_a_side_namespace_with_folders_under_home(tmp_path: Path) -> None:
    user = Settings(home=tmp_path / "home", namespace="team_a", landing="s3://bucket/docs", s3_bucket="bucket",
                    llm_model="some/model", search_k=7, _env_file=None)
    side = transfer_settings(user)
    assert side.namespace == "team_a_transfer"
    mirror = tmp_path / "home" / "transfer" / "team_a"  # per namespace: two namespaces on one home never mix
    assert side.landing_uri == str(mirror / "landing")  # a folder although the user's is S3
    assert side.store_uri == str(mirror / "store")
    assert (side.llm_model, side.search_k, side.weaviate_url) == (user.llm_model, 7, user.weaviate_url)
    assert user.namespace == "team_a" and user.landing_uri == "s3://bucket/docs"  # the user's are untouched


@pytest.mark.parametrize("off", ["transfer_suite", "transfer_corpus"])
def test_either_setting_unset_switches_the_gate_off(cfg: Settings, off: str) -> None:
    disabled = cfg.model_copy(update={off: None})
    assert transfer_settings(disabled) is None
    assert load_transfer_suite(disabled) is None


def test_a_namespace_too_long_for_its_side_namespace_fails_with_a_way_out() -> None:
    with pytest.raises(BadInputError, match="HYBRIDOPS_TRANSFER_SUITE="):
        transfer_settings(Settings(namespace="n" * 35, _env_file=None))


def test_empty_env_switches_the_gate_off_and_child_processes_keep_it_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYBRIDOPS_TRANSFER_SUITE", "")
    off = Settings()
    assert off.transfer_suite is None and off.transfer_corpus == Path("examples/transfer/corpus")
    for key, value in off.as_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == off


def test_the_shipped_defaults_resolve_from_the_checkout_wherever_we_run(
    cfg: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_transfer_suite(cfg) == load_suite(SHIPPED_SUITE)


def test_a_missing_transfer_corpus_fails_before_training(cfg: Settings, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="transfer corpus not found"):
        load_transfer_suite(cfg.model_copy(update={"transfer_corpus": tmp_path / "nowhere"}))


def test_prepare_mirrors_the_corpus_into_the_side_landing_then_refreshes_the_side_index(
    cfg: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    refreshed: list[tuple[str, bool]] = []
    monkeypatch.setattr(transfer, "run_refresh",
                        lambda side, allow_mass_delete: refreshed.append((side.namespace, allow_mass_delete)))
    side = prepare_transfer_index(cfg)
    zone = landing_zone(side)
    shipped = {p.relative_to(SHIPPED_CORPUS).as_posix() for p in SHIPPED_CORPUS.rglob("*") if p.is_file()}
    assert landed_doc_ids(zone) == shipped and {"hr/leave.md", "fleet/leave.md"} <= shipped
    zone.put("hr/retired.md", b"# gone from the shipped corpus\n")
    prepare_transfer_index(cfg)  # idempotent; a document the corpus no longer ships leaves the side landing
    assert landed_doc_ids(zone) == shipped
    assert refreshed == [("hybridops_transfer", True)] * 2  # a mirror: swapping the corpus is never blocked
    assert not Path(cfg.landing_uri).exists()  # the user's landing zone is never touched


def test_the_small_ci_suite_is_a_verbatim_subset_of_the_shipped_one() -> None:
    small, shipped = yaml.safe_load(SMALL_SUITE.read_text()), yaml.safe_load(SHIPPED_SUITE.read_text())
    by_id = {case["id"]: case for case in shipped["cases"]}
    assert all(case == by_id[case["id"]] for case in small["cases"])
    assert {k: v for k, v in small.items() if k not in ("name", "cases")} == \
           {k: v for k, v in shipped.items() if k not in ("name", "cases")}
    suite = load_suite(SMALL_SUITE)
    answerable = [c for c in suite.cases if not c.refusal]
    assert len(answerable) == 3 and len(suite.cases) == 5
    assert any(doc == "hr/leave.md" for c in answerable for doc in c.gold_docs)  # a twin file name (fleet/leave.md)


def test_the_outcome_shows_out_of_domain_rates_in_json_and_markdown() -> None:
    def cases(prefix: str, **passing: int) -> list:
        return [result(f"{prefix}{i}", {check: i < k for check, k in passing.items()}) for i in range(10)]

    challenger, champion = cases("c", json_format=10, sources_valid=9), cases("c", json_format=1, sources_valid=2)
    new, old = cases("t", json_format=8, cites_gold=4), cases("t", json_format=2, cites_gold=6)
    decision = decide(challenger, champion, ["json_format"], 0.05, new, old)
    rates, transfer_rates = {"json_format": 1.0, "sources_valid": 0.9}, {"json_format": 0.8, "cites_gold": 0.4}
    outcome = RetrainOutcome(version="v1", promoted=decision.promote, reason=decision.reason, challenger=rates,
                             transfer_challenger=transfer_rates, transfer_champion={"json_format": 0.2},
                             decision=decision)
    shown = outcome.cli_dict()
    assert shown["transfer_challenger"] == transfer_rates and shown["transfer_champion"] == {"json_format": 0.2}
    assert [r["verdict"] for r in transfer_rows(outcome)] == ["worse", "higher"]
    assert [(r["b"], r["c"], r["n"], r["p_worse"]) for r in transfer_rows(outcome)] == [(2, 0, 10, 0.25),
                                                                                        (0, 6, 10, 1.0)]
    markdown = decision_markdown(outcome)
    assert "out-of-domain (transfer suite)" in markdown
    assert "| cites_gold | 0.4 | 0.6 | -0.2 | 2 | 0 | 10 | 1.0 | 1.0 | 0.25 | 0.5 | False | worse |  | t4, t5 |" \
        in markdown
    assert "| json_format | 1.0 | 0.1 | 0.9 | 0 | 9 | 10 | 0.002 | 0.002 | 1.0 | 1.0 | True | improved |" in markdown
    assert markdown.index("in-domain") < markdown.index("out-of-domain (transfer suite)")
    assert "**MDD: 5 cases = 0.50 of the suite, all in one direction (10 paired cases, 1 test, alpha 0.05)**" \
        in markdown
    assert "**Regression set:** empty" in markdown
    assert "- cites_gold broken (out-of-domain): t4, t5" in markdown  # the cases behind the rejection


def test_the_markdown_names_the_cases_behind_a_promotion_and_the_regression_set() -> None:
    champion = [result(f"c{i}", {"json_format": i == 0}) for i in range(8)]
    challenger = [result(f"c{i}", {"json_format": True}) for i in range(8)]
    kept = [result("correction:1", {"json_format": True})]
    decision = decide(challenger, champion, ["json_format"], 0.05,
                      regression=[RegressionCase(case_id="c0", checks=["json_format"], origin="fixed"),
                                  RegressionCase(case_id="correction:1", checks=["json_format"], origin="correction")],
                      regression_challenger=kept, regression_champion=[result("correction:1", {"json_format": False})])
    assert decision.promote, decision.reason
    markdown = decision_markdown(RetrainOutcome(version="v2", promoted=True, reason=decision.reason,
                                                decision=decision))
    assert "- json_format fixed: c1, c2, c3, c4, c5, c6, c7" in markdown
    assert ("**Regression set:** holds: 2 cases (1 fixed by earlier promotions, 1 human corrections); challenger "
            "fails 0: none; champion fails 1: correction:1 (json_format)") in markdown


def test_a_resumed_challenger_is_judged_out_of_domain_too_with_user_models_and_side_retrieval(
    cfg: Settings, store: FolderStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Better in-domain, worse on the transfer suite: an undecided challenger picked up again is rejected."""
    pending = register(cfg, store, adapter_folder(tmp_path, b"undecided"))  # its run ended before deciding
    evals: list[tuple[str, str | None, str, str]] = []

    def evaluate(settings, suite, version, retrieve, reporter, purpose="eval"):
        evals.append((settings.namespace, version, purpose, retrieve))
        in_domain = purpose == "eval"
        done = report(version, (1.0 if version else 0.5) if in_domain else (0.2 if version else 0.8))
        return done if version else done.model_copy(update={"reused": done.n})  # the unchanged champion: cached

    examples = SimpleNamespace(fingerprint="f" * 64, train=[1, 2, 3], validation=[1], origins={}, augmented={},
                               counts={"rejected": 0, "train": 3, "validation": 1})
    stubs = {
        "build_data": lambda settings, include: examples, "load_held_out_suite": lambda settings, path: Suite(name="s"),
        "make_retriever": lambda settings: f"search {settings.namespace}",
        "train_challenger": lambda *a: pytest.fail("the undecided challenger must be decided, not retrained"),
        "prepare_transfer_index": transfer_settings,  # no Weaviate here
        "evaluate": evaluate,
        "save_replay_snapshot": lambda settings, data: None,
    }
    for name, stub in stubs.items():
        monkeypatch.setattr(retrain, name, stub)
    stages: list[str] = []
    reporter = SimpleNamespace(progress=lambda *a, **k: None, stage=stages.append)

    outcome = retrain._retrain(cfg, retrain.RetrainRequest(), retrain.direct, reporter)
    assert outcome.version == pending.version and not outcome.promoted
    assert outcome.reason == ("challenger transfers worse on json_format 0.80->0.20 (0 fixed, 6 broken, p=0.016; "
                              "broken: c2, c3, c4, c5 +2 more) (out-of-domain)")
    assert (outcome.challenger, outcome.champion) == ({"json_format": 1.0}, {"json_format": 0.5})
    assert (outcome.transfer_challenger, outcome.transfer_champion) == ({"json_format": 0.2}, {"json_format": 0.8})
    assert evals == [  # models always from the user's settings (store); transfer passages from the side index
        ("hybridops", pending.version, "eval", "search hybridops"), ("hybridops", None, "eval", "search hybridops"),
        ("hybridops", pending.version, "transfer eval", "search hybridops_transfer"),
        ("hybridops", None, "transfer eval", "search hybridops_transfer"),
    ]
    assert any(s.startswith("transfer:") for s in stages)
    n = outcome.decision.checks[0].n
    assert outcome.reused == {"challenger": f"0/{n}", "champion": f"{n}/{n}", "transfer challenger": f"0/{n}",
                              "transfer champion": f"{n}/{n}"}
    assert f"not generated again): challenger 0/{n}, champion {n}/{n}," in decision_markdown(outcome)
    assert adapters.champion_version(cfg, store) is None
    assert adapters.show(cfg, pending.version, store).decision["transfer_checks"][0]["verdict"] == "worse"
