"""Registered adapters without training: a tiny adapter folder and the registry call a retrain would make."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hybridops.tasks.behaviour import adapters
from hybridops.tasks.behaviour.adapters import AdapterManifest, BaseModelRef
from hybridops.tasks.behaviour.training import TrainConfig, TrainResult
from hybridops.tasks.core.object_store import ObjectStore
from hybridops.tasks.core.settings import Settings


def adapter_folder(tmp_path: Path, payload: bytes = b"weights") -> Path:
    folder = tmp_path / f"adapter-{hashlib.sha1(payload).hexdigest()[:6]}"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(payload)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    return folder


def register(cfg: Settings, store: ObjectStore, folder: Path, parent: str | None = None) -> AdapterManifest:
    result = TrainResult(adapter_dir=folder, steps=3, seconds=1.5, step_seconds=0.5, tokens_per_s=100.0,
                         tokens=150, loss_curve=[2.0, 1.5, 1.0], validation_loss=1.2, bf16=False,
                         trainable_params=10)
    return adapters.register(
        cfg, folder, base=BaseModelRef(id="base", sha256="b" * 64), dataset_fingerprint="f" * 64,
        dataset_counts={"train": 3, "validation": 1}, config=TrainConfig.from_settings(Settings(), steps=3), result=result,
        parent=parent, store=store,
    )
