"""Answering + behaviour-eval speed on the example corpus: `ask` latency p50/p90 and eval throughput (cases/min).

Needs a running stack (`hybridops up`; settings from HYBRIDOPS_* as usual). Indexes examples/corpus under a
fresh namespace, answers every suite question once with `ask` (warm model, interactions logged), runs the
behaviour suite with gap attribution, then drops the bench namespace's index.

Usage: python bench/behaviour_eval.py [--suite examples/behaviour_suite.yaml] [--asks 10]
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from hybridops.tasks.behaviour.answer import ask, load_answering_model
from hybridops.tasks.behaviour.suite import load_suite, run_suite
from hybridops.tasks.behaviour.drift import assess
from hybridops.tasks.behaviour.gap_attribution import attribute_gaps, gap_counts
from hybridops.tasks.knowledge.index import alias_name
from hybridops.tasks.knowledge.landing import land
from hybridops.tasks.core.model_runtime import available_cpus
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.knowledge.refresh import run_refresh
from hybridops.tasks.core.settings import load_settings
from hybridops.tasks.core.weaviate_connection import weaviate_session

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=ROOT / "examples" / "behaviour_suite.yaml")
    parser.add_argument("--asks", type=int, default=10, help="questions answered with `ask` for the latency figure")
    args = parser.parse_args()

    base = load_settings()
    namespace = "bench_" + uuid.uuid4().hex[:8]
    cfg = base.model_copy(update={"namespace": namespace, "home": base.home / namespace})
    suite = load_suite(args.suite)
    try:
        clock = time.perf_counter()
        land(landing_zone(cfg), [ROOT / "examples" / "corpus"])
        run_refresh(cfg)
        index_s = time.perf_counter() - clock

        clock = time.perf_counter()
        loaded = load_answering_model(cfg)
        load_s = time.perf_counter() - clock

        latencies = []
        for case in suite.cases[: args.asks]:
            latencies.append(ask(cfg, case.question, loaded=loaded).latency_ms)
            print(f"ask {len(latencies)}/{args.asks}: {latencies[-1]:.0f} ms", file=sys.stderr)

        report = run_suite(cfg, suite, loaded.model, loaded.tokenizer, loaded.adapter,
                           progress=lambda i, n, r: print(f"case {i}/{n} {r.case_id}: {'pass' if r.passed else 'FAIL ' + ','.join(r.failed_checks)}", file=sys.stderr))
        clock = time.perf_counter()
        gaps = attribute_gaps(cfg, suite, report, loaded.model, loaded.tokenizer)
        attribution_s = time.perf_counter() - clock
        drift = assess(cfg, report, gaps)
    finally:
        _drop_index(cfg)

    print(json.dumps({
        "cpus": available_cpus(),
        "adapter": loaded.adapter,
        "max_new_tokens": cfg.max_new_tokens,
        "index_corpus_s": round(index_s, 1),
        "model_load_s": round(load_s, 1),
        "ask_latency_ms": {"n": len(latencies), "p50": round(statistics.median(latencies), 1),
                           "p90": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 1)},
        "eval": {"cases": report.n, "seconds": round(report.seconds, 1), "cases_per_min": round(report.cases_per_min, 2),
                 "attribution_s": round(attribution_s, 1),
                 "cases_per_min_with_attribution": round(60 * report.n / (report.seconds + attribution_s), 2)},
        "pass_rates": {name: round(s.pass_rate, 3) for name, s in report.checks.items()},
        "gaps": gap_counts(gaps),
        "drift": drift.drifted,
    }))


def _drop_index(cfg) -> None:
    with weaviate_session(cfg) as client:
        try:
            client.alias.delete(alias_name=alias_name(cfg))
        except Exception:  # noqa: BLE001 — no alias was created
            pass
        for name in list(client.collections.list_all()):
            if name.startswith(cfg.collection_prefix + "_"):
                client.collections.delete(name)


if __name__ == "__main__":
    main()
