"""LoRA training of a behaviour adapter: seed -> fresh base model -> LoRA -> plain torch loop -> adapter files."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from hybridops.tasks.behaviour.llm import load_base_model
from hybridops.tasks.behaviour.training_probe import ProbeScore, probe, probe_cases
from hybridops.tasks.core.model_runtime import batch_threads, bf16_supported, torch_device
from hybridops.tasks.core.settings import Settings

# torch, numpy, peft and datasets are imported inside the functions that train: the registry and the CLI
# import this module for TrainConfig and must not pay seconds of torch import for it
if TYPE_CHECKING:
    import torch
    from datasets import Dataset

    from hybridops.tasks.behaviour.training_data import TrainingData

log = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


class TrainConfig(BaseModel):
    """Every knob of one training run; recorded verbatim in the adapter manifest. Defaults live in Settings."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    r: int
    alpha: int
    dropout: float
    target_modules: list[str]
    # LoRA only in the top N decoder layers (None: every layer). Backward stops at the lowest adapted layer,
    # so the frozen lower layers cost one forward pass and no gradient work.
    top_layers: int | None = None
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int = 2
    max_grad_norm: float = 1.0
    max_seq_len: int
    max_batch_tokens: int
    bf16: bool
    seed: int
    # Early stopping (tasks/behaviour/training_probe.py): from min_steps on, every probe_every steps, probe
    # probe_examples held-out examples and stop when format and cited passages agree >= stop_agreement.
    # min_steps None (or >= steps) trains exactly `steps` steps.
    min_steps: int | None = None
    probe_every: int = 8
    probe_examples: int = 12
    stop_agreement: float = 0.9

    @property
    def early_stopping(self) -> bool:
        return self.min_steps is not None and self.min_steps < self.steps and self.probe_examples > 0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> TrainConfig:
        values = dict(
            r=settings.lora_r, alpha=settings.lora_alpha, dropout=settings.lora_dropout,
            target_modules=list(settings.lora_target_modules), top_layers=settings.lora_top_layers,
            steps=settings.train_steps,
            batch_size=settings.train_batch_size, learning_rate=settings.learning_rate,
            max_seq_len=settings.max_seq_len, max_batch_tokens=settings.train_max_batch_tokens,
            bf16=settings.train_bf16, seed=settings.train_seed, min_steps=settings.train_min_steps,
            probe_every=settings.train_probe_every, probe_examples=settings.train_probe_examples,
            stop_agreement=settings.train_stop_agreement,
        )
        values.update(overrides)
        return cls(**values)


class TrainProgress(BaseModel):
    """One optimizer step, reported to the CLI progress bar or a Prefect progress artifact."""

    step: int
    total: int
    loss: float
    seconds: float


class TrainResult(BaseModel):
    """What a run produced: where the adapter is and how training went."""

    adapter_dir: Path
    steps: int
    seconds: float
    step_seconds: float
    tokens_per_s: float
    tokens: int
    loss_curve: list[float]
    validation_loss: float | None
    bf16: bool
    trainable_params: int
    probes: list[ProbeScore] = []
    stopped_early: bool = False
    peak_memory_gb: float | None = None  # the process's peak RSS after training (GPU: peak allocated there)
    threads: int | None = None  # torch CPU threads it trained with


ProgressCallback = Callable[[TrainProgress], None]


def peak_memory_gb(device: str) -> float | None:
    """Peak memory of this training run's process: RSS on CPU (Linux reports KiB), allocated memory on a GPU."""
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 1e9, 2)
    try:
        import resource
    except ImportError:  # Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fresh_base_model(settings: Settings):
    """A trainable copy of the base model; the process-cached inference instance is never mutated."""
    model, _tokenizer = load_base_model(settings, fresh=True)
    return model


def lora_model(base, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    layers = base.config.num_hidden_layers
    top = None if cfg.top_layers is None or cfg.top_layers >= layers else list(range(layers - cfg.top_layers, layers))
    lora = LoraConfig(
        task_type="CAUSAL_LM", r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules), bias="none", layers_to_transform=top,
    )
    return get_peft_model(base, lora)


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest row; padding is masked out of attention and loss."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(
    dataset: Dataset, batch_size: int, seed: int, pad_id: int, group: int = 8
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless seeded epochs of shuffled batches. Within windows of `group` batches, rows of similar length are
    batched together, so little compute goes to padding; batch order is shuffled again afterwards."""
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in dataset]
    rng = random.Random(seed)
    while True:
        order = list(range(len(rows)))
        rng.shuffle(order)
        epoch: list[list[int]] = []
        window = batch_size * group
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: len(rows[i]["input_ids"]))
            epoch += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(epoch)
        for members in epoch:
            yield collate([rows[i] for i in members], pad_id)


def micro_batches(batch: dict[str, torch.Tensor], max_tokens: int) -> list[dict[str, torch.Tensor]]:
    """Split a batch into row groups of at most `max_tokens` padded tokens, each trimmed to its own width."""
    rows, width = batch["input_ids"].shape
    per_part = max(1, max_tokens // max(width, 1))
    parts = []
    for start in range(0, rows, per_part):
        part = {k: v[start : start + per_part] for k, v in batch.items()}
        used = int(part["attention_mask"].sum(dim=1).max())
        parts.append({k: v[:, :used] for k, v in part.items()})
    return parts


def response_loss(model, batch: dict[str, torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy over the response tokens only (labels != -100), like the HF loss, but the
    vocabulary projection runs on those few positions instead of every prompt token: the prompt is ~95% of
    each sequence, so this saves most of the logits memory and the lm_head compute."""
    import torch.nn.functional as F

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    if decoder is None or head is None:  # an architecture without the split: the plain HF loss
        loss = model(**batch).loss
        return loss * keep.sum() if reduction == "sum" else loss
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    logits = head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction=reduction)


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% over the run."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        span = max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))

    return factor


