"""CLI commands of the knowledge path: land, refresh, search, eval retrieval (and its sweep), quarantine list,
index list/rollback/tune."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from hybridops.flows.cli import app, eval_app, index_app, quarantine_app
from hybridops.flows.cli.common import JSON_OPTION, console, fail, print_json, settings


# land -------------------------------------------------------------------------------------------


@app.command("land")
def land_command(
    paths: list[Path] = typer.Argument(None, help="Files or folders to copy into the landing zone."),
    remove: str | None = typer.Option(None, "--remove", help="Delete this document id from the landing zone."),
    prefix: str = typer.Option("", "--prefix", help="Land under this key prefix (e.g. 'policies/')."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Copy files/folders into the landing zone keeping relative paths, or remove one document."""
    from hybridops.tasks.knowledge.landing import land_report, remove as remove_doc
    from hybridops.tasks.core.object_store import landing_zone

    cfg = settings()
    if bool(paths) == bool(remove):
        fail("give PATH... to land, or --remove DOC_ID (not both)")
    store = landing_zone(cfg)
    if remove:
        removed = remove_doc(store, remove)
        if json_output:
            print_json({"removed": remove if removed else None, "landing": cfg.landing_uri})
        else:
            console.print(f"{'removed' if removed else 'not in the landing zone:'} {remove}")
        if not removed:
            raise typer.Exit(1)
        return
    result = land_report(store, list(paths), prefix=prefix)
    landed = result.landed
    skipped = [{"source": s.source, "reason": s.reason} for s in result.skipped]
    if json_output:
        print_json({"landed": [f.doc_id for f in landed], "count": len(landed), "landing": cfg.landing_uri,
                    "bytes": sum(f.size for f in landed), "skipped": skipped})
    else:
        console.print(f"landed {len(landed)} documents into {cfg.landing_uri}")
        for item in skipped:
            console.print(f"[yellow]skipped[/] {item['source']}: {item['reason']}", highlight=False)


# refresh ----------------------------------------------------------------------------------------


