"""`hybridops ask` through the answering service `hybridops serve` hosts, end to end: real stack, real SmolLM2,
the real CLI in a subprocess.

One `serve` (warm start off: nothing else to start) answers `ask`; a promotion and a rollback made while it
runs are answered with the new champion at once; with `serve` stopped the same question is answered
in-process, identically (greedy decoding)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from hybridops.flows.orchestration.answer_client import HEALTH_PATH
from hybridops.flows.orchestration.serving import ServeProcess
from hybridops.infra.services import free_port
from hybridops.tasks.behaviour.interactions import get_interaction
from hybridops.tasks.core.settings import Settings
from tests.integration.knowledge_support import cli_json

pytestmark = pytest.mark.slow

DOCS = ["policies/refunds.md"]
QUESTION = "How many days do I have to return an item?"
SAME = ("answer", "sources", "invalid_sources", "retrieved", "format_ok", "adapter", "fallback", "warning", "logged")
"""Everything but the interaction id, the latency and the path must be the same either way."""


def wait_warm(cfg: Settings, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{cfg.answer_service_port}{HEALTH_PATH}", timeout=2) as r:
                health = json.load(r)
            if health["status"] != "warming":
                return health
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the answering service did not warm up within {timeout:.0f} s")


def untrained_adapter(cfg: Settings, folder: Path) -> str:
    """A registered LoRA adapter that changes nothing (B = 0): a real champion to promote, without training."""
    from peft import LoraConfig, get_peft_model

    from hybridops.tasks.behaviour.adapters import base_model_ref, register
    from hybridops.tasks.behaviour.llm import load_base_model
    from hybridops.tasks.behaviour.training import TrainConfig, TrainResult

    model, _ = load_base_model(cfg, fresh=True)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)
    result = TrainResult(adapter_dir=folder, steps=0, seconds=0.0, step_seconds=0.0, tokens_per_s=0.0, tokens=0,
                         loss_curve=[], validation_loss=None, bf16=False, trainable_params=0)
    return register(cfg, folder, base=base_model_ref(cfg), dataset_fingerprint="0" * 64,
                    dataset_counts={"train": 0, "validation": 0}, config=TrainConfig.from_settings(cfg, steps=1),
                    result=result, parent=None).version


def test_ask_answers_through_serve_follows_the_champion_and_falls_back_when_it_is_down(
        indexed: Settings, child_env, tmp_path: Path) -> None:
    from hybridops.tasks.behaviour.adapters import promote, rollback

    cfg = Settings(**(indexed.model_dump() | {"answer_service_port": free_port(), "warm_start": False}))
    env = child_env(cfg)
    with ServeProcess(cfg):
        assert wait_warm(cfg)["status"] == "ok"
        served = cli_json(env, "ask", QUESTION)
        assert served["answered_by"] == "service" and served["adapter"] is None
        assert served["logged"] and get_interaction(cfg, served["interaction_id"]).question == QUESTION

        version = untrained_adapter(cfg, tmp_path / "adapter")
        promote(cfg, version, "answering-service test")
        promoted = cli_json(env, "ask", QUESTION)  # the same `serve`: the pointer is read per request
        assert promoted["answered_by"] == "service" and promoted["adapter"] == version
        rollback(cfg)
        assert cli_json(env, "ask", QUESTION)["adapter"] is None

    local = cli_json(env, "ask", QUESTION)  # `serve` is gone: answered in-process
    assert local["answered_by"] == "in_process" and local["logged"]
    assert {key: local[key] for key in SAME} == {key: served[key] for key in SAME}
    assert local["interaction_id"] != served["interaction_id"]
