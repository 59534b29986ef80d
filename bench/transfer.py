"""Behaviour transfer: one adapter version on the in-domain suite and on an out-of-domain one, side by side.

The in-domain suite (examples/behaviour_suite.yaml over examples/corpus, the outdoor-gear retailer the
adapters are trained on) cannot tell whether the house behaviour transfers to documents the adapter never
saw. The out-of-domain suite (examples/transfer/: a logistics company's internal knowledge base, never used
for training, with twin file names such as hr/leave.md vs fleet/leave.md) can. Both are answered by the same
model, each from its own index in its own namespace on a private stack (temp home, free ports), stopped
afterwards.

Per suite: per-check pass rates with Wilson 95% intervals, the share of cases passing every check, golden-set
retrieval (recall@k, MRR: a miss there is a knowledge gap, not a behaviour one), false refusals (answerable
cases answered `"answer": null`; also counted where a gold document was retrieved) and invalid citations
(cited doc ids not among the retrieved ones; also counted where the id is a retrieved id shortened to its
file name, e.g. `leave.md` for `hr/leave.md`). `delta` = out-of-domain minus in-domain pass rate per check.

The adapter comes from your configured store (HYBRIDOPS_* settings as usual): by default the champion (the
base model when none was promoted), `--adapter VERSION` for one registry version, `--adapter base` for the
bare base model. Nothing is written to your store or index; no training, no promotion.

`--train` measures a fresh adapter instead: on the private stack, the in-domain corpus and the shipped training
examples (examples/training/) are landed and `retrain` runs as the retrain flow would (forced: train, evaluate
challenger and champion, transfer gate, decide); the challenger it trained is then measured, promoted or not.
The result adds the retrain's timings, its training-data composition and its decision.

Usage: python bench/transfer.py [--adapter VERSION|base | --train] [--json] [--cases]
Prints one JSON object on stdout with --json (a short table otherwise); progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path, PurePosixPath

from hybridops.tasks.behaviour.suite import (
    EvalReport,
    Suite,
    check_stats,
    load_suite,
    run_suite,
    wilson_interval,
)
from hybridops.tasks.core.errors import HybridopsError, describe, exit_code
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.core.settings import Settings, load_settings
from hybridops.tasks.knowledge.landing import land
from hybridops.tasks.knowledge.refresh import run_refresh
from hybridops.tasks.knowledge.retrieval_eval import run_retrieval_eval

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SUITES = {
    # name -> (corpus folder, behaviour suite, golden retrieval set, namespace on the private stack)
    "in_domain": (EXAMPLES / "corpus", EXAMPLES / "behaviour_suite.yaml", EXAMPLES / "golden_retrieval.jsonl",
                  "transfer_in"),
    "out_of_domain": (EXAMPLES / "transfer" / "corpus", EXAMPLES / "transfer" / "behaviour_suite.yaml",
                      EXAMPLES / "transfer" / "golden_retrieval.jsonl", "transfer_out"),
}
MAX_EXAMPLES = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--adapter", metavar="VERSION", default=None,
                        help="registry version to evaluate; 'base' for the bare base model (default: the champion, "
                             "or the base model when none was promoted)")
    which.add_argument("--train", action="store_true",
                        help="train a challenger on the shipped examples on the private stack, then measure it")
    parser.add_argument("--suites", choices=["both", *SUITES], default="both", help="which suite(s) to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--cases", action="store_true", help="include every case's reply and failed checks")
    args = parser.parse_args()
    try:
        result = run(args)
    except HybridopsError as exc:  # one line on stderr, {"error": ...} with --json, the kind's exit code
        progress(f"error: {describe(exc)}")
        if args.json:
            print(json.dumps({"error": describe(exc)}))
        sys.exit(exit_code(exc))
    print(json.dumps(result) if args.json else table(result))


def run(args: argparse.Namespace) -> dict:
    """Load the model, start the private stack, measure each chosen suite, stop the stack."""
    names = list(SUITES) if args.suites == "both" else [args.suites]
    suites = {name: load_suite(SUITES[name][1]) for name in names}  # a bad suite fails before anything starts

    from hybridops.infra.services import private_stack

    with private_stack("hybridops-transfer-", progress, s3_endpoint="", landing=None, store=None) as stack:
        def suite_settings(name: str) -> Settings:
            namespace = SUITES[name][3]
            return stack.model_copy(update={"namespace": namespace, "home": stack.home / namespace,
                                            "landing": None, "store": None})

        result: dict = {}
        clock = time.perf_counter()
        if args.train:
            trained = suite_settings("in_domain")
            result["retrain"] = retrain_on_shipped_examples(trained)
            model, tokenizer, version, warning = load_model(trained, result["retrain"]["version"])
        else:
            model, tokenizer, version, warning = load_model(load_settings(), args.adapter)
        progress(f"model {version or 'base'} ready in {time.perf_counter() - clock:.0f}s"
                 + (f" ({warning})" if warning else ""))
        result |= {"adapter": version, "adapter_warning": warning, "suites": {}}
        for name in names:
            corpus, _, golden, _namespace = SUITES[name]
            cfg = suite_settings(name)
            result["suites"][name] = measure(cfg, name, suites[name], corpus, golden, model, tokenizer, version,
                                             args.cases)
    if len(result["suites"]) == 2:
        result["delta"] = delta(result["suites"]["in_domain"], result["suites"]["out_of_domain"])
    return result


def retrain_on_shipped_examples(cfg: Settings) -> dict:
    """Land the in-domain corpus and the shipped training examples, run a forced retrain, return its evidence."""
    from hybridops.tasks.behaviour.retrain import RetrainRequest, retrain

    class Progress:  # a story Reporter on stderr
        def stage(self, message: str) -> None:
            progress(f"retrain: {message}")

        def progress(self, label: str, done: int, total: int | None, info: str = "") -> None:
            if done == total or done % 10 == 0:
                progress(f"retrain: {label} {done}/{total} {info}".rstrip())

    Path(cfg.landing_uri).mkdir(parents=True, exist_ok=True)
    landing = landing_zone(cfg)
    land(landing, [SUITES["in_domain"][0]])
    run_refresh(cfg)
    for path in sorted((EXAMPLES / "training").glob("*.jsonl")):
        landing.put(f"_training/{path.name}", path.read_bytes())
    clock = time.perf_counter()
    outcome = retrain(cfg, RetrainRequest(force=True), reporter=Progress())
    return {"retrain_s": round(time.perf_counter() - clock, 1)} | outcome.model_dump(
        mode="json", exclude={"loss_curve"})


def load_model(user: Settings, adapter: str | None) -> tuple[object, object, str | None, str | None]:
    """(model, tokenizer, version, warning) from the user's adapter store; heavy imports only here."""
    if adapter == "base":
        from hybridops.tasks.behaviour.adapter_loading import load_generation_base

        model, tokenizer = load_generation_base(user)
        return model, tokenizer, None, None
    if adapter:
        from hybridops.tasks.behaviour.adapter_loading import load_adapter_model

        model, tokenizer = load_adapter_model(user, adapter)  # verified against its manifest; refuses on mismatch
        return model, tokenizer, adapter, None
    from hybridops.tasks.behaviour.adapter_loading import load_champion

    champion = load_champion(user)
    return champion.model, champion.tokenizer, champion.version, champion.warning


