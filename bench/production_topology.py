"""What replication costs: the refresh benchmark on the embedded stack and on the production topology.

Both stacks are private (temp homes, free ports) and started here, one after the other, on this machine:
- refresh of the benchmark corpus (bench/refresh_benchmark.py: 2,000 docstring documents): full refresh
  throughput, no-op and 1 % change, on one Weaviate node vs three nodes at replication factor 3 (QUORUM writes);
- hybrid search latency p50/p95 (QUORUM reads on the production topology);
- land -> searchable on the production topology: the watcher and refresh runs on the two process workers
  (bench/freshness_benchmark.py's probes: a document written, seconds until search returns it);
- with --dask-workers N: the same full refresh as a refresh_index flow run whose document batches go to a Dask
  LocalCluster of N worker processes (one torch thread each), against the in-process refresh above (one
  thread: the CPUs-1 default), so "does Dask across the workers help here" is a figure, not a guess.
Refreshes run in this process (the story the CLI runs), so the comparison is Weaviate's, not Prefect's; the
workers' own start cost shows in land -> searchable.

    python bench/production_topology.py [--docs 2000] [--queries 200] [--landings 10] [--dask-workers 2]
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.freshness_benchmark import measure, summary  # noqa: E402
from bench.refresh_benchmark import _drop, docstring_documents, land_corpus, log, run  # noqa: E402
from hybridops.infra.services import private_stack  # noqa: E402
from hybridops.infra.topology import private_production_stack  # noqa: E402
from hybridops.tasks.core.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--landings", type=int, default=10)
    parser.add_argument("--dask-workers", type=int, default=0, help="also time the full refresh on Dask")
    parser.add_argument("--skip-embedded", action="store_true", help="production topology only")
    args = parser.parse_args()

    result: dict = {"docs": args.docs}
    if not args.skip_embedded:
        with private_stack("hybridops-bench-embedded-", log, s3_endpoint="") as embedded:
            result["embedded"] = run(embedded, args.docs, args.queries)
    with private_production_stack("hybridops-bench-production-", log, s3_endpoint="") as production:
        started = time.perf_counter()
        result["production"] = run(production, args.docs, args.queries)
        result["production"]["replication_factor"] = production.weaviate_replicas
        result["production"]["consistency"] = production.weaviate_consistency
        log(f"production refresh benchmark in {time.perf_counter() - started:.0f}s")
        if args.dask_workers:
            result["production_dask"] = dask_full_refresh(production, args.docs, args.dask_workers)
            result["production_dask"]["vs_in_process"] = round(
                result["production_dask"]["embedded_per_s"] / result["production"]["full_refresh"]["embedded_per_s"], 3)
        prefix = f"_bench/freshness-{uuid.uuid4().hex[:6]}"
        warm_up = measure(production, 1, 180, prefix)  # the first landing builds the stack namespace's index
        samples = measure(production, args.landings, 90, prefix)
        result["land_to_searchable"] = summary(production, samples) | {"warm_up_s": warm_up[0]["seconds"],
                                                                       "runs_on": f"{production.workers} workers"}
    if args.skip_embedded:
        print(json.dumps(result))
        return
    emb, prod = result["embedded"], result["production"]
    result["comparison"] = {
        "full_refresh_embedded_per_s": {"embedded": emb["full_refresh"]["embedded_per_s"],
                                        "production_rf3": prod["full_refresh"]["embedded_per_s"]},
        "full_refresh_throughput_production_vs_embedded": round(
            prod["full_refresh"]["embedded_per_s"] / emb["full_refresh"]["embedded_per_s"], 3),
        "noop_refresh_s": {"embedded": emb["noop_refresh"]["seconds"], "production_rf3": prod["noop_refresh"]["seconds"]},
        "one_percent_change_s": {"embedded": emb["one_percent_change"]["seconds"],
                                 "production_rf3": prod["one_percent_change"]["seconds"]},
        "search_ms_p50_p95": {"embedded": [emb["search_ms"]["p50"], emb["search_ms"]["p95"]],
                              "production_quorum": [prod["search_ms"]["p50"], prod["search_ms"]["p95"]]},
        "land_to_searchable_s_p50_p95": [result["land_to_searchable"]["p50_s"], result["land_to_searchable"]["p95_s"]],
    }
    print(json.dumps(result))


def dask_full_refresh(base: Settings, n_docs: int, workers: int) -> dict:
    """The full refresh of the benchmark corpus in a fresh namespace, as a refresh_index flow run on this stack's
    Prefect server with its batches on a LocalCluster of `workers` processes (their start and model loads count)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridops.flows.orchestration.serving import export_settings
    from hybridops.flows.refresh_index import RefreshParams, refresh_index
    home = Path(tempfile.mkdtemp(prefix="hybridops-bench-dask-"))
    cfg = Settings(**(base.model_dump() | {"home": home, "namespace": "benchdask" + uuid.uuid4().hex[:6],
                                           "landing": None, "store": None, "dask_workers": workers}))
    try:
        land_corpus(cfg, docstring_documents(n_docs), home / "corpus")
        export_settings(cfg)  # the flow rebuilds its settings from the environment
        with temporary_settings(updates={PREFECT_API_URL: cfg.prefect_api_url}):
            started = time.perf_counter()
            report = refresh_index(RefreshParams())  # as a worker runs it: HYBRIDOPS_DASK_WORKERS sends batches to Dask
            seconds = time.perf_counter() - started
        log(f"full refresh on Dask ({workers} workers): {report.chunks.embedded} embeddings in {seconds:.1f}s")
        return {"workers": workers, "seconds": round(seconds, 2), "embedded": report.chunks.embedded,
                "embedded_per_s": round(report.chunks.embedded / seconds, 2), "batch_docs": cfg.refresh_batch_docs}
    finally:
        _drop(cfg)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
