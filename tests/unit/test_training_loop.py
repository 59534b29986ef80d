"""The training loop's pieces on a tiny randomly initialised Llama (built from a config, no model files)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hybridops.tasks.behaviour.training import TrainConfig, batches, collate, lora_model, micro_batches, response_loss  # noqa: E402
from hybridops.tasks.core.settings import Settings  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = lora_model(LlamaForCausalLM(config), TrainConfig.from_settings(Settings(), dropout=0.0))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; make the adapter non-trivial
            torch.nn.init.normal_(param, std=0.05)
    return model


ROWS = [
    {"input_ids": list(range(1, 31)), "labels": [-100] * 24 + list(range(25, 31))},
    {"input_ids": list(range(3, 23)), "labels": [-100] * 15 + list(range(18, 23))},
    {"input_ids": list(range(5, 17)), "labels": [-100] * 9 + list(range(14, 17))},
]


def test_collate_pads_right_and_masks_padding_out_of_loss() -> None:
    batch = collate(ROWS, pad_id=0)
    assert batch["input_ids"].shape == (3, 30)
    assert batch["attention_mask"].sum(dim=1).tolist() == [30, 20, 12]
    assert (batch["labels"][1, 20:] == -100).all() and (batch["input_ids"][2, 12:] == 0).all()


def test_response_loss_equals_the_hf_loss(tiny) -> None:
    batch = collate(ROWS, pad_id=0)
    with torch.no_grad():
        assert float(response_loss(tiny, batch)) == pytest.approx(float(tiny(**batch).loss), rel=1e-5)


def test_micro_batches_trim_padding_and_give_the_same_gradient(tiny) -> None:
    batch = collate(ROWS, pad_id=0)
    parts = micro_batches(batch, max_tokens=40)
    assert [p["input_ids"].shape for p in parts] == [(1, 30), (1, 20), (1, 12)]
    targets = int((batch["labels"][:, 1:] != -100).sum())

    def gradient(pieces):
        tiny.zero_grad()
        for piece in pieces:
            (response_loss(tiny, piece, reduction="sum") / targets).backward()
        return torch.cat([p.grad.flatten() for p in tiny.parameters() if p.requires_grad])

    full, split = gradient([batch]), gradient(parts)
    assert full.abs().max() > 0
    assert torch.allclose(full, split, atol=1e-6)


def test_batches_are_seeded_and_cover_every_row_each_epoch() -> None:
    from datasets import Dataset

    data = Dataset.from_list([{"input_ids": [i] * (i + 1), "labels": [i] * (i + 1)} for i in range(10)])
    first = [b["input_ids"][:, 0].tolist() for b, _ in zip(batches(data, 3, seed=1, pad_id=0), range(4), strict=False)]
    again = [b["input_ids"][:, 0].tolist() for b, _ in zip(batches(data, 3, seed=1, pad_id=0), range(4), strict=False)]
    assert first == again
    assert sorted(x for batch in first for x in batch) == list(range(10))  # one epoch = 4 batches of <= 3


def test_top_layers_puts_lora_only_in_the_top_decoder_layers() -> None:
    """lora_top_layers: the lower layers stay frozen and unadapted, so backward stops at the lowest adapted one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = lora_model(LlamaForCausalLM(config), TrainConfig.from_settings(Settings(lora_top_layers=1)))
    adapted = {int(name.split(".layers.")[1].split(".")[0]) for name, p in model.named_parameters() if p.requires_grad}
    assert adapted == {3}
    every = lora_model(LlamaForCausalLM(config), TrainConfig.from_settings(Settings(lora_top_layers=9)))
    assert {int(n.split(".layers.")[1].split(".")[0]) for n, p in every.named_parameters() if p.requires_grad} \
        == {0, 1, 2, 3}



def test_peak_memory_of_a_run_is_reported_in_gigabytes() -> None:
    from hybridops.tasks.behaviour.training import peak_memory_gb

    assert 0.01 < peak_memory_gb("cpu") < 64  # this process's peak RSS: torch alone is well over 10 MB


def test_training_and_eval_batches_use_every_cpu_then_give_the_setting_back(monkeypatch) -> None:
    """batch_threads: every CPU (or the requested count) inside, the process's own thread count after; a user's
    OMP_NUM_THREADS is left alone."""
    import torch

    from hybridops.tasks.core.model_runtime import available_cpus, batch_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with batch_threads() as threads:
        assert threads == torch.get_num_threads() == available_cpus()
    assert torch.get_num_threads() == before
    with batch_threads(1) as threads:
        assert threads == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with batch_threads() as threads:
        assert threads == torch.get_num_threads() == before
    assert torch.get_num_threads() == before