def measure(cfg: Settings, name: str, suite: Suite, corpus: Path, golden: Path, model, tokenizer,
            version: str | None, with_cases: bool) -> dict:
    """Land and index one corpus in its namespace, score retrieval on its golden set, answer its suite."""
    Path(cfg.landing_uri).mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    landed = land(landing_zone(cfg), [corpus])
    refreshed = run_refresh(cfg)
    progress(f"{name}: {len(landed)} documents landed and indexed in {time.perf_counter() - clock:.0f}s "
             f"({len(refreshed.quarantined)} quarantined)")
    retrieval = run_retrieval_eval(cfg, golden=golden)

    def on_case(done: int, total: int, r) -> None:
        progress(f"{name} case {done}/{total} {r.case_id}: "
                 + ("pass" if r.passed else "FAIL " + ",".join(r.failed_checks)))

    report = run_suite(cfg, suite, model, tokenizer, version, progress=on_case)
    out = {
        "suite": suite.name,
        "corpus": str(corpus.relative_to(ROOT)),
        "documents": len(landed),
        "quarantined": [q.model_dump(mode="json") for q in refreshed.quarantined],
        "retrieval": {"k": retrieval.k, "questions": retrieval.applicable,
                      "recall_at_k": _round(retrieval.recall_at_k), "mrr": _round(retrieval.mrr),
                      "hit_rate": _round(retrieval.hit_rate)},
        "suite_s": round(report.seconds, 1),
    } | summarize(report, suite)
    if with_cases:
        out["case_results"] = [
            {"id": r.case_id, "passed": r.passed, "failed": r.failed_checks, "answer": r.answer,
             "sources": r.sources, "retrieved": r.retrieved, "gold": r.gold_docs, "format_ok": r.format_ok}
            for r in report.cases
        ]
    return out