@app.command("refresh")
def refresh_command(
    full: bool = typer.Option(False, "--full", help="Build a new index generation; flip the alias if it passes."),
    targeted: bool = typer.Option(False, "--targeted", help="Apply only what the landing change feed holds (and "
                                  "--key), not the whole landing zone; nothing pending is a quick no-op."),
    keys: list[str] = typer.Option(None, "--key", help="With --targeted: also plan this landing key; repeatable."),
    verify: bool = typer.Option(False, "--verify", help="Deep-check every object against the landing zone and repair."),
    allow_mass_delete: bool = typer.Option(
        False, "--allow-mass-delete", help="Confirm removing more than refresh_max_delete_share of the live index."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Reconcile the index with the landing zone (embedding only changed chunks); --targeted: only the changed keys."""
    from hybridops.flows.cli.progress import rich_reporter
    from hybridops.flows.orchestration.events import from_the_cli, mass_delete_blocked
    from hybridops.tasks.core.errors import BadInputError
    from hybridops.tasks.knowledge.refresh import MassDeletionBlocked, RefreshRequest, refresh

    cfg = settings()
    if full and targeted:
        raise BadInputError("--full rebuilds from the whole landing zone: it cannot be --targeted")
    if keys and not targeted:
        raise BadInputError("--key names keys for a targeted refresh: add --targeted")
    request = RefreshRequest(full=full, targeted=targeted, extra_keys=keys or [], verify=verify,
                             allow_mass_delete=allow_mass_delete)
    try:
        with rich_reporter(transient=json_output) as reporter:  # the same story the refresh-index flow runs
            report = refresh(cfg, request, reporter=reporter)
    except MassDeletionBlocked as blocked:  # the event the flow emits too; the error boundary reports it (exit 5)
        from_the_cli(cfg, lambda exc=blocked: mass_delete_blocked(cfg, exc))
        raise
    failed_gate = report.gate is not None and report.gate.status == "failed"
    event = None
    if not failed_gate:  # the same event the refresh-index flow emits, so automations see manual refreshes
        from hybridops.flows.orchestration.events import index_refreshed

        event = from_the_cli(cfg, lambda: index_refreshed(cfg, report))
    data = report.model_dump(mode="json") | {"event": event}
    if json_output:
        print_json(data)
    else:
        _print_refresh(data)
    if failed_gate:
        console.print(f"[bold red]rebuilt generation not promoted:[/] {report.gate.reason}")
        raise typer.Exit(3)


def _print_refresh(data: dict[str, Any]) -> None:
    docs, chunks = data["documents"], data["chunks"]
    console.print(
        f"[bold]{data['collection']}[/] ({data['mode']}): "
        + ", ".join(f"{k} {v}" for k, v in docs.items())
        + f"; chunks embedded {chunks['embedded']}, reused {chunks['reused']}, deleted {chunks['deleted']}, "
        f"total {chunks['total']} in {data['duration_s']:.1f}s"
    )
    if data["mode"] == "targeted":
        planned = data["planned_keys"]
        listed = ", ".join(planned[:5]) + (" ..." if len(planned) > 5 else "")
        console.print(f"  targeted: {len(planned)} keys planned ({listed})" if planned
                      else "  targeted: nothing pending", highlight=False)
    console.print(f"  change feed: {len(data['feed_consumed'])} entries consumed", highlight=False)
    for q in data["quarantined"]:
        console.print(f"  [yellow]quarantined[/] {q['doc_id']}: {'; '.join(q['reasons'])}")
    if data.get("verify"):
        console.print(f"  verify: {data['verify']}")


# search -----------------------------------------------------------------------------------------


def _parse_where(items: list[str] | None) -> dict[str, str] | None:
    where = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--where expects key=value, got {item!r}")
        where[key.strip()] = value.strip()
    return where or None


@app.command("search")
def search_command(
    query: str = typer.Argument(..., help="What to look for."),
    k: int | None = typer.Option(None, "--k", min=1, max=100,
                                 help="How many chunks to return (default: the live retrieval profile's k)."),
    mode: str | None = typer.Option(None, "--mode", help="hybrid | vector | bm25 (default: the live profile's)."),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0, max=1.0, help="Hybrid weight of the vector side."),
    where: list[str] = typer.Option(None, "--where", help="key=value filter (doc_id, title or metadata); repeatable."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Retrieve the best chunks from the live index."""
    from hybridops.tasks.knowledge.search import MODES, search

    cfg = settings()
    if mode is not None and mode not in MODES:
        fail(f"--mode must be one of {', '.join(MODES)}")
    hits = search(cfg, query, k=k, mode=mode, alpha=alpha, where=_parse_where(where))
    if json_output:
        print_json({"results": [h.model_dump(include={"doc_id", "chunk_id", "score", "title", "text", "chunk_index"})
                                for h in hits]})
        return
    for rank, hit in enumerate(hits, start=1):
        console.print(f"[bold]{rank}. {hit.doc_id}[/] #{hit.chunk_index}  score {hit.score:.3f}  {hit.title}")
        console.print("   " + hit.text[:240].replace("\n", " "))


# eval retrieval ---------------------------------------------------------------------------------


@eval_app.command("retrieval")
def eval_retrieval_command(
    golden: Path | None = typer.Option(None, "--golden", help="Golden JSONL (default examples/golden_retrieval.jsonl)."),
    k: int | None = typer.Option(None, "--k", min=1, help="Documents considered per question (default recall_k); "
                                 "chunks with --chunks (default: the live profile's k)."),
    chunks: bool = typer.Option(False, "--chunks", help="k counts chunks per question, as the answer path uses "
                                "them, instead of documents."),
    mode: str | None = typer.Option(None, "--mode", help="hybrid | vector | bm25 (default: the live profile's)."),
    alpha: float | None = typer.Option(None, "--alpha", min=0.0, max=1.0),
    sweep: bool = typer.Option(False, "--sweep", help="Try every mode/alpha/k of a small grid on the golden set "
                               "plus the latest behaviour eval's retrieval misses; print the best and how to apply it."),
    apply: bool = typer.Option(False, "--apply", help="With --sweep: store the best setting on the live generation."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Recall@k and MRR of the live index on the golden retrieval set (or a sweep over retrieval settings)."""
    from hybridops.tasks.core.errors import BadInputError
    from hybridops.tasks.knowledge.retrieval_eval import run_retrieval_eval

    cfg = settings()
    if apply and not sweep:
        raise BadInputError("--apply applies the best setting of a sweep: use it with --sweep")
    if sweep:
        if k is not None or mode is not None or alpha is not None or chunks:
            raise BadInputError("--sweep tries every mode, alpha and k itself: drop --k/--mode/--alpha/--chunks")
        _sweep(cfg, golden, apply, json_output)
        return
    report = run_retrieval_eval(cfg, golden or cfg.golden_retrieval, k=k, mode=mode, alpha=alpha,
                                k_counts="chunks" if chunks else "documents")
    data = report.model_dump(mode="json")
    data[f"recall@{report.k}"] = report.recall_at_k
    if json_output:
        print_json(data)
        return
    console.print(
        f"{report.collection}: recall@{report.k} {_fmt(report.recall_at_k)}, MRR {_fmt(report.mrr)} over "
        f"{report.applicable} questions ({len(report.skipped)} skipped: gold documents not landed)"
    )
    for r in report.results:
        if not r.hit:
            console.print(f"  [yellow]miss[/] {r.question} -> got {r.retrieved_doc_ids}, gold {r.gold_doc_ids}")


def _retrieval_misses(cfg) -> list:
    """The latest behaviour eval run's `retrieval_miss` cases as (question, gold docs) for the sweep."""
    from hybridops.tasks.behaviour.eval_history import load_history
    from hybridops.tasks.knowledge.retrieval_eval import GoldenQuestion

    runs = load_history(cfg, 1)
    cases = runs[-1].cases if runs else []
    return [GoldenQuestion(question=c.question, gold_doc_ids=c.gold_docs)
            for c in cases if c.gap == "retrieval_miss" and c.gold_docs]


def _sweep(cfg, golden: Path | None, apply: bool, json_output: bool) -> None:
    from hybridops.tasks.knowledge.retrieval_sweep import apply_profile, run_sweep

    report = run_sweep(cfg, _retrieval_misses(cfg), golden)
    applied = None
    if apply and report.changed:
        best = report.best
        applied = apply_profile(cfg, mode=best.mode, alpha=best.alpha, k=best.k,
                                expected_generation=report.collection)
    if json_output:
        print_json({"sweep": report.model_dump(mode="json"),
                    "applied": applied.model_dump(mode="json") if applied else None})
        return
    _print_sweep(report)
    if applied is not None:
        _print_tune(applied)
    elif not report.changed:
        console.print("today's setting is already the best: nothing to apply")
    elif not apply:
        console.print(f"apply it with: [bold]{report.apply_command}[/]  (or `hybridops eval retrieval --sweep --apply`)",
                      highlight=False)


def _print_sweep(report) -> None:
    from rich.table import Table

    extra = report.extra_questions > 0
    table = Table(title=f"{report.collection}: {report.golden_questions} golden + {report.extra_questions} missed "
                        f"questions ({len(report.skipped)} skipped: gold documents not landed)")
    for column in ["", "mode", "alpha", "k", "recall@k", "MRR", "hit rate"] + (
            ["missed: recall@k", "missed: MRR"] if extra else []):
        table.add_column(column, justify="left" if column in ("", "mode") else "right")
    for p in report.points:
        mark = "best" if p.best else ""
        mark += ("," if mark and p.current else "") + ("today" if p.current else "")
        row = [mark, p.mode, "" if p.alpha is None else f"{p.alpha:g}", str(p.k), _fmt(p.overall.recall_at_k),
               _fmt(p.overall.mrr), _fmt(p.overall.hit_rate)]
        if extra:
            row += [_fmt(p.extra.recall_at_k if p.extra else None), _fmt(p.extra.mrr if p.extra else None)]
        table.add_row(*row, style="bold green" if p.best else None)
    console.print(table)
    gain = report.improvement
    console.print(f"today: {report.current.profile.describe()} -> best: {report.best.profile.describe()} "
                  f"(recall@k {_signed(gain.recall_at_k)}, MRR {_signed(gain.mrr)}, hit rate {_signed(gain.hit_rate)})",
                  highlight=False)


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# quarantine / index -----------------------------------------------------------------------------


@quarantine_app.command("list")
def quarantine_list_command(
    kind: str | None = typer.Option(None, "--kind", help="documents | training | interactions (default: all)."),
    json_output: bool = JSON_OPTION,
) -> None:
    """What is held back by the data contracts, and why."""
    from hybridops.tasks.core.object_store import artifact_store
    from hybridops.tasks.core.quarantine import KINDS, list_quarantined

    cfg = settings()
    if kind is not None and kind not in KINDS:
        fail(f"--kind must be one of {', '.join(KINDS)}")
    entries = list_quarantined(artifact_store(cfg), kind)
    if json_output:
        print_json({"quarantined": [e.to_dict() for e in entries], "count": len(entries)})
        return
    if not entries:
        console.print("nothing is quarantined")
    for e in entries:
        console.print(f"[bold]{e.kind}/{e.item_id}[/] ({e.quarantined_at}): {'; '.join(e.reasons)}")


@index_app.command("list")
def index_list_command(json_output: bool = JSON_OPTION) -> None:
    """Index generations, their embedding model, state and size; which one is live."""
    from hybridops.tasks.knowledge.index import alias_name, list_generations
    from hybridops.tasks.core.weaviate_connection import weaviate_session

    cfg = settings()
    with weaviate_session(cfg) as client:
        gens = list_generations(client, cfg, count=True)
    if json_output:
        print_json({"alias": alias_name(cfg), "generations": [g.model_dump(mode="json") for g in gens]})
        return
    for g in gens:
        profile = ("  retrieval " + " ".join(f"{key}={value}" for key, value in g.retrieval.items())
                   if g.retrieval else "")
        console.print(f"{'*' if g.live else ' '} {g.name}  {g.state:9} {g.embedding_model}  {g.objects} objects  "
                      f"{g.created_at}{profile}", highlight=False)


@index_app.command("rollback")
def index_rollback_command(json_output: bool = JSON_OPTION) -> None:
    """Point the alias back at the previous ready generation."""
    from hybridops.tasks.core.locks import namespace_lock
    from hybridops.tasks.knowledge.index import point_alias, rollback_target
    from hybridops.tasks.core.weaviate_connection import weaviate_session

    cfg = settings()  # under the index lock: never between a rebuild's gate and its flip
    with namespace_lock(cfg, "index", "index rollback"), weaviate_session(cfg) as client:
        live, previous = rollback_target(client, cfg)
        point_alias(client, cfg, previous.name)
    if json_output:
        print_json({"from": live.name, "to": previous.name, "embedding_model": previous.embedding_model})
    else:
        console.print(f"alias now points at {previous.name} (was {live.name}); run `hybridops refresh` to catch up")


@index_app.command("tune")
def index_tune_command(
    mode: str | None = typer.Option(None, "--mode", help="hybrid | vector | bm25"),
    alpha: float | None = typer.Option(None, "--alpha", help="Hybrid weight of the vector side, in [0, 1]."),
    k: int | None = typer.Option(None, "--k", help="Chunks per question (>= 1)."),
    reset: bool = typer.Option(False, "--reset", help="Remove the tuned profile: the settings apply again."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Store how `ask`, evals and `search` retrieve (mode, alpha, k) on the live generation, for every process
    of the namespace; fields not given keep today's effective value."""
    from hybridops.tasks.knowledge.retrieval_sweep import apply_profile

    cfg = settings()
    result = apply_profile(cfg, mode=mode, alpha=alpha, k=k, reset=reset)
    if json_output:
        print_json(result.model_dump(mode="json"))
    else:
        _print_tune(result)


def _print_tune(result) -> None:
    def source(stored: dict) -> str:
        return "tuned" if stored else "settings"

    console.print(f"{result.generation}: {result.before.describe()} ({source(result.stored_before)}) -> "
                  f"{result.after.describe()} ({source(result.stored_after)})"
                  + ("" if result.changed else "  [unchanged]"), highlight=False)

