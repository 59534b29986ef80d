"""Settings: env parsing, derived locations, validation and redaction of secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hybridops.tasks.core.settings import Settings


def test_env_prefix_and_types(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYBRIDOPS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HYBRIDOPS_NAMESPACE", "team_a")
    monkeypatch.setenv("HYBRIDOPS_WEAVIATE_URL", "http://127.0.0.1:18080")
    monkeypatch.setenv("HYBRIDOPS_LORA_TARGET_MODULES", '["q_proj","k_proj"]')
    cfg = Settings()
    assert cfg.home == tmp_path / "state"
    assert cfg.namespace == "team_a"
    assert cfg.weaviate_port == 18080
    assert cfg.lora_target_modules == ["q_proj", "k_proj"]
    assert cfg.landing_uri == str(tmp_path / "state" / "landing")
    assert cfg.store_uri == str(tmp_path / "state" / "store")
    assert cfg.collection_prefix == "Team_a"


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("HYBRIDOPS_NAMESPACE=from_dotenv\n")
    assert Settings().namespace == "from_dotenv"


def test_s3_landing_puts_the_store_on_s3_under_the_namespace() -> None:
    cfg = Settings(namespace="demo", landing="s3://bucket/docs", s3_bucket="bucket")
    assert cfg.store_uri == "s3://bucket/demo/store"


@pytest.mark.parametrize("bad", ["", "Upper", "1abc", "has-dash", "a" * 41, "../x"])
def test_unsafe_namespace_is_rejected(bad: str) -> None:
    with pytest.raises(ValidationError, match="namespace"):
        Settings(namespace=bad)


def test_secrets_never_appear_in_redacted_output_or_repr() -> None:
    cfg = Settings(s3_secret_key="very-secret-value", weaviate_api_key="wv-key-123")
    dumped = json.dumps(cfg.redacted())
    assert "very-secret-value" not in dumped and "wv-key-123" not in dumped
    assert "very-secret-value" not in repr(cfg) and "very-secret-value" not in str(cfg)
    assert cfg.redacted()["s3_secret_key"] == "**********"
    assert cfg.redacted()["weaviate_api_key"] == "**********"


def test_as_env_round_trips_for_child_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = Settings(namespace="roundtrip", s3_secret_key="k" * 12, lora_target_modules=["v_proj"], home=tmp_path)
    for key, value in cfg.as_env().items():
        monkeypatch.setenv(key, value)
    assert Settings() == cfg
