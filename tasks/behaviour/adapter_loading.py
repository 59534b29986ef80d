"""Models with adapters: a verified registry version merged into the base model, cached per process.

Separate from the registry (adapters.py) because this is the only part that needs torch/peft; peft is
imported inside `merge_adapter`, where the merge happens, so using the registry never loads it.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

from hybridops.tasks.behaviour.adapters import (
    AdapterError,
    AdapterIntegrityError,
    version_key,
    base_model_ref,
    champion_version,
    fetch_verified,
    show,
)
from hybridops.tasks.behaviour.llm import generation_dtype, load_base_model
from hybridops.tasks.core.object_store import artifact_store
from hybridops.tasks.core.settings import Settings

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_MODELS: OrderedDict[tuple[str, str, str], tuple[tuple, Any, Any]] = OrderedDict()
_MAX_MODELS = 2  # champion + challenger; each merged copy of the base model costs ~0.5 GB


def load_adapter_model(settings: Settings, version: str):
    """(model, tokenizer) of the base model with `version` merged in, in the generation dtype; verified, then
    cached per process. The merge happens on an fp32 copy (a bf16 base would round the small LoRA deltas first)."""
    store = artifact_store(settings)
    # The stored objects' version tokens are part of the cache entry: a file changed after loading is re-verified.
    listing = tuple(sorted((info.key, info.version) for info in store.list(version_key(version, ""))))
    dtype = generation_dtype(settings)
    key = (store.uri, version, dtype)
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
            model = merge_adapter(copy.deepcopy(base), folder, dtype)
        _MODELS[key] = (listing, model, tokenizer)
        while len(_MODELS) > _MAX_MODELS:
            _MODELS.popitem(last=False)
        return model, tokenizer


def merge_adapter(base, folder: Path, dtype: str):
    """`base` (consumed) with the peft adapter in `folder` merged in, cast to `dtype`, in eval mode."""
    import torch
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
    merged = peft_model.merge_and_unload().to(getattr(torch, dtype))
    merged.eval()
    return merged


def load_generation_base(settings: Settings):
    """(model, tokenizer) of the bare base model in the generation dtype (see llm.generation_dtype)."""
    return load_base_model(settings, dtype=generation_dtype(settings))


def load_version_model(settings: Settings, version: str | None):
    """(model, tokenizer) of one registry version, or of the bare base model for None (challenger vs champion)."""
    return load_adapter_model(settings, version) if version else load_generation_base(settings)


class ChampionModel(NamedTuple):
    """The answering model; `warning` says why the base model stands in for a champion that cannot be used."""

    model: Any
    tokenizer: Any
    version: str | None
    warning: str | None = None


def load_champion(settings: Settings) -> ChampionModel:
    """The champion adapter, or the base model when there is none.

    A champion that cannot be used (corrupt or empty pointer, corrupt or missing manifest, files failing
    verification, another base model) is refused: with settings.allow_base_fallback the base model answers
    instead (version None, with a warning), otherwise it raises AdapterIntegrityError (exit 4)."""
    version = None
    try:
        version = champion_version(settings)
        if version is None:
            model, tokenizer = load_generation_base(settings)
            return ChampionModel(model, tokenizer, None)
        model, tokenizer = load_adapter_model(settings, version)
        return ChampionModel(model, tokenizer, version)
    except AdapterError as exc:  # every registry refusal; ChampionPointerError included
        problem = str(exc) if version is None else f"champion adapter {version} cannot be used: {exc}"
        if not settings.allow_base_fallback:
            if isinstance(exc, AdapterIntegrityError):
                raise
            raise AdapterIntegrityError(problem) from exc
        warning = f"{problem}; answering with the base model (allow_base_fallback)"
        log.warning("%s", warning)
        model, tokenizer = load_generation_base(settings)
        return ChampionModel(model, tokenizer, None, warning)


def load_champion_model(settings: Settings):
    """(model, tokenizer, version) for answering: `load_champion` without the warning."""
    loaded = load_champion(settings)
    return loaded.model, loaded.tokenizer, loaded.version