def train(
    settings: Settings,
    cfg: TrainConfig,
    data: TrainingData,
    out_dir: Path,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `data` and save only the adapter (safetensors) into `out_dir`."""
    if len(data.train) == 0:
        raise ValueError("no training examples: nothing to train on")
    with batch_threads(settings.batch_threads):
        return _train(settings, cfg, data, out_dir, progress)


def _train(
    settings: Settings, cfg: TrainConfig, data: TrainingData, out_dir: Path, progress: ProgressCallback | None
) -> TrainResult:
    import torch

    seed_everything(cfg.seed)
    model = lora_model(fresh_base_model(settings), cfg)
    tokenizer = data.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    use_bf16 = cfg.bf16 and bf16_supported()
    device = torch_device()
    model.to(device)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    stream = batches(data.train, cfg.batch_size, cfg.seed, pad_id)
    held_out = probe_cases(data.validation, tokenizer, cfg.probe_examples, cfg.seed) if cfg.early_stopping else []
    probes: list[ProbeScore] = []

    model.train()
    losses: list[float] = []
    tokens = 0
    started = time.perf_counter()
    steps_done = 0
    for step in range(cfg.steps):
        batch = next(stream)
        targets = int((batch["labels"][:, 1:] != -100).sum())
        loss_value = 0.0
        for part in micro_batches(batch, cfg.max_batch_tokens):  # bounded activation memory, same gradient
            part = {k: v.to(device) for k, v in part.items()}
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use_bf16):
                loss = response_loss(model, part, reduction="sum") / targets
            loss.backward()
            loss_value += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss_value, 5))
        tokens += int(batch["attention_mask"].sum())
        steps_done = step + 1
        if progress:
            progress(TrainProgress(step=steps_done, total=cfg.steps, loss=losses[-1],
                                   seconds=time.perf_counter() - started))
        if held_out and steps_done >= cfg.min_steps and steps_done % cfg.probe_every == 0 and steps_done < cfg.steps:
            probes.append(probe(model, tokenizer, held_out, steps_done, settings.max_new_tokens))
            log.info("probe at step %d: %s", steps_done, probes[-1])
            if probes[-1].met(cfg.stop_agreement):
                break
    seconds = time.perf_counter() - started

    validation_loss = evaluate_loss(model, data.validation, cfg, pad_id, device, use_bf16)
    save_adapter(model, out_dir)
    return TrainResult(
        adapter_dir=out_dir, steps=steps_done, seconds=round(seconds, 3),
        step_seconds=round(seconds / max(1, steps_done), 4), tokens_per_s=round(tokens / max(seconds, 1e-9), 1),
        tokens=tokens, loss_curve=losses, validation_loss=validation_loss, bf16=use_bf16,
        trainable_params=sum(p.numel() for p in params), probes=probes, stopped_early=steps_done < cfg.steps,
        peak_memory_gb=peak_memory_gb(device), threads=torch.get_num_threads(),
    )


def evaluate_loss(model, dataset: Dataset, cfg: TrainConfig, pad_id: int, device: str, bf16: bool) -> float | None:
    """Mean response-token loss on the held-out split (None when the split is empty)."""
    import torch

    if len(dataset) == 0:
        return None
    model.eval()
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in dataset]
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(rows), cfg.batch_size):
            batch = {k: v.to(device) for k, v in collate(rows[start : start + cfg.batch_size], pad_id).items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(response_loss(model, batch)) * n
            count += n
    model.train()
    return round(total / max(count, 1), 5)


def save_adapter(model, out_dir: Path) -> Path:
    """Adapter weights + config only, safetensors; nothing else lands in the folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for extra in out_dir.iterdir():
        if extra.name not in ADAPTER_FILES:
            extra.unlink()
    missing = [name for name in ADAPTER_FILES if not (out_dir / name).is_file()]
    if missing:
        raise RuntimeError(f"peft did not write {missing} into {out_dir}")
    return out_dir
