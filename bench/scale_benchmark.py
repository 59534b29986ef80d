"""Scale: what one landed document costs as the corpus grows (issue 12): 2k, 20k, 100k documents, folder and MinIO.

Per corpus size and landing backend, in a namespace of its own on one private stack (temp home, free ports,
stopped and deleted at the end):
- land -> searchable for ONE changed document, p50/p95 over --landings landings through the served path:
  `hybridops serve` as a child (notification -> change feed -> hybridops.landing.changed -> trigger ->
  targeted refresh-index run), until a hybrid search for the landing's marker word returns it
  (freshness_benchmark.measure: half new documents, half updates of one);
- idle cost for --idle-seconds with nothing landing: LIST requests and CPU seconds of a watcher run in this
  process (watch_notified, the function the watch-landing flow runs, default intervals; for a folder its
  first listing falls in the window, as at the start of every run), and CPU seconds of the whole `serve`
  process tree (runner polling, webhook and the served watcher) over the same window;
- a one-document change applied in this process by a full reconcile (`run_refresh`) and by a targeted
  refresh (`refresh(..., RefreshRequest(targeted=True))` after `change_feed.record_changes`, as a notifier
  records it), model loaded and warm;
- peak RSS of a full reconcile (one document changed): a child process reports its own ru_maxrss, also
  before the reconcile starts (imports + embedder loaded), so the reconcile's own share shows.

Corpus: generated notes (random words of examples/corpus), 1-3 sections of one chunk each. Sizes up to
--real-model-max-docs (2,000) embed with the packaged MiniLM; larger ones with `hashing:384`, the
deterministic feature-hashing embedder (no semantics; tasks/knowledge/embeddings.py), set as the namespace's
embedding_model so this process and the served flows use it alike. Every figure names its model.

Set-up before serving (not timed as a figure): files written directly / boto3 puts on a thread pool; one
fallback listing seeds the watcher's cursor (the served watcher then announces only what lands later); a
full refresh in a child process builds the index (bounded by --load-budget); only then are the bucket's
notifications switched on (a bulk load would otherwise queue one webhook call per object). The served
phase runs first; the in-process refreshes and the child reconcile follow once `serve` has stopped. Every
phase checks --stop-by first; a phase that does not fit is listed under `skipped` with the reason.

    python bench/scale_benchmark.py --sizes 2000,20000,100000 --backends folder,minio --landings 20 [--json]

Progress on stderr; one JSON object on stdout with --json, a table otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks

import freshness_benchmark as freshness  # noqa: E402  (measure, summary, event_latency, percentile)

from hybridops.tasks.core.object_store import artifact_store, landing_zone  # noqa: E402
from hybridops.tasks.core.settings import PACKAGED_EMBEDDING_MODEL, PROJECT_ROOT, Settings, load_settings  # noqa: E402

CHEAP_MODEL = "hashing:384"
BACKENDS = ("folder", "minio")
DOCS_PER_FOLDER = 1_000
PUT_THREADS = 8  # boto3's default connection pool holds 10
CHILD_FLAG = "--child-full-refresh"
BUILD_DOCS_PER_S = {"hashing": 100, "model": 12}
"""Initial build rates measured on the 2-core box (1-3 chunks a note): a build expected to overrun --stop-by
is not started."""


def progress(message: str) -> None:
    print(f"[scale {datetime.now(timezone.utc):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- time budget ---------------------------------------------------------------------------------------


class OutOfTime(Exception):
    """A phase would not fit the run's deadline: it is skipped and reported, never cut half-way."""


class Budget:
    """The run's wall-clock deadline (--stop-by); each phase asks for the seconds it expects to need."""

    def __init__(self, stop_by: datetime | None):
        self.stop_by = stop_by

    def remaining_s(self) -> float:
        if self.stop_by is None:
            return float("inf")
        return (self.stop_by - datetime.now(timezone.utc)).total_seconds()

    def claim(self, phase: str, need_s: float) -> float:
        """The seconds left for `phase`; OutOfTime when fewer than it needs."""
        left = self.remaining_s()
        if left < need_s:
            raise OutOfTime(f"{phase}: needs ~{need_s:.0f} s, {max(0.0, left):.0f} s left before --stop-by")
        return left


