"""Models with adapters: a verified registry version merged into the base model, cached per process.

Separate from the registry (adapters.py) because this is the only part that needs torch/peft; peft is
imported inside `_merge`, where the merge happens, so using the registry never loads it.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from hybridops.tasks.behaviour.adapters import (
    AdapterIntegrityError,
    version_key,
    base_model_ref,
    champion_version,
    fetch_verified,
    show,
)
from hybridops.tasks.behaviour.llm import load_base_model
from hybridops.tasks.core.object_store import artifact_store
from hybridops.tasks.core.settings import Settings

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_MODELS: OrderedDict[tuple[str, str], tuple[tuple, Any, Any]] = OrderedDict()
_MAX_MODELS = 2  # champion + challenger; each merged copy of the base model costs ~0.5 GB


def load_adapter_model(settings: Settings, version: str):
    """(model, tokenizer) of the base model with `version` merged in; verified, then cached per process."""
    store = artifact_store(settings)
    # The stored objects' version tokens are part of the cache entry: a file changed after loading is re-verified.
    listing = tuple(sorted((info.key, info.version) for info in store.list(version_key(version, ""))))
    key = (store.uri, version)
    with _LOCK:
        cached = _MODELS.get(key)
        if cached and cached[0] == listing:
            _MODELS.move_to_end(key)
            return cached[1], cached[2]
        _MODELS.pop(key, None)
        manifest = show(settings, version, store)
        current = base_model_ref(settings)
        if manifest.base_model.sha256 != current.sha256:
            raise AdapterIntegrityError(
                f"adapter {version} was trained on base {manifest.base_model.id} "
                f"({manifest.base_model.sha256[:12]}…), but the base model is {current.id} ({current.sha256[:12]}…)"
            )
        base, tokenizer = load_base_model(settings)
        with tempfile.TemporaryDirectory(prefix="hybridops-adapter-") as tmp:
            folder = fetch_verified(store, manifest, Path(tmp))
            model = _merge(copy.deepcopy(base), folder)
        _MODELS[key] = (listing, model, tokenizer)
        while len(_MODELS) > _MAX_MODELS:
            _MODELS.popitem(last=False)
        return model, tokenizer


def _merge(base, folder: Path):
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged


def load_version_model(settings: Settings, version: str | None):
    """(model, tokenizer) of one registry version, or of the bare base model for None (challenger vs champion)."""
    return load_adapter_model(settings, version) if version else load_base_model(settings)


def load_champion_model(settings: Settings):
    """(model, tokenizer, version) for answering: the champion adapter, or the base model when there is none.

    A champion that fails verification is refused; the base model is used instead only when
    settings.allow_base_fallback is set (version is then None)."""
    version = champion_version(settings)
    if version is None:
        model, tokenizer = load_base_model(settings)
        return model, tokenizer, None
    try:
        model, tokenizer = load_adapter_model(settings, version)
    except AdapterIntegrityError as exc:
        if not settings.allow_base_fallback:
            raise
        log.warning("champion adapter refused, answering with the base model: %s", exc)
        model, tokenizer = load_base_model(settings)
        return model, tokenizer, None
    return model, tokenizer, version
