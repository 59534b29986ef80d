"""Behaviour-eval throughput on the example corpus: cases/min with oracle re-asks, batched vs sequential.

Indexes examples/corpus under a fresh namespace, retrieves every suite question once (memoised, so every
mode answers from the same context), then per mode runs the behaviour suite and its gap attribution (oracle
re-asks included) with the base model or champion, and drops the bench namespace's index at the end.
Modes: `batched` (settings.eval_batch_tokens, or --batch-tokens) and `sequential` (one prompt at a time,
eval_batch_tokens=0). With both, it also reports whether the two gave identical replies case by case.

Needs a running stack (`hybridops up`; settings from HYBRIDOPS_* as usual), or --own-stack to start a private
one (temp home, free ports) and stop exactly it afterwards. Optional --asks N measures `ask` latency first.

Usage: python bench/eval_throughput.py [--mode both|batched|sequential] [--own-stack] [--asks 0]
Prints one JSON object on stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from hybridops.tasks.behaviour.answer import ask, load_answering_model
from hybridops.tasks.behaviour.gap_attribution import (
    attribute_gaps,
    gap_counts,
    needs_oracle,
)
from hybridops.tasks.behaviour.llm import chat_prompt_ids
from hybridops.tasks.behaviour.prompting import build_messages
from hybridops.tasks.behaviour.suite import load_suite, make_retriever, run_suite
from hybridops.tasks.core.model_runtime import available_cpus
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.core.settings import Settings, load_settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.index import drop_all_generations
from hybridops.tasks.knowledge.landing import land
from hybridops.tasks.knowledge.refresh import run_refresh

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=ROOT / "examples" / "behaviour_suite.yaml")
    parser.add_argument("--mode", choices=["both", "batched", "sequential"], default="both")
    parser.add_argument("--batch-tokens", type=int, default=None, help="override settings.eval_batch_tokens")
    parser.add_argument("--asks", type=int, default=0, help="questions answered with `ask` for a latency figure")
    parser.add_argument("--own-stack", action="store_true", help="start a private stack (temp home, free ports)")
    args = parser.parse_args()

    with own_stack() if args.own_stack else contextlib.nullcontext(load_settings()) as base:
        namespace = "bench_" + uuid.uuid4().hex[:8]
        cfg = base.model_copy(update={"namespace": namespace, "home": base.home / namespace})
        if args.batch_tokens is not None:
            cfg = cfg.model_copy(update={"eval_batch_tokens": args.batch_tokens})
        result = {"cpus": available_cpus(), "max_new_tokens": cfg.max_new_tokens}
        try:
            result |= measure(cfg, load_suite(args.suite), args.mode, args.asks)
        finally:
            _drop_index(cfg)
    print(json.dumps(result))


def measure(cfg: Settings, suite, mode: str, asks: int) -> dict:
    clock = time.perf_counter()
    land(landing_zone(cfg), [ROOT / "examples" / "corpus"])
    run_refresh(cfg)
    out: dict = {"index_corpus_s": round(time.perf_counter() - clock, 1)}

    clock = time.perf_counter()
    loaded = load_answering_model(cfg)
    out |= {"adapter": loaded.adapter, "model_load_s": round(time.perf_counter() - clock, 1)}

    retrieve = make_retriever(cfg)
    clock = time.perf_counter()
    for case in suite.cases:
        retrieve(case.question)
    out["retrieval_s"] = round(time.perf_counter() - clock, 1)

    if asks:
        latencies = [ask(cfg, case.question, loaded=loaded, retrieve=retrieve, log=False).latency_ms
                     for case in suite.cases[:asks]]
        out["ask_latency_ms"] = {"n": len(latencies), "p50": round(statistics.median(latencies), 1),
                                 "p90": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 1)}

    tokenizer = loaded.tokenizer
    prompt_tokens = [len(chat_prompt_ids(tokenizer, build_messages(c.question, retrieve(c.question)))) for c in suite.cases]
    out["prompt_tokens"] = {"mean": round(statistics.mean(prompt_tokens)), "max": max(prompt_tokens)}
    modes = ["batched", "sequential"] if mode == "both" else [mode]
    replies = {}
    for name in modes:
        run_cfg = cfg.model_copy(update={"eval_batch_tokens": 0}) if name == "sequential" else cfg
        out[name], replies[name] = run_mode(run_cfg, suite, loaded, retrieve, name)
    if len(replies) == 2:
        differing = sorted(k for k in replies["batched"] if replies["batched"][k] != replies["sequential"].get(k))
        out["identical_replies"] = not differing
        out["differing"] = differing
        generated = [len(tokenizer.encode(raw, add_special_tokens=False)) for raw in replies["batched"].values()]
        out["reply_tokens"] = {"mean": round(statistics.mean(generated)), "max": max(generated)}
        out["speedup"] = round(out["batched"]["cases_per_min"] / out["sequential"]["cases_per_min"], 2)
    return out


def run_mode(cfg: Settings, suite, loaded, retrieve, name: str) -> tuple[dict, dict[str, str]]:
    """One suite run + gap attribution; cases/min counts the suite's cases over both (retrieval is warm)."""
    def progress(done, total, r):
        print(f"{name} case {done}/{total} {r.case_id}: {'pass' if r.passed else 'FAIL'}", file=sys.stderr)

    report = run_suite(cfg, suite, loaded.model, loaded.tokenizer, loaded.adapter, retrieve=retrieve,
                       progress=progress)
    clock = time.perf_counter()
    gaps = attribute_gaps(cfg, suite, report, loaded.model, loaded.tokenizer)
    attribution_s = time.perf_counter() - clock
    total_s = report.seconds + attribution_s
    reasks = sum(needs_oracle(r) for r in report.cases)
    print(f"{name}: suite {report.seconds:.1f}s, {reasks} re-asks {attribution_s:.1f}s", file=sys.stderr)
    stats = {
        "eval_batch_tokens": cfg.eval_batch_tokens,
        "cases": report.n,
        "oracle_reasks": reasks,
        "suite_s": round(report.seconds, 1),
        "attribution_s": round(attribution_s, 1),
        "cases_per_min": round(60 * report.n / total_s, 2),
        "cases_per_min_suite_only": round(report.cases_per_min, 2),
        "pass_rates": {check: round(s.pass_rate, 3) for check, s in report.checks.items()},
        "gaps": gap_counts(gaps),
    }
    return stats, {r.case_id: r.raw for r in report.cases}


@contextlib.contextmanager
def own_stack() -> Iterator[Settings]:
    """A private stack (Weaviate, MinIO, Prefect) under a temp home on free ports; stops exactly it after."""
    from hybridops.infra.services import down, private_stack_settings, up

    with tempfile.TemporaryDirectory(prefix="hybridops-bench-") as home:
        settings = private_stack_settings(Path(home), s3_bucket="hybridops-bench")
        clock = time.perf_counter()
        try:
            up(settings)
            print(f"private stack up in {time.perf_counter() - clock:.0f}s under {home}", file=sys.stderr)
            yield settings
        finally:
            down(settings)


def _drop_index(cfg: Settings) -> None:
    with weaviate_session(cfg) as client:
        drop_all_generations(client, cfg)


if __name__ == "__main__":
    main()