# --- corpus --------------------------------------------------------------------------------------------


def vocabulary() -> list[str]:
    """Lower-case words of the shipped corpus: English, offline, the same on every machine."""
    words: set[str] = set()
    for path in sorted((PROJECT_ROOT / "examples" / "corpus").rglob("*.md")):
        words.update(re.findall(r"[a-z]{3,}", path.read_text(encoding="utf-8").lower()))
    return sorted(words)


def doc_key(i: int) -> str:
    return f"notes/{i // DOCS_PER_FOLDER:03d}/note-{i:06d}.md"


def note(i: int, words: list[str], extra: str = "") -> bytes:
    """Note i: front matter, a title and 1-3 sections of 90-140 words, one chunk each with either embedder
    (MiniLM and the hashing tokens both stay under the 256-token chunk bound)."""
    rng = random.Random(i)
    sections = []
    for number in range(1, 2 + i % 3):
        sentences, count, target = [], 0, rng.randint(90, 140)
        while count < target:
            length = rng.randint(8, 16)
            sentences.append(" ".join(rng.choices(words, k=length)).capitalize() + ".")
            count += length
        sections.append(f"## {rng.choice(words).capitalize()} {number}\n\n{' '.join(sentences)}\n")
    if extra:
        sections.append(f"## Revision\n\n{extra}\n")
    header = f"---\ntitle: Note {i}\ntags: [scale, topic-{i % 50}]\n---\n# Note {i}\n\n"
    return (header + "\n".join(sections)).encode()


def land_corpus(settings: Settings, size: int, words: list[str]) -> dict:
    """Put the corpus into the landing zone: files written directly, or S3 puts on a thread pool."""
    started = time.perf_counter()
    if settings.landing_uri.startswith("s3://"):
        landing = landing_zone(settings)
        with ThreadPoolExecutor(PUT_THREADS, thread_name_prefix="land") as pool:
            for done, _ in enumerate(pool.map(lambda i: landing.put(doc_key(i), note(i, words)), range(size)), 1):
                if done % 10_000 == 0:
                    progress(f"  {done}/{size} objects put")
    else:
        root = Path(settings.landing_uri)
        for i in range(size):
            path = root / doc_key(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(note(i, words))
    return {"documents": size, "seconds": round(time.perf_counter() - started, 1)}


def change_note(settings: Settings, i: int, words: list[str]) -> str:
    """Land a new version of note i (a revision section with a fresh marker); its key."""
    landing_zone(settings).put(doc_key(i), note(i, words, f"Revised with marker rev{uuid.uuid4().hex[:12]}."))
    return doc_key(i)


# --- set-up --------------------------------------------------------------------------------------------


def case_settings(stack: Settings, size: int, backend: str, real_model_max_docs: int) -> Settings:
    """A namespace of its own on the shared stack; its landing zone and store on the backend's side."""
    namespace = f"scale_{backend}_{size}"
    if backend == "minio":
        landing = f"s3://{stack.s3_bucket}/{namespace}/landing"
        store = f"s3://{stack.s3_bucket}/{namespace}/store"
    else:
        landing, store = str(stack.home / namespace / "landing"), str(stack.home / namespace / "store")
        Path(landing).mkdir(parents=True)
    model = PACKAGED_EMBEDDING_MODEL if size <= real_model_max_docs else CHEAP_MODEL
    return stack.model_copy(update={"namespace": namespace, "landing": landing, "store": store,
                                    "embedding_model": model})


def seed_watcher(settings: Settings) -> dict:
    """One fallback listing, as a watch-landing run starts with, announcing nothing: the cursor then holds the
    corpus, so the served watcher announces only later landings. The listing's own cost is a figure too."""
    from hybridops.tasks.knowledge.landing_notifications import watch_notified

    cpu, wall = time.process_time(), time.perf_counter()
    stats = watch_notified(settings, landing_zone(settings), artifact_store(settings), lambda changes: None,
                           run_for_s=0)
    return {"seconds": round(time.perf_counter() - wall, 2), "cpu_s": round(time.process_time() - cpu, 2),
            "list_requests": stats.list_requests, "keys": stats.keys_announced}


def max_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve, so a child started by
    this (large) benchmark process would report the parent's RSS at fork as its own peak."""
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024, 1)
    except (OSError, AttributeError):  # not Linux
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child_full_refresh() -> None:
    """(In the child.) A full reconcile of the namespace in the environment; its timings and peak RSS as JSON."""
    from hybridops.tasks.knowledge.embeddings import load_embedder
    from hybridops.tasks.knowledge.refresh import run_refresh

    settings = load_settings()
    started = time.perf_counter()
    embedder = load_embedder(settings)
    loaded_s, loaded_rss = time.perf_counter() - started, max_rss_mb()
    report = run_refresh(settings, embedder=embedder)
    print(json.dumps({"seconds": round(time.perf_counter() - started - loaded_s, 2),
                      "embedder_load_s": round(loaded_s, 2), "rss_before_reconcile_mb": loaded_rss,
                      "peak_rss_mb": max_rss_mb(), "mode": report.mode, "model": embedder.model_id,
                      "documents": report.documents.model_dump(), "chunks": report.chunks.model_dump()}))


