"""Decision quality: how often is a failing case routed to the action that really fixes it?

Labelled scenarios are built on the shipped corpora (examples/corpus and examples/transfer/corpus), each in
its own namespace on a private stack (temp home, free ports, folders for landing and store), by injecting
one known fault per gold document:
- never_landed     the document is held back                          -> missing_document (never landed)
- deleted          landed, indexed, then removed and refreshed        -> missing_document (deleted)
- quarantined      its first landed version breaks the contract       -> missing_document (quarantined)
- bad_update       indexed, then an update that breaks the contract   -> missing_document (quarantined; the old
                                                                         version is still searchable)
- pending          landed after the last refresh                      -> missing_document (not yet indexed)
- distracted       indexed, but five documents that repeat its questions' wording (without the answer) are
                   landed too, so retrieval returns them instead      -> retrieval_miss
- clean            nothing injected; the champion is the base model, which never writes the house format
                   even from the gold passages (a behaviour regression) -> behaviour
Refusal cases (no answer in the corpus) are labelled behaviour. The cases are both suites plus the golden
retrieval questions (checks: json_format, sources_valid, cites_gold). A scenario's precondition is checked
from what retrieval returned (a distracted case whose gold document was still retrieved, or a clean one whose
gold was not, did not realise its fault): such cases are reported as unrealised, not scored.

It runs the real evaluation story (tasks/behaviour/evaluation.py: suite, gap attribution with oracle re-asks,
drift) and prints routing accuracy per label and overall with Wilson 95% intervals, the confusion matrix,
whether each missing document's reason is the injected one, and how many knowledge-side cases counted toward
retraining (target 0).

Usage: python bench/decision_quality.py [--corpora in_domain,out_of_domain] [--json] [--cases]
Progress on stderr; one JSON object on stdout with --json (tables otherwise).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from hybridops.tasks.behaviour.evaluation import EvalRequest, evaluate
from hybridops.tasks.behaviour.gap_attribution import KNOWLEDGE_ROUTES, ROUTES
from hybridops.tasks.behaviour.suite import Case, load_suite, wilson_interval
from hybridops.tasks.core.errors import HybridopsError, describe, exit_code
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.landing import remove
from hybridops.tasks.knowledge.refresh import run_refresh
from hybridops.tasks.knowledge.retrieval_eval import load_golden

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CORPORA = {  # name -> (corpus folder, behaviour suite, golden retrieval set)
    "in_domain": (EXAMPLES / "corpus", EXAMPLES / "behaviour_suite.yaml", EXAMPLES / "golden_retrieval.jsonl"),
    "out_of_domain": (EXAMPLES / "transfer" / "corpus", EXAMPLES / "transfer" / "behaviour_suite.yaml",
                      EXAMPLES / "transfer" / "golden_retrieval.jsonl"),
}
FAULTS = ("never_landed", "deleted", "quarantined", "bad_update", "pending", "distracted")
PER_FAULT = 2  # gold documents per fault and corpus; the rest stay clean
DISTRACTORS = 5  # per distracted question: as many as the passages an answer sees (search_k)
EXPECTED = {  # label -> (route, the missing document's status)
    "never_landed": ("missing_document", "never_landed"), "deleted": ("missing_document", "deleted"),
    "quarantined": ("missing_document", "quarantined"), "bad_update": ("missing_document", "quarantined"),
    "pending": ("missing_document", "not_yet_indexed"), "distracted": ("retrieval_miss", None),
    "clean": ("behaviour", None), "refusal": ("behaviour", None),
}
GOLDEN_CHECKS = ["json_format", "sources_valid", "cites_gold"]


def progress(message: str) -> None:
    print(f"[decision_quality] {message}", file=sys.stderr, flush=True)


def cases_of(corpus: str) -> list[Case]:
    """The corpus' behaviour suite plus its golden retrieval questions that the suite does not ask."""
    _, suite_path, golden_path = CORPORA[corpus]
    cases = list(load_suite(suite_path).cases)
    asked = {case.question.strip().lower() for case in cases}
    for number, question in enumerate(load_golden(golden_path), start=1):
        if question.question.strip().lower() not in asked:
            cases.append(Case(id=f"golden-{number}", question=question.question, gold_docs=question.gold_doc_ids,
                              checks=GOLDEN_CHECKS))
    return cases


