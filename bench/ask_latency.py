"""`hybridops ask --json` wall time as a user sees it (a subprocess each): through the warm answering service
`hybridops serve` hosts, and cold (in-process: imports and model loading included).

Starts a private stack (temp home, free ports, no MinIO), lands and indexes examples/corpus, starts
`hybridops serve`, waits until its answering service has loaded the models, asks N suite questions through
it, stops `serve`, and asks the same N questions again (each then answers in-process). Every reply must say
which path answered it. Stops exactly what it started.

`--adapter-from STORE` copies the champion adapter of an existing folder store (e.g. the demo's
var/demo/store) into the private stack's store and promotes it there, so the figures are those of a trained
champion (short house replies) rather than the base model (which rambles up to max_new_tokens).

Usage: python bench/ask_latency.py [--samples 10] [--adapter-from STORE]
Prints one JSON object on stdout (p50/p95 wall seconds per path; progress on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from hybridops.flows.orchestration.answer_client import HEALTH_PATH
from hybridops.flows.orchestration.serving import ServeProcess
from hybridops.infra.services import free_port, private_stack
from hybridops.tasks.core.model_runtime import available_cpus
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.landing import land
from hybridops.tasks.knowledge.refresh import run_refresh

ROOT = Path(__file__).resolve().parent.parent
HYBRIDOPS = Path(sys.executable).parent / "hybridops"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10, help="asks per path")
    parser.add_argument("--adapter-from", type=Path, default=None, metavar="STORE",
                        help="a folder store whose champion adapter answers (default: the base model)")
    args = parser.parse_args()
    questions = [case["question"] for case in yaml.safe_load((ROOT / "examples" / "behaviour_suite.yaml").read_text())
                 ["cases"] if not case.get("refusal")]
    questions = (questions * math.ceil(args.samples / len(questions)))[: args.samples]

    with private_stack("hybridops-ask-bench-", on_event=say, s3_endpoint="",
                       answer_service_port=free_port()) as cfg:
        land(landing_zone(cfg), [ROOT / "examples" / "corpus"])
        run_refresh(cfg)
        adapter = adopt_champion(cfg, args.adapter_from) if args.adapter_from else None
        with ServeProcess(cfg) as serve:
            clock = time.perf_counter()
            wait_until_warm(cfg)
            say(f"serve ready; answering service warm {time.perf_counter() - clock:.1f} s after (log {serve.log_path})")
            warm = [ask(cfg, question, "service") for question in questions]
        cold = [ask(cfg, question, "in_process") for question in questions]
    print(json.dumps({"cpus": available_cpus(), "samples": args.samples, "max_new_tokens": cfg.max_new_tokens,
                      "adapter": adapter, "warm_service": summary(warm), "cold_in_process": summary(cold)}))


def adopt_champion(cfg: Settings, source: Path) -> str:
    """Copy the champion adapter of the folder store `source` into cfg's store and promote it (verified there)."""
    from hybridops.tasks.behaviour.adapters import champion_version, promote, version_key
    from hybridops.tasks.core.object_store import artifact_store, open_store

    origin = open_store(str(source.resolve()), cfg)
    version = champion_version(cfg, origin)
    if version is None:
        raise SystemExit(f"{source} has no champion adapter")
    store = artifact_store(cfg)
    for item in origin.list(version_key(version, "")):
        store.put(item.key, origin.get(item.key))
    promote(cfg, version, f"ask latency bench: champion of {source}")
    say(f"champion {version} copied from {source}")
    return version


def ask(cfg: Settings, question: str, expected_path: str) -> tuple[float, float]:
    """(wall seconds of `hybridops ask --json`, the answer's own latency in seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDOPS_")} | cfg.as_env()
    clock = time.perf_counter()
    done = subprocess.run([str(HYBRIDOPS), "ask", question, "--json"], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    wall = time.perf_counter() - clock
    if done.returncode != 0:
        raise SystemExit(f"ask failed ({done.returncode}): {done.stderr[-2000:]}")
    reply = json.loads(done.stdout)
    if reply["answered_by"] != expected_path:
        raise SystemExit(f"expected {expected_path}, answered by {reply['answered_by']}: {done.stderr[-1000:]}")
    say(f"{expected_path}: {wall:.2f} s wall ({reply['latency_ms'] / 1000:.2f} s answering) {question!r}")
    return wall, reply["latency_ms"] / 1000


def wait_until_warm(cfg: Settings, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{cfg.answer_service_port}{HEALTH_PATH}", timeout=2) as r:
                status = json.load(r)["status"]
            if status != "warming":
                if status != "ok":
                    raise SystemExit(f"answering service: {status}")
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the answering service was not warm within {timeout:.0f} s")


def summary(samples: list[tuple[float, float]]) -> dict:
    walls = sorted(wall for wall, _ in samples)
    return {"p50_s": round(statistics.median(walls), 2), "p95_s": round(walls[math.ceil(0.95 * len(walls)) - 1], 2),
            "answer_p50_s": round(statistics.median(answer for _, answer in samples), 2),
            "wall_s": [round(w, 2) for w, _ in samples]}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