def full_refresh_in_child(settings: Settings, timeout_s: float) -> dict:
    """A full reconcile in a child process: its own peak RSS, and a hard time limit (killed when over; inf:
    none)."""
    timeout = None if timeout_s == float("inf") else timeout_s
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDOPS_")} | settings.as_env()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), CHILD_FLAG], env=env,
                              cwd=settings.home, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise OutOfTime(f"full refresh not done in {timeout_s:.0f} s (killed)") from None
    if done.returncode != 0:
        raise RuntimeError(f"full refresh child exited {done.returncode}: {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def enable_notifications(settings: Settings) -> str | None:
    """MinIO: this namespace's landing prefix notifies the webhook from now on (None for a folder)."""
    from hybridops.infra.minio_notifications import configure_bucket_notifications, notifies

    return configure_bucket_notifications(settings) if notifies(settings) else None


# --- figures -------------------------------------------------------------------------------------------


def refresh_costs(settings: Settings, size: int, words: list[str], targeted_repeats: int) -> dict:
    """One changed note applied by a full reconcile, then (another note, its key recorded in the change feed
    as a notifier does) by targeted refreshes: what each costs at this size, model warm."""
    from hybridops.tasks.knowledge.change_feed import record_changes
    from hybridops.tasks.knowledge.document_contract import make_candidate, validate_documents
    from hybridops.tasks.knowledge.embeddings import load_embedder
    from hybridops.tasks.knowledge.refresh import RefreshRequest, refresh, run_refresh

    embedder = load_embedder(settings)
    embedder.embed(["warm up the kernels"] * 8)
    validate_documents([make_candidate("warm.md", b"# Warm\n\nup", "0", settings)], settings)
    picks = iter(random.Random(size).sample(range(size), targeted_repeats + 1))
    change_note(settings, next(picks), words)
    started = time.perf_counter()
    full = run_refresh(settings, embedder=embedder)
    full_s = time.perf_counter() - started
    targeted = []
    for i in picks:
        key = change_note(settings, i, words)
        record_changes(artifact_store(settings), [key], "bench")
        started = time.perf_counter()
        report = refresh(settings, RefreshRequest(targeted=True), embedder=embedder)
        targeted.append((time.perf_counter() - started, report))
    times = [seconds for seconds, _ in targeted]
    return {"full_s": round(full_s, 3), "full_mode": full.mode, "full_updated": full.documents.updated,
            "targeted_s": round(statistics.median(times), 3), "targeted_runs_s": [round(t, 3) for t in times],
            "targeted_updated": [r.documents.updated for _, r in targeted],
            "targeted_modes": sorted({r.mode for _, r in targeted}), "model": embedder.model_id}


def tree_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of a process and each of its descendants, by pid."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    times = {}
    for process in processes:
        try:
            cpu = process.cpu_times()
            times[process.pid] = cpu.user + cpu.system
        except psutil.Error:
            continue
    return times


def idle_cost(settings: Settings, serve_pid: int, seconds: float) -> dict:
    """Nothing lands for `seconds`: a watcher in this process (watch_notified, default intervals) counts its
    LIST requests and CPU, and the `serve` tree's CPU is read over the same window."""
    from hybridops.tasks.knowledge.landing_notifications import watch_notified

    announced = []
    before, cpu = tree_cpu_s(serve_pid), time.process_time()
    stats = watch_notified(settings, landing_zone(settings), artifact_store(settings), announced.append,
                           run_for_s=seconds)
    watcher_cpu = time.process_time() - cpu
    after = tree_cpu_s(serve_pid)
    serve_cpu = sum(t - before.get(pid, 0.0) for pid, t in after.items())
    return {"window_s": stats.seconds, "list_requests": stats.list_requests,
            "list_requests_per_s": round(stats.list_requests / stats.seconds, 4) if stats.seconds else None,
            "listings": stats.polls, "fallback_interval_s": stats.fallback_seconds,
            "watcher_cpu_s": round(watcher_cpu, 3), "serve_tree_cpu_s": round(serve_cpu, 3),
            "serve_processes": len(after), "announced_while_idle": len(announced)}


def steady_list_rate(seed: dict, idle: dict) -> float | None:
    """LIST requests per second in the long run: one listing's pages every fallback interval."""
    interval = idle.get("fallback_interval_s")
    return round(seed["list_requests"] / interval, 5) if interval else None


def served(settings: Settings, landings: int, timeout_s: float, idle_s: float, budget: Budget,
           skipped: list[dict]) -> dict:
    """`hybridops serve` for the namespace: a warm-up landing, the timed landings, then the idle window. First
    the cursor is moved past the set-up's own changes (so the served watcher does not announce them) and a
    MinIO bucket starts notifying."""
    from hybridops.flows.orchestration.serving import ServeProcess

    figures: dict = {"listing_before_serve": seed_watcher(settings), "notifications": enable_notifications(settings)}
    started = time.perf_counter()
    with ServeProcess(settings) as serve:
        figures["serve_ready_s"] = round(time.perf_counter() - started, 1)
        progress(f"  serving {len(serve.deployments)} deployments; warm-up landing")
        prefix = f"_bench/scale-{uuid.uuid4().hex[:6]}"
        warm = freshness.measure(settings, 1, timeout_s * 2, prefix + "-warm")
        figures["warm_up_s"] = warm[0]["seconds"]
        if figures["warm_up_s"] is None:  # the served path does not work: timing it would only time out
            skipped.append({"phase": "served landings + idle", "reason": "the warm-up landing never became "
                            f"searchable; first failure in the serve log: {first_failure(serve.log_path)}"})
            return figures
        since = datetime.now(timezone.utc)
        samples = freshness.measure(settings, landings, timeout_s, prefix)
        report = freshness.summary(settings, samples)
        report["event_to_run"] = freshness.event_latency(settings, since, samples)
        figures["land_to_searchable"] = {k: v for k, v in report.items() if k not in {"targets", "met"}}
        try:
            budget.claim("idle window", idle_s + 15)
            time.sleep(5)  # the last landing's run ends; the window starts quiet
            progress(f"  idle window: {idle_s:.0f} s")
            figures["idle"] = idle_cost(settings, serve.process.pid, idle_s)
        except OutOfTime as exc:
            skipped.append({"phase": "idle", "reason": str(exc)})
    return figures


def first_failure(log_path: Path) -> str | None:
    """The first ERROR line of a log (why served runs fail), trimmed."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    return next((line.strip()[:300] for line in lines if "| ERROR" in line), None)


def drop_namespace(settings: Settings) -> None:
    """Free the stack for the next case: the namespace's index generations and its landing folder."""
    from hybridops.tasks.core.weaviate_connection import weaviate_session
    from hybridops.tasks.knowledge.index import drop_all_generations

    try:
        with weaviate_session(settings) as client:
            drop_all_generations(client, settings)
    except Exception as exc:  # noqa: BLE001 - the stack goes at the end anyway; clean-up must not hide results
        progress(f"  dropping {settings.namespace}'s index failed: {exc}")
    if not settings.landing_uri.startswith("s3://"):
        shutil.rmtree(Path(settings.landing_uri).parent, ignore_errors=True)


def run_case(stack: Settings, size: int, backend: str, args: argparse.Namespace, words: list[str],
             budget: Budget) -> dict:
    """Every figure for one corpus size and backend; phases that do not fit are skipped and named."""
    settings = case_settings(stack, size, backend, args.real_model_max_docs)
    case: dict = {"documents": size, "backend": backend, "embedding_model": settings.embedding_model,
                  "skipped": []}
    progress(f"{backend}, {size} documents, {settings.embedding_model}")
    try:
        prepare_index(settings, size, words, args.load_budget, budget, case)
    except (OutOfTime, RuntimeError) as exc:
        case["skipped"] += [{"phase": "initial load", "reason": str(exc)},
                            {"phase": "all figures", "reason": "no index"}]
        drop_namespace(settings)
        return case
    build_s = case["initial_build"]["seconds"]
    phases: list[tuple[str, float, Callable[[], dict]]] = [  # the served path first: the headline figure
        ("served", 90 + args.landings * 9 + args.idle_seconds,
         lambda: served(settings, args.landings, args.timeout, args.idle_seconds, budget, case["skipped"])),
        ("refresh", build_s * 0.3 + 20, lambda: refresh_costs(settings, size, words, args.targeted_repeats)),
        ("reconcile_memory", build_s * 0.3 + 30, lambda: reconcile_memory(settings, size, words, budget)),
    ]
    for phase, need_s, run in phases:
        try:
            budget.claim(phase, need_s)
            progress(f"  {phase}")
            figures = run()
        except OutOfTime as exc:
            case["skipped"].append({"phase": phase, "reason": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one phase failing must not lose the others' figures
            case["skipped"].append({"phase": phase, "reason": f"failed: {type(exc).__name__}: {exc}"})
            progress(f"  {phase} failed: {exc}")
        else:
            if phase == "served":  # several figures: the landings, the idle window, serving itself
                case.update(figures)
            else:
                case[phase] = figures
    if "idle" in case:
        case["idle"]["steady_list_requests_per_s"] = steady_list_rate(case["seed_listing"], case["idle"])
    drop_namespace(settings)
    return case


def prepare_index(settings: Settings, size: int, words: list[str], load_budget: float, budget: Budget,
                  case: dict) -> None:
    """Land the corpus, seed the watcher's cursor, build the index in a child (bounded by load_budget)."""
    budget.claim("initial load", 60)
    case["land"] = land_corpus(settings, size, words)
    progress(f"  landed in {case['land']['seconds']} s; seeding the watcher's cursor")
    case["seed_listing"] = seed_watcher(settings)
    progress(f"  one listing: {case['seed_listing']}; building the index (child process)")
    need_s = 30 + size / BUILD_DOCS_PER_S["hashing" if settings.embedding_model == CHEAP_MODEL else "model"]
    case["initial_build"] = full_refresh_in_child(settings, min(load_budget, budget.claim("initial build", need_s)))
    case["corpus_chunks"] = case["initial_build"]["chunks"]["total"]
    progress(f"  built in {case['initial_build']['seconds']} s ({case['corpus_chunks']} chunks), "
             f"peak RSS {case['initial_build']['peak_rss_mb']} MB")


def reconcile_memory(settings: Settings, size: int, words: list[str], budget: Budget) -> dict:
    """Peak RSS of a full reconcile with one note changed (a child process reports its own)."""
    change_note(settings, random.Random(-size).randrange(size), words)
    return full_refresh_in_child(settings, budget.remaining_s())


# --- output --------------------------------------------------------------------------------------------


def _s(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else "-" if value is None else str(value)


def table(report: dict) -> str:
    """One row per size and backend."""
    header = ("| documents | backend | model | land->searchable p50 / p95 s | found | idle LIST/s (window; steady) "
              "| idle CPU s: watcher / serve tree | refresh s: targeted / full / full in a fresh process "
              "| full reconcile peak RSS MB |")
    rows = [header, "|" + "---|" * 9]
    for c in report["cases"]:
        land = c.get("land_to_searchable", {})
        idle, refresh, memory = c.get("idle", {}), c.get("refresh", {}), c.get("reconcile_memory", {})
        rows.append("| " + " | ".join([
            f"{c['documents']:,}", c["backend"], c["embedding_model"].removeprefix("packaged:"),
            f"{_s(land.get('p50_s'))} / {_s(land.get('p95_s'))}",
            f"{land.get('found', '-')}/{land.get('landings', '-')}",
            f"{idle.get('list_requests_per_s', '-')}; {idle.get('steady_list_requests_per_s', '-')}",
            f"{_s(idle.get('watcher_cpu_s'))} / {_s(idle.get('serve_tree_cpu_s'))} in {_s(idle.get('window_s'))} s",
            f"{_s(refresh.get('targeted_s'))} / {_s(refresh.get('full_s'))} / {_s(memory.get('seconds'))}",
            f"{_s(memory.get('peak_rss_mb'))} (before it: {_s(memory.get('rss_before_reconcile_mb'))})",
        ]) + " |")
    skipped = [f"- {c['documents']:,} {c['backend']}: {s['phase']}: {s['reason']}"
               for c in report["cases"] for s in c["skipped"]]
    not_run = [f"- {n['documents']:,} {n['backend']}: {n['reason']}" for n in report["not_run"]]
    extra = (["", "skipped:", *skipped] if skipped else []) + (["", "not run:", *not_run] if not_run else [])
    return "\n".join(rows + extra)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000,100000", help="Corpus sizes, comma-separated.")
    parser.add_argument("--backends", default="folder,minio", help="Landing backends: folder, minio.")
    parser.add_argument("--landings", type=int, default=20, help="Timed landings per case (>= 20 for p95).")
    parser.add_argument("--timeout", type=float, default=90.0, help="Give up on one landing after this long.")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="Idle window per case.")
    parser.add_argument("--targeted-repeats", type=int, default=3, help="Targeted refreshes per case (median).")
    parser.add_argument("--real-model-max-docs", type=int, default=2_000,
                        help=f"Sizes up to this embed with MiniLM, larger ones with {CHEAP_MODEL}.")
    parser.add_argument("--load-budget", type=float, default=1_800.0, help="Seconds the initial build may take.")
    parser.add_argument("--stop-by", help="UTC time (HH:MM) by which the run ends; phases that do not fit are skipped.")
    parser.add_argument("--json", action="store_true", help="One JSON object on stdout instead of a table.")
    args = parser.parse_args()
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.size_list or min(args.size_list) < 10 or any(b not in BACKENDS for b in args.backend_list):
        parser.error(f"--sizes are >= 10 each; --backends from {', '.join(BACKENDS)}")
    if args.landings < 1:
        parser.error("--landings must be >= 1")
    return args


def stop_by(value: str | None) -> datetime | None:
    """HH:MM UTC today (tomorrow if already past)."""
    if not value:
        return None
    hour, minute = (int(part) for part in value.split(":"))
    now = datetime.now(timezone.utc)
    moment = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return moment if moment > now else moment + timedelta(days=1)


def main() -> None:
    if sys.argv[1:] == [CHILD_FLAG]:
        return child_full_refresh()
    args = parse_args()
    from hybridops.flows.orchestration.serving import exit_on_sigterm
    from hybridops.infra.services import private_stack

    exit_on_sigterm()
    budget, words = Budget(stop_by(args.stop_by)), vocabulary()
    report: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "cheap_model": CHEAP_MODEL, "real_model": PACKAGED_EMBEDDING_MODEL, "cases": [], "not_run": []}
    overrides = {} if "minio" in args.backend_list else {"s3_endpoint": ""}
    with private_stack("hybridops-scale-", progress, landing=None, store=None, **overrides) as stack:
        for size in args.size_list:
            for backend in args.backend_list:
                try:
                    budget.claim(f"{backend} {size}", 120)
                except OutOfTime as exc:
                    report["not_run"].append({"documents": size, "backend": backend, "reason": str(exc)})
                    continue
                started = time.perf_counter()
                case = run_case(stack, size, backend, args, words, budget)
                case["case_seconds"] = round(time.perf_counter() - started, 1)
                report["cases"].append(case)
                progress(f"done: {backend} {size} in {case['case_seconds']} s: {json.dumps(case)}")  # if later ones die
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(json.dumps(report) if args.json else table(report))


if __name__ == "__main__":
    main()