def summarize(report: EvalReport, suite: Suite) -> dict:
    """Pass rates with Wilson CIs, false refusals and invalid citations of one suite run (pure: unit-testable)."""
    refusal = {c.id: c.refusal for c in suite.cases}
    answerable = [r for r in report.cases if r.origin == "golden" and not refusal.get(r.case_id, False)]
    null_answers = [r for r in answerable if r.format_ok and r.answer is None]
    passed = sum(r.passed for r in report.cases)

    invalid: list[dict] = []
    for r in report.cases:
        if not r.format_ok:
            continue
        retrieved = set(r.retrieved)
        for cited in dict.fromkeys(r.sources):
            if cited not in retrieved:  # a bare file name matching retrieved ids: shortened (maybe ambiguously)
                full = [d for d in r.retrieved if "/" not in cited and PurePosixPath(d).name == cited]
                invalid.append({"case": r.case_id, "cited": cited, "shortened_from": full or None})
    return {
        "cases": report.n,
        "all_checks_passed": _rate(passed, report.n),
        "checks": {name: {"passed": s.passed, "n": s.n, "pass_rate": round(s.pass_rate, 3),
                          "ci_low": round(s.ci_low, 3), "ci_high": round(s.ci_high, 3)}
                   for name, s in check_stats(report.cases).items()},
        "format_failures": sum(not r.format_ok for r in report.cases),
        "false_refusals": _rate(len(null_answers), len(answerable)) | {
            "with_gold_retrieved": sum(bool(set(r.gold_docs) & set(r.retrieved)) for r in null_answers),
            "case_ids": [r.case_id for r in null_answers],
        },
        "invalid_citations": {
            "count": len(invalid),
            "cases": len({i["case"] for i in invalid}),
            "shortened_to_file_name": sum(i["shortened_from"] is not None for i in invalid),
            "examples": invalid[:MAX_EXAMPLES],
        },
    }


def delta(inside: dict, outside: dict) -> dict:
    """Out-of-domain minus in-domain pass rate, per check both suites ran, plus the headline rates."""
    shared = sorted(set(inside["checks"]) & set(outside["checks"]))
    out = {name: round(outside["checks"][name]["pass_rate"] - inside["checks"][name]["pass_rate"], 3)
           for name in shared}
    for key in ("all_checks_passed", "false_refusals"):
        out[key] = round(outside[key]["rate"] - inside[key]["rate"], 3)
    return out


def table(result: dict) -> str:
    """A short human-readable view of the JSON result."""
    suites = result["suites"]
    lines = [f"adapter: {result['adapter'] or 'base model'}"
             + (f"  ({result['adapter_warning']})" if result["adapter_warning"] else "")]
    checks = sorted({c for s in suites.values() for c in s["checks"]})
    header = f"{'':26}" + "".join(f"{name:>24}" for name in suites)
    lines += [header, "-" * len(header)]

    def cell(stats: dict | None, key_rate: str = "pass_rate") -> str:
        if not stats:
            return f"{'-':>24}"
        return f"{stats['passed'] if 'passed' in stats else stats['count']}/{stats['n']} {stats[key_rate]:.2f} " \
               f"[{stats['ci_low']:.2f},{stats['ci_high']:.2f}]".rjust(24)

    for name in checks:
        lines.append(f"{name:26}" + "".join(cell(s["checks"].get(name)) for s in suites.values()))
    lines.append(f"{'all checks passed':26}" + "".join(cell(s["all_checks_passed"], "rate") for s in suites.values()))
    lines.append(f"{'false refusals':26}" + "".join(cell(s["false_refusals"], "rate") for s in suites.values()))
    lines.append(f"{'invalid citations':26}" + "".join(
        f"{s['invalid_citations']['count']} ({s['invalid_citations']['shortened_to_file_name']} shortened)".rjust(24)
        for s in suites.values()))
    lines.append(f"{'retrieval recall@k':26}" + "".join(f"{s['retrieval']['recall_at_k']}".rjust(24)
                                                        for s in suites.values()))
    if "retrain" in result:
        r = result["retrain"]
        train = r.get("train") or {}
        lines.append(f"retrain: {r['retrain_s']:.0f} s start to decision ({train.get('steps')} steps in "
                     f"{train.get('seconds', 0):.0f} s) · data {r['dataset']} · "
                     + ("PROMOTED" if r["promoted"] else "rejected") + f": {r['reason']}")
    return "\n".join(lines)


def _rate(count: int, n: int) -> dict:
    low, high = wilson_interval(count, n)
    return {"count": count, "n": n, "rate": round(count / n, 3) if n else 0.0,
            "ci_low": round(low, 3), "ci_high": round(high, 3)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
