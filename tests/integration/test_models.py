"""The real packaged models: MiniLM embeddings (bf16-checked) and SmolLM2 converted from its GGUF.

No servers needed, so no `stack` fixture: these run against the installed model wheels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridops.tasks.knowledge.embeddings import BF16_MIN_COSINE, load_embedder
from hybridops.tasks.behaviour.llm import MARKER, generate_chat, load_base_model, prepare_llm
from hybridops.tasks.core.settings import Settings

TEXTS = [
    "How do I reset my password?",
    "What are the steps to change my login password?",
    "The quarterly revenue grew by twelve percent.",
    "Bananas are rich in potassium.",
    "Weaviate keeps one vector per object and answers hybrid queries.",
    "",
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(Settings())


def test_paraphrases_are_closer_than_unrelated_sentences(embedder) -> None:
    vectors = embedder.embed(TEXTS[:4])
    paraphrase = float(vectors[0] @ vectors[1])
    unrelated = max(float(vectors[0] @ vectors[2]), float(vectors[0] @ vectors[3]), float(vectors[1] @ vectors[3]))
    assert paraphrase > 0.6
    assert paraphrase > unrelated + 0.3


def test_vectors_are_384_dim_float32_and_unit_length(embedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert embedder.dim == 384
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert embedder.embed([]).shape == (0, 384)


def test_length_sorted_batches_come_back_in_input_order(embedder) -> None:
    texts = [f"{word} " * n for word, n in (("alpha", 3), ("river", 120), ("tax", 1), ("music", 40), ("cloud", 9))]
    together = embedder.embed(texts)
    one_by_one = np.vstack([embedder.embed([text]) for text in texts])
    assert np.min(np.sum(together * one_by_one, axis=1)) > 0.999


def test_long_text_is_truncated_to_the_model_window(embedder) -> None:
    long_text = "The landing zone receives documents every hour. " * 200
    assert embedder.count_tokens(long_text) > embedder.max_tokens
    head_only = long_text[: len(long_text) // 4]
    vectors = embedder.embed([long_text, head_only])
    assert float(vectors[0] @ vectors[1]) > 0.999  # both see the same first max_tokens tokens


def test_model_id_names_model_and_precision(embedder) -> None:
    assert embedder.model_id == f"all-MiniLM-L6-v2@{embedder.precision}"
    fp32 = load_embedder(Settings(embedding_bf16=False))
    assert fp32.model_id == "all-MiniLM-L6-v2@fp32"
    assert load_embedder(Settings()) is embedder  # process-cached


def test_bf16_embeddings_stay_within_tolerance_of_fp32(embedder) -> None:
    if not embedder.bf16:
        pytest.skip(f"bf16 not active here: {embedder.precision_note}")
    texts = TEXTS + ["A much longer passage about data contracts. " * 30]
    fp32 = load_embedder(Settings(embedding_bf16=False)).embed(texts)
    bf16 = embedder.embed(texts)
    assert np.min(np.sum(fp32 * bf16, axis=1)) >= BF16_MIN_COSINE
    assert embedder.bf16_cosine is not None and embedder.bf16_cosine >= BF16_MIN_COSINE


@pytest.mark.slow
def test_gguf_conversion_repairs_a_crash_and_is_cached_afterwards(tmp_path: Path) -> None:
    cfg = Settings(models_cache=tmp_path)
    name = "SmolLM2-135M-Instruct.Q4_1"
    # What a crash mid-conversion leaves: a temp folder and a target without the completion marker.
    (tmp_path / f".{name}.tmp-99999").mkdir()
    (tmp_path / name).mkdir()
    (tmp_path / name / "model.safetensors").write_bytes(b"half written")

    first = prepare_llm(cfg)
    assert not first.cached
    assert first.path == tmp_path / name
    assert json.loads((first.path / MARKER).read_text())["source"]["dtype"] == "float32"
    assert (first.path / "model.safetensors").stat().st_size > 100_000_000
    assert "<|im_start|>assistant" in (first.path / "chat_template.jinja").read_text()
    assert not list(tmp_path.glob(f".{name}.tmp-*")) and not list(tmp_path.glob(f".{name}.old-*"))

    second = prepare_llm(cfg)
    assert second.cached
    assert second.path == first.path


@pytest.mark.slow
def test_smollm2_answers_a_chat_prompt_deterministically() -> None:
    model, tokenizer = load_base_model(Settings())
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = generate_chat(model, tokenizer, messages, max_new_tokens=24)
    assert answer and answer == answer.strip()
    assert "paris" in answer.lower()
    assert "<|im_end|>" not in answer and "assistant" not in answer.lower()[:10]
    assert generate_chat(model, tokenizer, messages, max_new_tokens=24) == answer


@pytest.mark.slow
def test_base_model_takes_a_lora_adapter_and_trains() -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = Settings()
    model, tokenizer = load_base_model(cfg, fresh=True)
    assert model is not load_base_model(cfg)[0]  # a fresh copy leaves the shared one untouched
    peft_model = get_peft_model(
        model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_target_modules))
    )
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    batch = tokenizer(["The answer is 42."], return_tensors="pt")
    peft_model.train()
    loss = peft_model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
