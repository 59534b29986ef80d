"""Planning memory of a full reconcile: the index state as chunk records grouped by document (what the plan held
until the reconcile streamed; read_index_state still builds it) vs the per-document digests it folds them into.

Synthetic records (no server): N documents x C chunks with real-sized hashes, measured with tracemalloc.

    python bench/plan_memory.py --docs 100000 --chunks 2 [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator

from hybridops.tasks.knowledge.index import ChunkRecord, _by_document, chunk_uuid
from hybridops.tasks.knowledge.refresh_plan import digest_records

CHUNKING = "v1;tok=all-MiniLM-L6-v2;max=254;overlap=32"
MODEL = "all-MiniLM-L6-v2@bf16"


def records(docs: int, chunks: int) -> Iterator[ChunkRecord]:
    """What a cursor over the index yields: every chunk object's self-description."""
    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    for d in range(docs):
        doc_id = f"notes/{d // 1000:03d}/note-{d:06d}.md"
        for i in range(chunks):
            yield ChunkRecord(uuid=chunk_uuid(doc_id, i), doc_id=doc_id, chunk_index=i, chunk_count=chunks,
                              text_hash=sha(f"t{d}/{i}"), meta_hash=sha(f"m{d}"), doc_text_hash=sha(f"d{d}"),
                              source_hash=sha(f"s{d}"), source_version=sha(f"v{d}"), chunking=CHUNKING,
                              embedding_model=MODEL)


def measure(fold: Callable, docs: int, chunks: int) -> dict:
    tracemalloc.start()
    started = time.perf_counter()
    state = fold(records(docs, chunks))
    held, peak = tracemalloc.get_traced_memory()
    seconds = time.perf_counter() - started
    tracemalloc.stop()
    return {"documents": len(state), "held_mb": round(held / 2**20, 1), "peak_mb": round(peak / 2**20, 1),
            "seconds_traced": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {"docs": args.docs, "chunks_per_doc": args.chunks,
              "grouped_records": measure(_by_document, args.docs, args.chunks),
              "digests": measure(digest_records, args.docs, args.chunks)}
    if args.json:
        print(json.dumps(report))
    else:
        for name in ("grouped_records", "digests"):
            r = report[name]
            print(f"{name:16} {r['documents']:>8} documents: held {r['held_mb']} MB, peak {r['peak_mb']} MB")


if __name__ == "__main__":
    main()
