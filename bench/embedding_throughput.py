"""Embedding throughput fp32 vs bf16 on ~256-token chunks of real English (the stdlib's docstrings).

Usage: python bench/embedding_throughput.py [--chunks 200] [--tokens 256] [--repeats 2]
(HYBRIDOPS_TORCH_THREADS=2 to compare thread counts.)
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import ast
import json
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from hybridops.tasks.knowledge.embeddings import Embedder, load_embedder
from hybridops.tasks.core.model_runtime import available_cpus, cpu_supports_bf16
from hybridops.tasks.core.settings import load_settings


def stdlib_prose(limit_chars: int) -> str:
    """Module, class and function docstrings of the Python stdlib: offline, real English prose."""
    parts: list[str] = []
    total = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    parts.append(" ".join(doc.split()))
                    total += len(parts[-1])
        if total >= limit_chars:
            break
    return "\n\n".join(parts)


def token_chunks(embedder: Embedder, text: str, n_chunks: int, tokens: int) -> list[str]:
    """Consecutive slices of `text` of exactly `tokens` model tokens each (cut on token offsets)."""
    offsets = embedder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    chunks = []
    for start in range(0, len(offsets) - tokens, tokens):
        chunks.append(text[offsets[start][0] : offsets[start + tokens - 1][1]])
        if len(chunks) == n_chunks:
            break
    return chunks


def best_rate(embedder: Embedder, texts: list[str], repeats: int) -> tuple[float, np.ndarray]:
    embedder.embed(texts[:16])  # warm-up: first calls pay for kernel selection
    best, vectors = float("inf"), np.empty(0)
    for _ in range(repeats):
        started = time.perf_counter()
        vectors = embedder.embed(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=256, help="content tokens per chunk (window caps it)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    settings = load_settings()
    fp32 = load_embedder(settings.model_copy(update={"embedding_bf16": False}))
    bf16 = load_embedder(settings.model_copy(update={"embedding_bf16": True}))
    tokens = min(args.tokens, fp32.max_tokens)
    chunks = token_chunks(fp32, stdlib_prose(limit_chars=args.chunks * tokens * 8), args.chunks, tokens)
    short = [chunk[:80] for chunk in chunks]

    fp32_rate, fp32_vectors = best_rate(fp32, chunks, args.repeats)
    bf16_rate, bf16_vectors = best_rate(bf16, chunks, args.repeats)
    cosine = np.sum(fp32_vectors * bf16_vectors, axis=1)
    print(
        json.dumps(
            {
                "model": fp32.name,
                "chunks": len(chunks),
                "tokens_per_chunk": tokens,
                "batch_size": fp32.batch_size,
                "cpus": available_cpus(),
                "torch_threads": torch.get_num_threads(),
                "cpu_bf16": cpu_supports_bf16(),
                "bf16_active": bf16.bf16,
                "bf16_note": bf16.precision_note,
                "fp32_chunks_per_s": round(fp32_rate, 1),
                "bf16_chunks_per_s": round(bf16_rate, 1),
                "bf16_speedup": round(bf16_rate / fp32_rate, 2),
                "cosine_min": round(float(cosine.min()), 5),
                "cosine_mean": round(float(cosine.mean()), 5),
                "short_texts_per_s": {
                    "fp32": round(best_rate(fp32, short, args.repeats)[0], 1),
                    "bf16": round(best_rate(bf16, short, args.repeats)[0], 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
