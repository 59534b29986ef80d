"""LoRA retraining and the adapter registry end to end: real SmolLM2, real MinIO/folder store, real Weaviate."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from hybridops.tasks.core.settings import Settings
from tests.integration.knowledge_support import cli_json
from tests.integration.knowledge_support import drop_namespace, land_and_refresh

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CORPUS_DOCS = sorted(p.relative_to(EXAMPLES / "corpus").as_posix() for p in (EXAMPLES / "corpus").rglob("*")
                     if p.is_file())


def land_training(cfg: Settings, *files: Path) -> None:
    from hybridops.tasks.core.object_store import landing_zone

    landing = landing_zone(cfg)
    for info in list(landing.list("_training/")):
        landing.delete(info.key)
    for path in files:
        landing.put(f"_training/{path.name}", path.read_bytes())


def test_real_prompt_masking_with_the_model_tokenizer(settings: Settings) -> None:
    from hybridops.tasks.behaviour.prompting import format_reply
    from hybridops.tasks.behaviour.training_data import IGNORE_INDEX, build_training_data

    land_training(settings, EXAMPLES / "training" / "refusals.jsonl")
    data = build_training_data(settings, include_interactions=False)
    row = data.train[0]
    target = data.tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX])
    assert target.startswith(format_reply(None, []))
    assert "<|im_end|>" in target
    prompt = data.tokenizer.decode(row["input_ids"][: row["labels"].index(next(t for t in row["labels"]
                                                                               if t != IGNORE_INDEX))])
    assert prompt.endswith("<|im_start|>assistant\n") and "Question:" in prompt


def test_short_training_registers_a_verified_adapter_tamper_is_refused_and_pointer_moves(
    s3_settings: Settings, child_env
) -> None:
    """On MinIO: train 3 steps -> registered files verify -> promote -> one flipped byte is refused."""
    from safetensors.torch import load as load_safetensors

    from hybridops.tasks.behaviour import adapter_loading, adapters
    from hybridops.tasks.behaviour.llm import load_base_model
    from hybridops.tasks.core.object_store import artifact_store
    from hybridops.tasks.behaviour.retrain import train_challenger
    from hybridops.tasks.core.story import QuietReporter
    from hybridops.tasks.behaviour.training import TrainConfig
    from hybridops.tasks.behaviour.training_data import build_training_data

    cfg = s3_settings
    land_training(cfg, EXAMPLES / "training" / "grounded_answers.jsonl")
    data = build_training_data(cfg)
    manifest = train_challenger(cfg, data, TrainConfig.from_settings(cfg, steps=3, batch_size=2), QuietReporter())

    store = artifact_store(cfg)
    assert store.uri.startswith("s3://")
    for name, digest in manifest.files.items():
        blob = store.get(f"adapters/{manifest.version}/{name}")
        assert hashlib.sha256(blob).hexdigest() == digest.sha256
    weights = load_safetensors(store.get(f"adapters/{manifest.version}/adapter_model.safetensors"))
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights)
    assert set(manifest.files) == {"adapter_model.safetensors", "adapter_config.json"}
    assert manifest.dataset_fingerprint == data.fingerprint and manifest.parent is None
    assert manifest.training.steps == 3 and len(manifest.train.loss_curve) == 3
    assert manifest.train.tokens_per_s > 0 and manifest.base_model.sha256 == adapters.base_model_ref(cfg).sha256

    model, _ = adapter_loading.load_adapter_model(cfg, manifest.version)
    base, _ = load_base_model(cfg)
    assert model is not base
    path = "model.layers.0.self_attn.q_proj.weight"
    assert not model.state_dict()[path].equal(base.state_dict()[path])  # the LoRA delta is merged in
    assert "lora" not in " ".join(base.state_dict())  # the shared inference instance stays untouched

    assert adapters.champion_version(cfg) is None
    adapters.promote(cfg, manifest.version, "test")
    assert adapter_loading.load_champion_model(cfg)[2] == manifest.version

    key = f"adapters/{manifest.version}/adapter_model.safetensors"
    blob = bytearray(store.get(key))
    blob[len(blob) // 2] ^= 0x01
    store.put(key, bytes(blob))
    with pytest.raises(adapters.AdapterIntegrityError, match="tampered"):
        adapter_loading.load_champion_model(cfg.model_copy(update={"allow_base_fallback": False}))
    fallback_model, _, version = adapter_loading.load_champion_model(cfg.model_copy(update={"allow_base_fallback": True}))
    assert version is None and fallback_model is base

    listed = cli_json(child_env(cfg), "adapters", "list")
    assert listed["champion"] == manifest.version
    assert [a["version"] for a in listed["adapters"]] == [manifest.version]
    shown = cli_json(child_env(cfg), "adapters", "show", manifest.version)
    assert shown["files"]["adapter_model.safetensors"]["sha256"] == manifest.files["adapter_model.safetensors"].sha256
    rolled = cli_json(child_env(cfg), "adapters", "rollback")
    assert rolled == {"champion": None, "reason": rolled["reason"], "history": [], "event": rolled["event"]}
    assert adapters.champion_version(cfg) is None


def small_suite(path: Path) -> Path:
    """A held-out subset of the example suite: answerable cases plus refusals (fewer LLM calls in CI)."""
    suite = yaml.safe_load((EXAMPLES / "behaviour_suite.yaml").read_text())
    keep = {"refund-window", "shipping-canada", "tent-warranty", "rental-deposit", "api-standard-rate",
            "cancel-order-window", "refuse-revenue", "refuse-vacation-days"}
    suite["cases"] = [c for c in suite["cases"] if c["id"] in keep]
    assert len(suite["cases"]) == len(keep)
    path.write_text(yaml.safe_dump(suite))
    return path


def log_feedback(cfg: Settings) -> str:
    """Three logged interactions with human feedback: an approved reply that ignores the house format, one
    corrected with a full house reply and one corrected with plain text citing a named doc. Returns the first id."""
    from hybridops.tasks.behaviour.interactions import log_interaction, new_interaction, record_feedback
    from hybridops.tasks.behaviour.prompting import format_reply, parse_reply

    ids = []
    for question, raw, verdict, correction, sources in [
        ("How long is the guarantee on apparel?", "Two years, I think.", "approve", None, None),
        ("How long are backpacks covered by the guarantee?", "5 years", "correct",
         format_reply("Backpacks are covered for the lifetime of the product.", ["policies/warranty.html"]), None),
        ("How many days do I have to return an item?", "A month.", "correct", "You have 45 days to return an item.",
         ["policies/refunds.md"]),
    ]:
        item = new_interaction(question=question, reply=parse_reply(raw), retrieved=["policies/warranty.html"],
                               adapter=None, latency_ms=1.0, model=cfg.llm_model)
        log_interaction(cfg, item)
        record_feedback(cfg, item.id, verdict, correction, sources=sources)
        ids.append(item.id)
    return ids[0]


def test_retrain_promotes_a_format_fixing_challenger_then_rejects_a_corrupted_one(
    settings: Settings, tmp_path: Path
) -> None:
    """The behaviour loop: drifted json_format -> train on the example set -> promoted; corrupted data -> rejected."""
    from hybridops.tasks.behaviour import adapters
    from hybridops.tasks.behaviour.eval_history import load_baseline
    from hybridops.tasks.core.object_store import artifact_store
    from hybridops.tasks.core.quarantine import list_quarantined
    from hybridops.tasks.behaviour.retrain import RetrainRequest, retrain
    from hybridops.tasks.behaviour.transfer import transfer_settings

    cfg = settings.model_copy(update={"behaviour_suite": small_suite(tmp_path / "suite.yaml"),
                                      "max_new_tokens": 64})
    land_and_refresh(cfg, CORPUS_DOCS)
    try:
        files = sorted((EXAMPLES / "training").glob("*.jsonl"))
        n_landing = sum(len(path.read_text().splitlines()) for path in files)
        land_training(cfg, *files)
        unformatted = log_feedback(cfg)
        good = retrain(cfg, RetrainRequest(drifted=["json_format", "sources_valid"]))  # settings.train_steps
        assert not good.skipped and good.version
        assert good.dataset["origins"] == {"landing": n_landing, "interaction": 2}  # both corrections train
        [held] = list_quarantined(artifact_store(cfg), "training")  # the approved unformatted reply does not
        assert held.item_id == unformatted and held.reasons[0].startswith("response_format")
        assert good.promoted, good.reason
        assert good.challenger["json_format"] > good.champion["json_format"]
        assert good.challenger["json_format"] >= 0.75, good.challenger  # ~1.0 measured; margin for CPU noise
        assert good.challenger["sources_valid"] > good.champion["sources_valid"]
        assert adapters.champion_version(cfg) == good.version
        assert load_baseline(cfg, good.version).checks["json_format"].pass_rate == good.challenger["json_format"]
        assert adapters.show(cfg, good.version).decision["promote"] is True
        # the out-of-domain gate ran too (tests/data/transfer_suite_small.yaml over the shipped transfer corpus)
        assert cfg.transfer_suite.name == "transfer_suite_small.yaml"
        assert {"json_format", "cites_gold", "refuses_without_context"} <= set(good.transfer_challenger)
        assert set(good.transfer_champion) == set(good.transfer_challenger)
        assert {c.check for c in good.decision.transfer_checks} == set(good.transfer_challenger)
        assert good.cli_dict()["transfer_challenger"] == good.transfer_challenger

        again = retrain(cfg, RetrainRequest())  # no drift and the same data: nothing to do
        assert again.skipped and "no new training data" in again.reason

        store = artifact_store(cfg)
        pointer_before = store.get(adapters.CHAMPION_KEY)
        land_training(cfg, EXAMPLES / "training_corrupted.jsonl")
        n_corrupted = len((EXAMPLES / "training_corrupted.jsonl").read_text().splitlines())
        bad = retrain(cfg, RetrainRequest(force=True, steps=20))
        assert [e.item_id for e in list_quarantined(store, "training")] == [unformatted]  # the corrupted set passes
        assert bad.dataset["rejected"] == 1 and bad.dataset["origins"]["landing"] == n_corrupted  # the contract...
        assert not bad.promoted, bad.challenger  # ...but the challenger it produces is rejected
        assert bad.transfer_challenger and bad.transfer_champion and bad.decision.transfer_checks
        assert bad.champion_version == good.version
        assert "worse" in bad.reason or "not better" in bad.reason
        assert store.get(adapters.CHAMPION_KEY) == pointer_before
        assert adapters.show(cfg, bad.version).decision["promote"] is False
        assert [m.version for m in adapters.list_versions(cfg)] == [good.version, bad.version]
    finally:
        drop_namespace(cfg)
        drop_namespace(transfer_settings(cfg))  # the side namespace holding the transfer corpus


def test_retrain_flow_without_training_data_skips_and_says_why(settings: Settings, prefect_api, monkeypatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from hybridops.flows.retrain_adapter import retrain_adapter

    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    land_training(settings)
    state = retrain_adapter({"drifted_checks": '["json_format"]'}, return_state=True)  # as a trigger renders it
    result = state.result()
    assert result["skipped"] and result["reason"] == "no valid training examples"
    assert result["drifted"] == ["json_format"] and result["version"] is None
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    decision = [a for a in artifacts if a.type == "markdown"]
    assert decision and "no valid training examples" in decision[0].data


def test_retrain_cli_prints_one_json_object(settings: Settings, child_env) -> None:
    out = cli_json(child_env(settings), "retrain", "--drifted", "json_format")
    assert {"version", "promoted", "reason", "challenger", "champion", "train"} <= set(out)
    assert out["version"] is None and out["promoted"] is False and out["skipped"] is True
    assert out["reason"] == "no valid training examples" and out["drifted"] == ["json_format"]
