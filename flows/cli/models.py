"""CLI commands: `models prepare` (make both models ready offline, cached) and `models info`."""

from __future__ import annotations

import time
from typing import Any

from hybridops.flows.cli import models_app
from hybridops.flows.cli.common import JSON_OPTION, console, print_json, settings
from hybridops.tasks.core.settings import Settings


@models_app.command("prepare")
def prepare(as_json: bool = JSON_OPTION) -> None:
    """Make the embedding model and the base LLM ready offline (converts the GGUF once; later calls are cached)."""
    cfg = settings()
    with console.status("preparing the base LLM (a first GGUF conversion takes ~15-30 s)..."):
        llm = _llm_report(cfg)
    with console.status("loading the embedding model and checking bf16 quality..."):
        embedding = _embedding_report(cfg)
    report = {"embedding": embedding, "llm": llm}
    if as_json:
        print_json(report)
        return
    state = "cached" if llm["cached"] else "converted"
    console.print(
        f"[green]LLM[/] {llm['path']} ({state} in {llm['seconds']} s, loaded in {llm['load_seconds']} s, {llm['dtype']})"
    )
    console.print(
        f"[green]embeddings[/] {embedding['model_id']} from {embedding['path']} "
        f"({embedding['dim']} dims, {embedding['precision_note']}, {embedding['seconds']} s)"
    )


@models_app.command("info")
def info(as_json: bool = JSON_OPTION) -> None:
    """Where the models are, their dimensions and precision (loads the embedding model, not the LLM)."""
    from hybridops.tasks.behaviour.llm import base_model_info

    cfg = settings()
    report = {"embedding": _embedding_report(cfg), "llm": base_model_info(cfg), "models_dir": str(cfg.models_dir)}
    if as_json:
        print_json(report)
        return
    emb, llm = report["embedding"], report["llm"]
    console.print(f"embeddings: {emb['model_id']} ({emb['dim']} dims, max {emb['max_tokens']} tokens) at {emb['path']}")
    console.print(f"LLM: {llm['setting']} at {llm['path']} (prepared: {llm['prepared']}, {llm['dtype']})")
    if not llm["prepared"]:
        console.print("run `hybridops models prepare` to convert it once")


def _llm_report(cfg: Settings) -> dict[str, Any]:
    """Prepare, then load once to prove the cache works (and show that loads take seconds)."""
    from hybridops.tasks.behaviour.llm import generation_dtype, load_base_model, prepare_llm

    prepared = prepare_llm(cfg)
    report: dict[str, Any] = {
        "setting": prepared.source,
        "path": str(prepared.path),
        "cached": prepared.cached,
        "seconds": round(prepared.seconds, 3),
        "converted_from": prepared.converted_from,
        "load_seconds": None,
        "dtype": prepared.dtype,
        "parameters": None,
    }
    if not prepared.path.exists():  # an HF id: loading it would download, and prepare downloads nothing
        console.print(f"[yellow]{prepared.source} is not on disk; it is downloaded on first use[/]")
        return report
    started = time.monotonic()
    model, _ = load_base_model(cfg)
    report["load_seconds"] = round(time.monotonic() - started, 3)
    report["dtype"] = str(model.dtype).removeprefix("torch.")
    report["parameters"] = sum(p.numel() for p in model.parameters())
    report["generation_dtype"] = generation_dtype(cfg)  # answers and evals: fp32 unless HYBRIDOPS_LLM_BF16 opts in
    return report


def _embedding_report(cfg: Settings) -> dict[str, Any]:
    from hybridops.tasks.knowledge.embeddings import load_embedder

    started = time.monotonic()
    embedder = load_embedder(cfg)
    return {
        "setting": cfg.embedding_model,
        "path": embedder.source,
        "model_id": embedder.model_id,
        "dim": embedder.dim,
        "max_tokens": embedder.max_tokens,
        "precision": embedder.precision,
        "bf16_min_cosine": embedder.bf16_cosine,
        "precision_note": embedder.precision_note,
        "seconds": round(time.monotonic() - started, 3),
    }
