"""Refresh benchmark on >= 2,000 real English documents (docstrings of the installed Python code, offline).

Measured in one run against the configured Weaviate (HYBRIDOPS_* settings; a private namespace and home):
- full refresh throughput / raw embedding throughput of the same model on the same chunks (target >= 0.85)
- no-op refresh: embeddings (target 0) and time as a share of the full refresh (target <= 3%)
- 1% of the documents changed: time as a share of the full refresh (target <= 5%)
- search latency p50/p95 (hybrid, through the alias)

Usage: python bench/refresh_benchmark.py [--docs 2000] [--queries 200]
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

from hybridops.tasks.core.settings import Settings, load_settings


def docstring_documents(limit: int, max_chars: int = 4_000) -> dict[str, str]:
    """One markdown document per source file: its module, class and function docstrings as sections."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    docs: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if any(part in {"test", "tests", "idlelib", "site-packages"} for part in rel.parts[:-1]):
                continue
            body = _sections(path, max_chars)
            if body:
                doc_id = f"{root.name}/{rel.with_suffix('.md').as_posix()}"
                docs[doc_id] = body
                if len(docs) >= limit:
                    return docs
    return docs


def _sections(path: Path, max_chars: int) -> str | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
        return None
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 120:
                name = path.stem if isinstance(node, ast.Module) else node.name
                parts.append(f"## {name}\n\n{doc.strip()}\n")
    text = "\n".join(parts)
    if len(text) < 600:
        return None
    return f"# {path.stem}\n\n{text[:max_chars]}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(base: Settings, n_docs: int, n_queries: int) -> dict:
    from hybridops.tasks.knowledge.document_contract import make_candidate, validate_documents
    from hybridops.tasks.knowledge.embeddings import load_embedder
    from hybridops.tasks.knowledge.index import alias_name, list_generations, live_name, read_index_state
    from hybridops.tasks.core.object_store import landing_zone
    from hybridops.tasks.knowledge.refresh import run_refresh
    from hybridops.tasks.knowledge.search import Searcher
    from hybridops.tasks.core.weaviate_connection import weaviate_session

    home = Path(tempfile.mkdtemp(prefix="hybridops-bench-"))
    cfg = Settings(**(base.model_dump() | {"home": home, "namespace": "bench" + uuid.uuid4().hex[:8],
                                           "landing": None, "store": None}))
    try:
        corpus = docstring_documents(n_docs)
        land_corpus(cfg, corpus, home / "corpus")
        log(f"corpus: {len(corpus)} documents, {sum(map(len, corpus.values())) / 1e6:.1f} MB of text")

        embedder = load_embedder(cfg)  # warm-up outside every timing: model load, kernels, GX import
        embedder.embed(["warm up the kernels"] * 8)
        validate_documents([make_candidate("warm.md", b"# Warm\n\nup", "0", cfg)], cfg)

        started = time.perf_counter()
        full = run_refresh(cfg, embedder=embedder)
        full_s = time.perf_counter() - started
        log(f"full refresh: {full.chunks.total} chunks in {full_s:.1f}s")

        with weaviate_session(cfg) as client:
            state = read_index_state(client.collections.use(live_name(client, cfg)), with_text=True)
        texts = list(dict.fromkeys(r.text for records in state.values() for r in records))  # distinct, as embedded
        started = time.perf_counter()
        embedder.embed(texts)
        raw_s = time.perf_counter() - started
        log(f"raw embedding of the same {len(texts)} distinct chunk texts: {raw_s:.1f}s")

        started = time.perf_counter()
        noop = run_refresh(cfg, embedder=embedder)
        noop_s = time.perf_counter() - started
        log(f"no-op refresh: {noop_s:.2f}s, {noop.chunks.embedded} embeddings")

        store = landing_zone(cfg)
        changed = sorted(corpus)[:: max(1, len(corpus) // max(1, len(corpus) // 100))][: max(1, len(corpus) // 100)]
        for doc_id in changed:
            text = corpus[doc_id]
            store.put(doc_id, (text + f"\n\n## Revision\n\nRevised on run {uuid.uuid4().hex[:6]}: "
                                      "this section was added to measure an incremental refresh.\n").encode())
        started = time.perf_counter()
        delta = run_refresh(cfg, embedder=embedder)
        delta_s = time.perf_counter() - started
        log(f"1% change ({len(changed)} docs): {delta_s:.2f}s, {delta.chunks.embedded} embeddings")

        queries = [text.splitlines()[0].lstrip("# ") + " " + text.split("\n\n")[2][:80]
                   for text in list(corpus.values())[:: max(1, len(corpus) // n_queries)]][:n_queries]
        latencies = []
        with weaviate_session(cfg) as client:
            searcher = Searcher(cfg, client, embedder=embedder)
            searcher.search("warm up", k=5)
            for query in queries:
                t0 = time.perf_counter()
                searcher.search(query, k=5, mode="hybrid")
                latencies.append((time.perf_counter() - t0) * 1000)
            generation = next(g for g in list_generations(client, cfg) if g.live)
        return {
            "corpus": {"documents": len(corpus), "source": "docstrings of the installed Python stdlib + packages",
                       "quarantined": {q.doc_id: q.reasons for q in full.quarantined}, "chunks": full.chunks.total,
                       "chunk_tokens_max": cfg.chunk_tokens},
            "embedding_model": embedder.model_id,
            "full_refresh": {"seconds": round(full_s, 2), "embedded": full.chunks.embedded,
                             "embedded_per_s": round(full.chunks.embedded / full_s, 2)},
            "raw_embedding": {"seconds": round(raw_s, 2), "texts": len(texts),
                              "embedded_per_s": round(len(texts) / raw_s, 2)},
            "throughput_ratio": round((full.chunks.embedded / full_s) / (len(texts) / raw_s), 3),
            "throughput_ratio_target": 0.85,
            "noop_refresh": {"seconds": round(noop_s, 3), "embedded": noop.chunks.embedded,
                             "share_of_full": round(noop_s / full_s, 4), "target_share": 0.03,
                             "unchanged": noop.documents.unchanged},
            "one_percent_change": {"documents": len(changed), "seconds": round(delta_s, 3),
                                   "embedded": delta.chunks.embedded, "reused": delta.chunks.reused,
                                   "updated": delta.documents.updated,
                                   "share_of_full": round(delta_s / full_s, 4), "target_share": 0.05},
            "search_ms": {"queries": len(latencies), "mode": "hybrid", "k": 5,
                          "p50": round(statistics.median(latencies), 2), "p95": round(percentile(latencies, 0.95), 2)},
            "collection": generation.name, "alias": alias_name(cfg),
        }
    finally:
        _drop(cfg)
        shutil.rmtree(home, ignore_errors=True)


def land_corpus(cfg: Settings, corpus: dict[str, str], source: Path) -> None:
    """Write the documents as files under `source`, then land that folder as a user would."""
    from hybridops.tasks.core.object_store import landing_zone
    from hybridops.tasks.knowledge.landing import land

    for doc_id, text in corpus.items():
        (source / doc_id).parent.mkdir(parents=True, exist_ok=True)
        (source / doc_id).write_text(text, encoding="utf-8")
    land(landing_zone(cfg), [source])


def _drop(cfg: Settings) -> None:
    from hybridops.tasks.core.weaviate_connection import weaviate_session
    from hybridops.tasks.knowledge.index import drop_all_generations

    try:
        with weaviate_session(cfg) as client:
            drop_all_generations(client, cfg)
    except Exception as exc:  # cleanup must not hide the result
        log(f"cleanup failed: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(run(load_settings(), args.docs, args.queries)))


if __name__ == "__main__":
    main()
