"""Routing failing cases to the action that fixes them, on plain data: document standing and the classifier."""

from __future__ import annotations

import pytest

from hybridops.tasks.behaviour.gap_attribution import (
    NOT_BEHAVIOUR,
    classify,
    gap_counts,
    needs_oracle,
    route_summary,
)
from hybridops.tasks.behaviour.suite import CaseResult, CheckOutcome
from hybridops.tasks.core.object_store import FolderStore
from hybridops.tasks.knowledge.document_status import (
    DocumentStatus,
    classify_document,
    deleted_at,
    record_deletions,
)

FAILING = {"json_format": True, "cites_gold": False}


def result(checks: dict[str, bool], gold=(), retrieved=(), case_id="c") -> CaseResult:
    return CaseResult(
        case_id=case_id, question="q", origin="golden", gold_docs=list(gold), retrieved=list(retrieved),
        answer=None, sources=[], format_ok=True, raw="", checks={k: CheckOutcome(passed=v) for k, v in checks.items()},
        latency_ms=1.0,
    )


def status(doc_id: str, kind: str, **extra) -> DocumentStatus:
    return DocumentStatus(doc_id=doc_id, status=kind, **extra)


# where a document stands ---------------------------------------------------------------------------------

def test_a_document_in_neither_place_never_landed_unless_a_refresh_deleted_it():
    assert classify_document("a.md", None, None, None, None).status == "never_landed"
    gone = classify_document("a.md", None, None, None, "2026-12-01T10:00:00+00:00")
    assert gone.status == "deleted" and gone.deleted_at.startswith("2026-12-01") and gone.missing
    assert "restore a.md" in gone.action


def test_the_landed_version_must_be_the_indexed_one():
    assert classify_document("a.md", "v2", {"v2"}, None, None).status == "indexed"
    pending = classify_document("a.md", "v2", None, None, None)
    assert pending.status == "not_yet_indexed" and not pending.stale_version_indexed
    assert "hybridops refresh" in pending.action
    stale = classify_document("a.md", "v2", {"v1"}, None, None)
    assert stale.status == "not_yet_indexed" and stale.stale_version_indexed and stale.missing


def test_a_quarantined_current_version_names_its_reasons_and_entry_even_with_an_old_version_indexed():
    held = ("v2", ["invalid_front_matter: date 2024-13-45"], "quarantine/documents/a~1/reason.json")
    got = classify_document("a.md", "v2", {"v1"}, held, None)
    assert got.status == "quarantined" and got.stale_version_indexed
    assert got.quarantine_reasons == ["invalid_front_matter: date 2024-13-45"]
    assert got.quarantine_key.endswith("reason.json") and "invalid_front_matter" in got.action
    # an entry about an older version says nothing about the one landed now
    assert classify_document("a.md", "v3", {"v1"}, held, None).status == "not_yet_indexed"


def test_a_document_removed_from_landing_is_still_indexed_until_the_next_refresh():
    got = classify_document("a.md", None, {"v1"}, None, "2026-12-01T10:00:00+00:00")
    assert got.status == "indexed" and not got.missing


def test_deletion_notes_round_trip_in_a_real_folder_store(tmp_path):
    store = FolderStore(tmp_path)
    assert deleted_at(store, "hr/leave.md") is None
    record_deletions(store, ["hr/leave.md", "../odd name.md"])
    assert deleted_at(store, "hr/leave.md") and deleted_at(store, "../odd name.md")
    assert deleted_at(store, "fleet/leave.md") is None  # same file name, other folder: no note


def test_folder_store_info_reads_one_key(tmp_path):
    store = FolderStore(tmp_path)
    store.put("hr/leave.md", b"# Leave\n")
    info = store.info("hr/leave.md")
    assert info.key == "hr/leave.md" and info.size == 8
    assert info.version == next(i.version for i in store.list() if i.key == "hr/leave.md")
    assert store.info("hr/missing.md") is None and store.info("hr") is None and store.info("../x") is None


# the classifier ------------------------------------------------------------------------------------------

