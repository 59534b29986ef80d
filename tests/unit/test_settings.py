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


# --- S3 credentials: built-in keys only for the local MinIO, else configured keys or the AWS chain ---------

from hybridops.tasks.core.errors import BadInputError  # noqa: E402
from hybridops.tasks.core.settings import LOCAL_MINIO_ACCESS_KEY, LOCAL_MINIO_SECRET_KEY  # noqa: E402

BUILT_IN = (LOCAL_MINIO_ACCESS_KEY, LOCAL_MINIO_SECRET_KEY)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "http://127.0.0.1:54321", "http://localhost:9000",
                                      "http://[::1]:9100", "HTTP://LOCALHOST:9000"])
def test_no_keys_on_the_local_minio_uses_the_built_in_keys(endpoint: str) -> None:
    cfg = Settings(s3_endpoint=endpoint)
    assert cfg.s3_endpoint_is_local and cfg.s3_credentials() == BUILT_IN
    assert cfg.minio_root_credentials() == BUILT_IN


@pytest.mark.parametrize("endpoint", [None, "", "https://s3.eu-central-1.amazonaws.com", "http://minio.internal:9000",
                                      "http://10.0.0.5:9000", "http://127.0.0.1.nip.io:9000"])
def test_no_keys_elsewhere_means_the_aws_credential_chain(endpoint: str | None) -> None:
    cfg = Settings(s3_endpoint=endpoint)
    assert not cfg.s3_endpoint_is_local and cfg.s3_credentials() is None


def test_configured_keys_are_used_everywhere() -> None:
    for endpoint in ["http://127.0.0.1:9000", "https://minio.example.com", None]:
        cfg = Settings(s3_endpoint=endpoint, s3_access_key="AKIAEXAMPLE", s3_secret_key="real-secret-value")
        assert cfg.s3_credentials() == ("AKIAEXAMPLE", "real-secret-value")
    local = Settings(s3_access_key="admin", s3_secret_key="local-root-password")
    assert local.minio_root_credentials() == ("admin", "local-root-password")  # `up` runs MinIO with them


@pytest.mark.parametrize("endpoint", [None, "https://s3.amazonaws.com", "http://minio.internal:9000"])
def test_built_in_keys_are_refused_for_any_other_endpoint(endpoint: str | None) -> None:
    cfg = Settings(s3_endpoint=endpoint, s3_access_key=LOCAL_MINIO_ACCESS_KEY, s3_secret_key=LOCAL_MINIO_SECRET_KEY)
    with pytest.raises(BadInputError, match="only for the local MinIO.*HYBRIDOPS_S3_ACCESS_KEY/SECRET_KEY"):
        cfg.s3_credentials()
    # the public secret with some other access key is refused just the same
    with pytest.raises(BadInputError, match="only for the local MinIO"):
        Settings(s3_endpoint=endpoint, s3_access_key="me", s3_secret_key=LOCAL_MINIO_SECRET_KEY).s3_credentials()
    assert Settings(s3_access_key=LOCAL_MINIO_ACCESS_KEY, s3_secret_key=LOCAL_MINIO_SECRET_KEY).s3_credentials() == BUILT_IN


def test_half_a_key_pair_is_refused() -> None:
    with pytest.raises(BadInputError, match="both"):
        Settings(s3_access_key="only-the-access-key").s3_credentials()
    with pytest.raises(BadInputError, match="both"):
        Settings(s3_endpoint=None, s3_secret_key="only-the-secret").s3_credentials()


def test_the_s3_client_uses_the_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: boto3.client is replaced and only its arguments are looked at."""
    import boto3

    from hybridops.tasks.core.object_store import s3_client

    seen: list[dict] = []
    monkeypatch.setattr(boto3, "client", lambda service, **kwargs: seen.append(kwargs) or object())
    s3_client(Settings(s3_endpoint=None))
    assert "aws_access_key_id" not in seen[-1] and "aws_secret_access_key" not in seen[-1]  # default chain
    s3_client(Settings(s3_endpoint="http://127.0.0.1:41234"))
    assert (seen[-1]["aws_access_key_id"], seen[-1]["aws_secret_access_key"]) == BUILT_IN
    with pytest.raises(BadInputError, match="only for the local MinIO"):
        s3_client(Settings(s3_endpoint="https://s3.amazonaws.com", s3_access_key=LOCAL_MINIO_ACCESS_KEY,
                           s3_secret_key=LOCAL_MINIO_SECRET_KEY))
    assert len(seen) == 2  # refused before any client was made


def test_unset_keys_stay_unset_in_child_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    env = Settings(s3_endpoint="https://s3.amazonaws.com").as_env()
    assert "HYBRIDOPS_S3_ACCESS_KEY" not in env and "HYBRIDOPS_S3_SECRET_KEY" not in env


def test_a_relative_home_is_made_absolute_where_the_settings_are_read(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """Services start inside the home; with a relative one Weaviate's data went to var/var/data."""
    monkeypatch.chdir(tmp_path)
    assert Settings(home=Path("var")).home == tmp_path / "var"
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert Settings(home=Path("~/state")).home == tmp_path / "user" / "state"


def test_answers_and_evals_stay_fp32_unless_bf16_is_asked_for(tmp_path) -> None:
    from hybridops.tasks.behaviour.llm import generation_dtype
    from hybridops.tasks.core.model_runtime import bf16_supported

    assert generation_dtype(Settings(home=tmp_path)) == "float32"  # batched replies equal one-at-a-time ones
    wanted = Settings(home=tmp_path, llm_bf16=True)
    assert generation_dtype(wanted) == ("bfloat16" if bf16_supported() else "float32")
