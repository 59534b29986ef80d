"""Training step time of hybridops' LoRA path (hybridops.tasks.behaviour.training.train) vs a plain peft + torch loop, same data.

Prints one JSON object: median step seconds of both (first step excluded as warm-up), their ratio (target
<= 1.1), tokens/s, peak RSS. Rounds alternate between the two loops so machine noise hits both alike.

    python bench/training_benchmark.py [--steps 8] [--rounds 2]

Each run is a fresh process, so the peak RSS reported per path is that path's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def plain_loop(settings, cfg, data, steps: int) -> tuple[list[float], int]:
    """The reference: load, wrap with peft, AdamW, bf16 autocast, fixed-order batches; nothing else."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hybridops.tasks.behaviour.llm import prepare_base_model

    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(prepare_base_model(settings), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=cfg.r, lora_alpha=cfg.alpha,
                                             lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules)))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    pad = data.tokenizer.pad_token_id if data.tokenizer.pad_token_id is not None else data.tokenizer.eos_token_id
    rows = list(data.train)
    use_bf16 = cfg.bf16 and _bf16()
    times, tokens = [], 0
    for step in range(steps):
        chunk = [rows[(step * cfg.batch_size + i) % len(rows)] for i in range(cfg.batch_size)]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk])
        labels = torch.tensor([r["labels"] + [-100] * (width - len(r["labels"])) for r in chunk])
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in chunk])
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
        tokens += int(mask.sum())
    return times, tokens


def ours(settings, cfg, data) -> tuple[list[float], int, float]:
    from hybridops.tasks.behaviour.training import train

    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        result = train(settings, cfg, data, Path(tmp) / "adapter", progress=lambda p: stamps.append(p.seconds))
    times = [b - a for a, b in zip([0.0, *stamps[:-1]], stamps, strict=True)]
    return times, result.tokens, result.tokens_per_s


def _bf16() -> bool:
    from hybridops.tasks.core.model_runtime import bf16_supported

    return bf16_supported()


def run_one(path: str, steps: int, examples: str) -> dict:
    """One loop in this process: its step times, tokens and this process's peak RSS."""
    from hybridops.tasks.knowledge.landing import land
    from hybridops.tasks.core.object_store import FolderStore
    from hybridops.tasks.core.settings import load_settings
    from hybridops.tasks.behaviour.training import TrainConfig
    from hybridops.tasks.behaviour.training_data import build_training_data

    with tempfile.TemporaryDirectory() as home:
        settings = load_settings(home=Path(home), landing=str(Path(home) / "landing"))
        land(FolderStore(settings.landing_uri), [Path(examples)], prefix="_training")
        data = build_training_data(settings, include_interactions=False)
        cfg = TrainConfig.from_settings(settings, steps=steps)
        if path == "ours":
            times, tokens, _ = ours(settings, cfg, data)
        else:
            times, tokens = plain_loop(settings, cfg, data, steps)
    return {"times": times, "tokens": tokens, "batch_size": cfg.batch_size, "train_examples": len(data.train),
            "bf16": cfg.bf16 and _bf16(), "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--examples", default=str(ROOT / "examples" / "training"))
    parser.add_argument("--only", choices=["ours", "plain"], help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only, args.steps, args.examples)))
        return

    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    for _ in range(args.rounds):  # alternate, each in a fresh process: fair noise, per-path peak RSS
        for path in ("ours", "plain"):
            done = subprocess.run([sys.executable, __file__, "--only", path, "--steps", str(args.steps),
                                   "--examples", args.examples], capture_output=True, text=True, check=True)
            runs[path].append(json.loads(done.stdout.strip().splitlines()[-1]))

    def summary(path: str) -> dict:
        steps = [t for run in runs[path] for t in run["times"][1:]]  # first step of a run = warm-up
        seconds = sum(sum(run["times"]) for run in runs[path])
        return {"step_s": round(statistics.median(steps), 3),
                "tokens_per_s": round(sum(run["tokens"] for run in runs[path]) / seconds, 1),
                "peak_rss_gb": round(max(run["peak_rss_gb"] for run in runs[path]), 2)}

    ours_, plain = summary("ours"), summary("plain")
    first = runs["ours"][0]
    print(json.dumps({
        "steps_per_round": args.steps, "rounds": args.rounds, "batch_size": first["batch_size"],
        "train_examples": first["train_examples"], "bf16": first["bf16"],
        "ours": ours_, "plain_peft_torch": plain,
        "step_time_ratio": round(ours_["step_s"] / plain["step_s"], 3), "target_ratio": 1.1,
    }))


if __name__ == "__main__":
    main()