def test_every_route_with_its_action():
    gold = ["a.md"]
    never = classify(result(FAILING, gold, ["b.md"]), False, statuses={"a.md": status("a.md", "never_landed")})
    assert never.kind == "missing_document" and never.knowledge_side and "land a.md" in never.action
    assert [d.doc_id for d in never.documents] == ["a.md"] and "never a retrain" in never.action

    miss = classify(result(FAILING, gold, ["b.md"]), False, statuses={"a.md": status("a.md", "indexed")})
    assert miss.kind == "retrieval_miss" and "--sweep" in miss.action and miss.missing_gold == ["a.md"]

    found = result(FAILING, gold, ["a.md", "b.md"])
    noise = classify(found, False, oracle=result({"json_format": True, "cites_gold": True}, gold, ["a.md"]))
    assert noise.kind == "retrieval_noise" and not noise.knowledge_side
    bad = classify(found, False, oracle=result({"json_format": False}, gold, ["a.md"]))
    assert bad.kind == "behaviour" and "retrain" in bad.action and bad.oracle_failed_checks == ["json_format"]
    assert {"missing_document", "retrieval_miss", "retrieval_noise"} == NOT_BEHAVIOUR


def test_a_retrieved_but_stale_or_quarantined_gold_is_missing_without_an_oracle_reask():
    found = result(FAILING, ["a.md"], ["a.md"])
    held = {"a.md": status("a.md", "quarantined", stale_version_indexed=True, quarantine_reasons=["too_deep"])}
    assert not needs_oracle(found, held)
    got = classify(found, False, statuses=held)
    assert got.kind == "missing_document" and "too_deep" in got.action


def test_one_missing_gold_of_two_still_gets_the_oracle():
    case = result(FAILING, ["a.md", "b.md"], ["b.md"])
    statuses = {"a.md": status("a.md", "never_landed"), "b.md": status("b.md", "indexed")}
    assert needs_oracle(case, statuses)
    got = classify(case, False, oracle=result({"json_format": False}, ["a.md", "b.md"], ["b.md"]), statuses=statuses)
    assert got.kind == "behaviour" and [d.doc_id for d in got.documents] == ["a.md"]  # the evidence is kept


def test_refusals_and_unattributed_cases():
    assert classify(result({"refuses_without_context": False}), True).kind == "behaviour"
    assert classify(result({"json_format": False}), False) is None  # no gold docs: a sampled interaction
    assert classify(result({"json_format": True}, ["a.md"]), False) is None  # passed


def test_route_summary_lists_cases_documents_and_actions_per_route():
    gaps = [
        classify(result(FAILING, ["a.md"], [], case_id="one"), False, statuses={"a.md": status("a.md", "never_landed")}),
        classify(result(FAILING, ["a.md"], [], case_id="two"), False, statuses={"a.md": status("a.md", "never_landed")}),
        classify(result(FAILING, ["c.md"], ["x.md"], case_id="three"), False),
    ]
    rows = {row.route: row for row in route_summary(gaps)}
    assert list(rows) == ["missing_document", "retrieval_miss", "retrieval_noise", "behaviour"]
    assert rows["missing_document"].cases == ["one", "two"] and rows["missing_document"].documents == ["a.md"]
    assert len(rows["missing_document"].actions) == 1  # the same action once
    assert rows["retrieval_miss"].documents == ["c.md"] and not rows["retrieval_miss"].counts_toward_retraining
    assert rows["behaviour"].count == 0 and rows["behaviour"].counts_toward_retraining
    assert gap_counts(gaps) == {"missing_document": 2, "retrieval_miss": 1, "retrieval_noise": 0, "behaviour": 0}


@pytest.mark.parametrize("kind", ["never_landed", "deleted", "quarantined", "not_yet_indexed"])
def test_every_missing_status_has_an_action_that_is_not_a_retrain(kind):
    got = status("a.md", kind, deleted_at="t", quarantine_reasons=["r"])
    assert got.missing and got.action and "retrain" not in got.action
