"""`hybridops demo`: the whole hybridops story on embedded defaults, narrated, in one command.

up -> serve the deployments -> land the example corpus (one document held back) -> refresh starts BY EVENT
-> ask -> evaluate (behaviour drift found; the held-back document shows up as a knowledge gap, not behaviour)
-> retrain starts BY EVENT -> challenger promoted -> ask again (house format followed) -> update one
document -> refresh BY EVENT -> ask reflects the new fact. `serve` runs as a child process for the story;
the asks go through the answering service it hosts, and the eval and retrain runs are followed through their
progress artifacts (step, loss, ETA, cases done).

The demo owns its namespace (`<namespace>_demo`, state under $HYBRIDOPS_HOME/demo) and resets it first, so
it can be re-run and never touches the user's own landing zone, index or adapters.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from hybridops.flows.cli.progress import rich_reporter
from hybridops.flows.orchestration.answer_client import ask_service
from hybridops.flows.orchestration.deployments import deployment_specs, spec_for
from hybridops.flows.orchestration.run_control import RunInfo, start_run, wait_for_new_run
from hybridops.flows.orchestration.run_progress import follow_run
from hybridops.flows.orchestration.serving import ServeProcess, exit_on_sigterm
from hybridops.infra.services import up
from hybridops.tasks.behaviour.adapters import champion, list_versions
from hybridops.tasks.behaviour.answer import Answer, ask
from hybridops.tasks.behaviour.eval_history import load_history
from hybridops.tasks.behaviour.gap_attribution import KNOWLEDGE_ROUTES
from hybridops.tasks.behaviour.llm import prepare_base_model
from hybridops.tasks.core.errors import HybridopsError
from hybridops.tasks.core.model_runtime import available_cpus
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.core.weaviate_connection import weaviate_session
from hybridops.tasks.knowledge.embeddings import load_embedder
from hybridops.tasks.knowledge.index import drop_all_generations
from hybridops.tasks.knowledge.landing import TRAINING_PREFIX, land
from hybridops.tasks.knowledge.search import search

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "examples" / "corpus"
TRAINING = REPO / "examples" / "training"
HELD_BACK = "stores/locations-and-hours.txt"
"""Not landed at first: its eval question becomes a knowledge gap (the index lacks the answer)."""
UPDATED_DOC = "policies/refunds.md"
OLD_FACT, NEW_FACT = "**45 days**", "**30 days**"
QUESTION = "How many days is the return window for most items?"
"""Worded like the passage that answers it, so hybrid retrieval ranks that passage first for a 135M model."""


class DemoFailed(HybridopsError):
    """A step of the story did not happen as it should; `steps` holds what was done so far."""

    def __init__(self, message: str, steps: list[dict]):
        super().__init__(message)
        self.steps = steps


def demo_settings(settings: Settings) -> Settings:
    """The demo's own namespace and state folder on the same servers; landing and store are local folders.

    The demo owns the machine while it runs, so torch may use every CPU (the default leaves one free for
    busy shared boxes): measured on the idle 2-CPU box, 2 threads train ~30% and answer ~35% faster than 1.
    """
    namespace = (settings.namespace + "_demo")[:40]
    return settings.model_copy(update={"namespace": namespace, "home": settings.home / "demo",
                                       "landing": None, "store": None,
                                       "torch_threads": settings.torch_threads or available_cpus()})


class Story:
    """Runs and narrates the steps; each step records its duration and facts for the JSON report."""

    def __init__(self, settings: Settings, console: Console):
        self.base = settings
        self.cfg = demo_settings(settings)
        self.console = console
        self.steps: list[dict] = []
        self.ui = settings.prefect_api_url.removesuffix("/api")

    @contextmanager
    def step(self, title: str, why: str) -> Iterator[dict]:
        number = len(self.steps) + 1
        self.console.rule(f"[bold cyan]{number}. {title}")
        self.console.print(f"[dim]{why}[/]")
        facts: dict[str, Any] = {"step": title, "ok": False}
        started = time.perf_counter()
        try:
            yield facts
            facts["ok"] = True
        finally:
            facts["seconds"] = round(time.perf_counter() - started, 1)
            self.steps.append(facts)
        self.console.print(f"[green]done[/] in {facts['seconds']} s")

    def follow(self, run: RunInfo, doing: str, timeout: float) -> RunInfo:
        """Wait for a flow run, showing its progress artifacts live (steps, loss, ETA, cases done)."""
        with rich_reporter(console=self.console) as bars:
            bars.stage(f"{run.name}: {doing} (progress from the run's Prefect artifacts)")
            return follow_run(self.cfg, run.id, bars.show, timeout)

    def fail(self, message: str) -> None:
        raise DemoFailed(message, self.steps)

    def say(self, text: str) -> None:
        self.console.print(text)

    # --- the steps -------------------------------------------------------------------------------

    def start_stack(self) -> None:
        with self.step("Start the stack", "Prefect server + UI, Weaviate and MinIO as local processes.") as f:
            report = up(self.base, on_event=lambda msg: self.console.log(msg))
            f["services"] = {name: info["action"] for name, info in report.items()}
            self.say(", ".join(f"{name}: {action}" for name, action in f["services"].items()))

    def reset(self) -> None:
        with self.step("Reset the demo namespace", f"namespace {self.cfg.namespace}: landing zone, store and "
                       "index start empty, so the story is the same every time.") as f:
            for folder in (Path(self.cfg.landing_uri), Path(self.cfg.store_uri)):
                shutil.rmtree(folder, ignore_errors=True)
            with weaviate_session(self.cfg) as client:
                f["dropped_collections"] = drop_all_generations(client, self.cfg)

    def prepare_models(self) -> None:
        with self.step("Prepare the models", "Packaged all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (converted once, "
                       "cached); no model hub needed.") as f:
            f["llm"] = str(prepare_base_model(self.cfg))
            f["embedding_model"] = load_embedder(self.cfg).model_id
            self.say(f"LLM: {f['llm']}\nembeddings: {f['embedding_model']}")

    def serve(self):
        with self.step("Serve the deployments", "`hybridops serve` registers every deployment with the Prefect "
                       "server (events, schedules, manual) and runs their flow runs.") as f:
            serve = ServeProcess(self.cfg).start()
            f["deployments"] = serve.deployments
            f["log"] = str(serve.log_path)
            table = Table("deployment", "started by")
            for spec in _specs(self.cfg):
                table.add_row(spec.name(self.cfg), spec.started_by + (f" ({spec.event})" if spec.event else ""))
            self.console.print(table)
            self.say(f"Prefect UI: [link={self.ui}/deployments]{self.ui}/deployments[/link]")
        return serve

    def land_corpus(self) -> datetime:
        with self.step("Land the example corpus", "Documents are just dropped into the landing zone; nobody "
                       "calls the refresh.") as f:
            since = _now()
            files = [p for p in sorted(CORPUS.rglob("*")) if p.is_file()]
            store = landing_zone(self.cfg)
            landed = []
            for path in files:
                doc_id = path.relative_to(CORPUS).as_posix()
                if doc_id != HELD_BACK:
                    store.put(doc_id, path.read_bytes())
                    landed.append(doc_id)
            f["landed"], f["held_back"] = len(landed), HELD_BACK
            self.say(f"{len(landed)} documents landed in {self.cfg.landing_uri} ({HELD_BACK} held back)")
        return since

    def refresh_by_event(self, since: datetime, title: str) -> dict:
        with self.step(title, "watch-landing notices the change and emits hybridops.landing.changed; its "
                       "trigger starts refresh-index.") as f:
            full = _spec(self.cfg, "refresh-index").full_name(self.cfg)
            with self.console.status("waiting for refresh-index to be started by the landing event..."):
                run = wait_for_new_run(self.cfg, full, since, timeout=300, created_by="AUTOMATION")
            f.update(_run_facts(run, since))
            self.say(f"run [bold]{run.name}[/] started by automation '{run.automation}' "
                     f"{f['started_after_s']} s after landing: {run.state}")
            if run.state != "COMPLETED":
                self.fail(f"refresh-index run {run.name} ended {run.state}: {run.state_message}")
        return f

    def ask(self, title: str, why: str, expect_format: bool | None = None, expect_text: str | None = None) -> dict:
        with self.step(title, why) as f:
            with self.console.status("retrieving context and generating..."):  # through serve's warm models
                served = ask_service(self.cfg, QUESTION, note=self.say)
                answer = Answer.model_validate(served.data) if served else ask(self.cfg, QUESTION)
            f.update(question=QUESTION, answer=answer.answer, format_ok=answer.format_ok, sources=answer.sources,
                     retrieved=answer.retrieved, adapter=answer.adapter, latency_ms=round(answer.latency_ms),
                     answered_by=answer.answered_by)
            self.console.print(Panel(f"[bold]Q:[/] {QUESTION}\n[bold]A:[/] {answer.answer}\n"
                                     f"format_ok={answer.format_ok}  sources={answer.sources}  "
                                     f"adapter={answer.adapter or 'base model'}  answered by {answer.answered_by}",
                                     expand=False))
            if expect_format is not None and answer.format_ok != expect_format:
                self.fail(f"expected format_ok={expect_format}, got {answer.format_ok}: {answer.answer!r}")
            if expect_text is not None:
                f["mentions_new_fact"] = expect_text in (answer.answer or "") and "45" not in (answer.answer or "")
                if not f["mentions_new_fact"]:
                    self.fail(f"the answer does not reflect the updated document ({expect_text!r}): {answer.answer!r}")
        return f

    def land_training(self) -> None:
        with self.step("Land curated training examples", "Examples of the house reply format "
                       "{\"answer\", \"sources\"} land in the training area (_training/), not in the index.") as f:
            landed = land(landing_zone(self.cfg), sorted(TRAINING.glob("*.jsonl")), prefix=TRAINING_PREFIX)
            f["files"] = [item.doc_id for item in landed]
            self.say(", ".join(f["files"]))

    def evaluate(self) -> datetime:
        with self.step("Evaluate behaviour", "The daily evaluate-behaviour deployment, run now: the suite on the "
                       "champion; every failing case is routed: missing document, retrieval miss, retrieval noise or behaviour.") as f:
            started = _now()  # the drift event (and so the retrain run) comes before the eval run is final
            run = start_run(self.cfg, _spec(self.cfg, "evaluate-behaviour").full_name(self.cfg))
            run = self.follow(run, "answering the suite", timeout=1200)
            if run.state != "COMPLETED":
                self.fail(f"evaluate-behaviour run {run.name} ended {run.state}: {run.state_message}")
            record = load_history(self.cfg, limit=1)[-1]
            f.update(run=run.name, n=record.n, drift=record.drift.drift, drifted=record.drift.drifted,
                     gaps=record.gaps, pass_rates={k: round(v.pass_rate, 2) for k, v in record.checks.items()},
                     knowledge_gap_cases=[c.case_id for c in record.cases if c.gap in KNOWLEDGE_ROUTES],
                     routes={r.route: r.cases for r in record.routes if r.count})
            table = Table("check", "pass rate", "95% CI")
            for name, stats in record.checks.items():
                table.add_row(name, f"{stats.pass_rate:.2f}", f"{stats.ci_low:.2f}-{stats.ci_high:.2f}")
            self.console.print(table)
            self.say(f"routes: {record.gaps}  (knowledge-side cases: {f['knowledge_gap_cases']})")
            for row in record.routes:
                if row.count:
                    self.say(f"  {row.route}: {', '.join(row.cases)} -> {'; '.join(row.actions)}")
            self.say(f"drift: {record.drift.drift} on {record.drift.drifted}")
            if not record.drift.drift:
                self.fail("the eval found no behaviour drift; nothing would start a retrain")
        return started

    def retrain_by_event(self, since: datetime) -> None:
        with self.step("Retrain starts by event", "hybridops.behaviour.drift triggers retrain-adapter: LoRA "
                       "challenger, same held-out suite for challenger and champion, promote only if better.") as f:
            full = _spec(self.cfg, "retrain-adapter").full_name(self.cfg)
            with self.console.status("waiting for retrain-adapter to be started by the drift event..."):
                run = wait_for_new_run(self.cfg, full, since, timeout=600, final=False, created_by="AUTOMATION")
            run = self.follow(run, "training a LoRA challenger and comparing it with the champion", timeout=2700)
            f.update(_run_facts(run, since))
            if run.state != "COMPLETED":
                self.fail(f"retrain-adapter run {run.name} ended {run.state}: {run.state_message}")
            versions = list_versions(self.cfg)
            pointer = champion(self.cfg)
            latest = versions[-1] if versions else None
            f.update(version=latest.version if latest else None, promoted=bool(latest and pointer
                                                                               and pointer.version == latest.version),
                     reason=pointer.current.reason if pointer else None,
                     challenger=latest.eval_scores if latest else {}, steps=latest.train.steps if latest else None)
            self.say(f"run [bold]{run.name}[/] started by automation '{run.automation}'; challenger "
                     f"{f['version']}: {'[green]promoted' if f['promoted'] else '[red]rejected'}[/] ({f['reason']})")
            if not f["promoted"]:
                self.fail(f"the challenger was not promoted: {f['reason']}")

    def update_document(self) -> datetime:
        with self.step("Update one document", f"{UPDATED_DOC}: the return window changes from 45 to 30 days.") as f:
            store = landing_zone(self.cfg)
            text = store.get(UPDATED_DOC).decode()
            if OLD_FACT not in text:
                self.fail(f"{UPDATED_DOC} does not contain {OLD_FACT}")
            since = _now()
            store.put(UPDATED_DOC, text.replace(OLD_FACT, NEW_FACT, 1).encode())
            f["doc_id"] = UPDATED_DOC
        return since

    def searchable(self, since: datetime) -> None:
        with self.step("The new fact is searchable", "hybridops search returns the updated passage.") as f:
            hits = search(self.cfg, QUESTION, k=3)
            fresh = [h for h in hits if h.doc_id == UPDATED_DOC and NEW_FACT in h.text]
            f["landing_to_searchable_s"] = round((_now() - since).total_seconds(), 1)
            f["top_hit"] = hits[0].doc_id if hits else None
            if not fresh:
                self.fail("the updated passage is not returned by search")
            self.say(f"{UPDATED_DOC} now says 30 days (top hit: {f['top_hit']})")

    def summary(self, started: float) -> dict:
        ns = self.cfg.namespace.replace("_", "-")
        artifacts = [f"{ns}-index-refresh", f"{ns}-landing-changes", f"{ns}-behaviour-cases", f"{ns}-behaviour-trend",
                     f"{ns}-adapter-decision", f"{ns}-adapter-loss-curve", f"{ns}-adapter-checks"]
        paths = {"landing": self.cfg.landing_uri, "store": self.cfg.store_uri,
                 "adapters": f"{self.cfg.store_uri}/adapters", "eval_history": f"{self.cfg.store_uri}/history",
                 "quarantine": f"{self.cfg.store_uri}/quarantine"}
        table = Table("where", "what")
        table.add_row(f"{self.ui}/deployments", f"deployments (tag namespace:{self.cfg.namespace})")
        table.add_row(f"{self.ui}/runs", "flow runs, with their progress, tables and markdown artifacts")
        table.add_row(f"{self.ui}/artifacts", "artifact keys: " + ", ".join(artifacts))
        for name, path in paths.items():
            table.add_row(path, name)
        self.console.rule("[bold green]The story, told")
        self.console.print(table)
        total = round(time.perf_counter() - started, 1)
        self.say(f"total: {total} s")
        return {"ok": True, "namespace": self.cfg.namespace, "duration_s": total, "ui": f"{self.ui}/deployments",
                "artifacts": artifacts, "paths": paths, "steps": self.steps}


def run_demo(settings: Settings, console: Console | None = None, keep_serving: bool = False) -> dict:
    """Tell the whole story; returns the JSON report (raises DemoFailed with the steps done so far)."""
    exit_on_sigterm()
    started = time.perf_counter()
    story = Story(settings, console or Console(stderr=True))
    story.start_stack()
    story.reset()
    story.prepare_models()
    serve = story.serve()
    try:
        since = story.land_corpus()
        story.refresh_by_event(since, "Refresh starts by event")
        story.ask("Ask", "Hybrid retrieval + the base model: the facts are there, the house format is not.")
        story.land_training()
        eval_started = story.evaluate()
        story.retrain_by_event(eval_started)
        story.ask("Ask again", "Same question, now with the promoted adapter.", expect_format=True)
        since = story.update_document()
        story.refresh_by_event(since, "Refresh starts by event again")
        story.searchable(since)
        story.ask("Ask about the new fact", "The answer reflects the updated document.", expect_format=True,
                  expect_text="30")
        return story.summary(started)
    finally:
        if keep_serving:
            console_print = (console or Console(stderr=True)).print
            console_print(f"`serve` keeps running (pid {serve.process.pid}); stop it with `kill {serve.process.pid}`")
        else:
            serve.stop()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _specs(settings: Settings):
    return deployment_specs(settings)


def _spec(settings: Settings, key: str):
    return spec_for(settings, key)


def _run_facts(run, since: datetime) -> dict:
    started = run.start_time or run.created
    return {
        "run": run.name, "state": run.state, "created_by": run.created_by, "automation": run.automation,
        "started_after_s": round((started - since).total_seconds(), 1) if started else None,
        "finished_after_s": round((run.end_time - since).total_seconds(), 1) if run.end_time else None,
        "url": run.url,
    }