def assign_faults(cases: list[Case]) -> dict[str, str]:
    """Gold document -> injected fault, PER_FAULT documents per fault, chosen by a stable hash of the id."""
    golds = sorted({doc for case in cases for doc in case.gold_docs},
                   key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    faults = {}
    for index, doc in enumerate(golds):
        slot = index // PER_FAULT
        faults[doc] = FAULTS[slot] if slot < len(FAULTS) else "clean"
    return faults


def label(case: Case, faults: dict[str, str]) -> str | None:
    """The case's ground truth: its gold documents' one fault (None: mixed faults, not scored)."""
    if case.refusal:
        return "refusal"
    kinds = {faults.get(doc, "clean") for doc in case.gold_docs}
    return kinds.pop() if len(kinds) == 1 else None


def corrupt(doc_id: str) -> bytes:
    """A version of a document that its contract rejects (malformed JSON, or bytes that are not UTF-8)."""
    return b'{"title": "broken", "text": ' if doc_id.endswith(".json") else b"\xff\xfe\x00not text\x00\xff"


def distractor(question: str, number: int) -> bytes:
    return (f"# Questions we are asked ({number})\n\n{question} {question} People ask this often: {question} "
            f"This page only collects questions; it does not answer them.\n").encode()


def build_scenario(cfg: Settings, corpus: str, cases: list[Case], faults: dict[str, str]) -> dict[str, int]:
    """Land and index the corpus with every fault injected, in the order that produces each one."""
    folder = CORPORA[corpus][0]
    landing = landing_zone(cfg)
    Path(cfg.landing_uri).mkdir(parents=True, exist_ok=True)
    files = {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}
    held_back = {"never_landed", "quarantined", "pending"}
    for doc_id, path in files.items():
        if faults.get(doc_id, "clean") not in held_back:
            landing.put(doc_id, path.read_bytes())
    run_refresh(cfg)
    for doc_id, fault in faults.items():
        if fault == "deleted":
            remove(landing, doc_id)
        elif fault in {"quarantined", "bad_update"}:
            landing.put(doc_id, corrupt(doc_id))
    distractors = 0
    for case in cases:
        if case.gold_docs and all(faults[d] == "distracted" for d in case.gold_docs):
            for number in range(DISTRACTORS):
                landing.put(f"faq/{case.id}-{number}.md", distractor(case.question, number))
                distractors += 1
    run_refresh(cfg, allow_mass_delete=True)
    for doc_id, fault in faults.items():
        if fault == "pending":
            landing.put(doc_id, files[doc_id].read_bytes())
    return {"documents": len(files), "distractors": distractors,
            **Counter(fault for fault in faults.values())}


def realised(case_label: str, retrieved: list[str], gold: list[str]) -> bool:
    """Did the injected fault happen as built? (retrieval decides it for the distracted and clean cases)"""
    hit = bool(set(retrieved) & set(gold))
    if case_label == "distracted":
        return not hit
    if case_label == "clean":
        return hit
    return True


def run_corpus(stack: Settings, corpus: str) -> list[dict]:
    """One corpus: build its scenario in its own namespace, run the eval story, label every case."""
    cfg = stack.model_copy(update={"namespace": f"decisions_{corpus}", "home": stack.home / corpus,
                                   "landing": None, "store": None, "eval_sample_interactions": 0,
                                   "transfer_suite": None})
    cases = cases_of(corpus)
    faults = assign_faults(cases)
    clock = time.perf_counter()
    built = build_scenario(cfg, corpus, cases, faults)
    progress(f"{corpus}: scenario built in {time.perf_counter() - clock:.0f}s: {built}")
    suite_file = cfg.home / "decision-suite.yaml"
    suite_file.write_text(yaml.safe_dump({"name": f"decisions-{corpus}",
                                          "cases": [c.model_dump(exclude_defaults=True) for c in cases]}))
    clock = time.perf_counter()
    record = evaluate(cfg, EvalRequest(suite=suite_file, sample=0)).record
    progress(f"{corpus}: {record.n} cases evaluated and routed in {time.perf_counter() - clock:.0f}s")
    by_id = {c.id: c for c in cases}
    rows = []
    for summary in record.cases:
        case = by_id[summary.case_id]
        truth = label(case, faults)
        statuses = [d["status"] for d in summary.gap_documents]
        rows.append({
            "corpus": corpus, "case": summary.case_id, "label": truth,
            "realised": truth is not None and realised(truth, summary.retrieved, summary.gold_docs),
            "expected": EXPECTED[truth][0] if truth else None, "route": summary.gap,
            "expected_status": EXPECTED[truth][1] if truth else None, "statuses": statuses,
            "passed": summary.passed,
        })
    return rows


def score(rows: list[dict]) -> dict:
    """Accuracy per label and overall (Wilson 95%), the confusion matrix, reason accuracy, retrain leaks."""
    scored = [r for r in rows if r["realised"]]
    correct = [r for r in scored if r["route"] == r["expected"]]

    def rate(hits: int, n: int) -> dict:
        low, high = wilson_interval(hits, n)
        return {"correct": hits, "n": n, "accuracy": round(hits / n, 4) if n else None,
                "ci95": [round(low, 4), round(high, 4)]}

    per_label = {name: rate(sum(r["route"] == r["expected"] for r in mine), len(mine))
                 for name in EXPECTED if (mine := [r for r in scored if r["label"] == name])}
    per_route = {route: rate(sum(r["route"] == route for r in mine), len(mine))
                 for route in ROUTES if (mine := [r for r in scored if r["expected"] == route])}
    confusion = {expected: dict(Counter(r["route"] or "unrouted" for r in scored if r["expected"] == expected))
                 for expected in ROUTES}
    with_reason = [r for r in scored if r["expected_status"]]
    reasons_right = sum(r["statuses"] == [r["expected_status"]] for r in with_reason)
    knowledge = [r for r in scored if r["expected"] in KNOWLEDGE_ROUTES]
    leaked = [r["case"] for r in knowledge if r["route"] not in KNOWLEDGE_ROUTES | {"retrieval_noise"}]
    return {
        "overall": rate(len(correct), len(scored)), "per_label": per_label, "per_route": per_route,
        "confusion": confusion, "missing_document_reason": rate(reasons_right, len(with_reason)),
        "knowledge_cases_counted_toward_retraining": len(leaked), "leaked_cases": leaked,
        "unrealised": [f"{r['corpus']}:{r['case']} ({r['label']})" for r in rows if r["label"] and not r["realised"]],
        "unlabelled": [f"{r['corpus']}:{r['case']}" for r in rows if r["label"] is None],
        "misrouted": [f"{r['corpus']}:{r['case']} {r['label']} -> {r['route']}" for r in scored
                      if r["route"] != r["expected"]],
    }


def tables(result: dict) -> str:
    s = result["score"]
    o = s["overall"]
    lines = [f"routing accuracy {o['accuracy']:.3f} ({o['correct']}/{o['n']}, 95% CI {o['ci95'][0]:.3f}-"
             f"{o['ci95'][1]:.3f}); knowledge-side cases counted toward retraining: "
             f"{s['knowledge_cases_counted_toward_retraining']}", "", "per label:"]
    for name, r in s["per_label"].items():
        lines.append(f"  {name:13} {r['accuracy']:.3f} ({r['correct']}/{r['n']}, CI {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f})")
    lines += ["", "confusion (expected -> routed):"]
    for expected, row in s["confusion"].items():
        lines.append(f"  {expected:17} {row}")
    r = s["missing_document_reason"]
    lines += ["", f"missing_document reason right: {r['correct']}/{r['n']}",
              f"unrealised: {s['unrealised'] or 'none'}", f"misrouted: {s['misrouted'] or 'none'}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="in_domain,out_of_domain", help="comma-separated: " + ", ".join(CORPORA))
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--cases", action="store_true", help="include every case's label and route")
    args = parser.parse_args()
    corpora = [name.strip() for name in args.corpora.split(",") if name.strip()]
    unknown = sorted(set(corpora) - set(CORPORA))
    if unknown:
        parser.error(f"unknown corpora {unknown}; known: {sorted(CORPORA)}")
    from hybridops.infra.services import private_stack

    clock = time.perf_counter()
    try:
        with private_stack("hybridops-decisions-", progress, s3_endpoint="", landing=None, store=None) as stack:
            rows = [row for corpus in corpora for row in run_corpus(stack, corpus)]
    except HybridopsError as exc:
        progress(f"error: {describe(exc)}")
        if args.json:
            print(json.dumps({"error": describe(exc)}))
        sys.exit(exit_code(exc))
    result = {"corpora": corpora, "model": "base (a behaviour regression: no house format)",
              "seconds": round(time.perf_counter() - clock, 1), "score": score(rows)}
    if args.cases:
        result["cases"] = rows
    print(json.dumps(result, indent=2) if args.json else tables(result))


if __name__ == "__main__":
    main()
