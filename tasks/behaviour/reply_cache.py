"""Replies a model already gave, reused: greedy decoding answers the same prompt from the same weights the same way.

A retrain evaluates the champion on cases it answered at the last retrain or scheduled eval; when neither the
weights nor the prompt (question, retrieved passages, system prompt) changed, generating again costs minutes
and cannot change a single reply. The cache is keyed by everything that decides the reply: the model identity
(base model id and weight hash, the hash of its tokenizer, chat template and generation config files, adapter
version and its file hashes, max_new_tokens, the weights' dtype, the cache format) names one object in the
artifact store, and inside it each reply is keyed by the sha256 of the exact chat messages. A changed passage, a new system
prompt, another chat template or a retrained adapter is a miss, never a stale hit. Replies are stored raw
and parsed and checked anew on every use, so a change to the parser or the checks applies to them too.

It is an optimisation only: an unreadable cache object is ignored (and replaced), a failed write is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from hybridops.tasks.core.object_store import ObjectStore, artifact_store
from hybridops.tasks.core.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "reply_cache/"
FORMAT = 1  # bump when what a cached reply means changes
MAX_ENTRIES = 4096  # per model identity; the oldest replies go first


class ReplyCache:
    """The replies of one model identity: `get` before generating, `put` after, `save` once at the end."""

    def __init__(self, store: ObjectStore, identity: dict) -> None:
        self.store = store
        self.identity = identity
        self.key = PREFIX + _sha256(identity)[:32] + ".json"
        self.replies: dict[str, str] = self._load()
        self.hits = 0
        self._dirty = False

    @classmethod
    def open(cls, settings: Settings, adapter_version: str | None) -> ReplyCache:
        """The cache of the base model (None) or of one registry version of the adapters, as loaded now."""
        from hybridops.tasks.behaviour.adapters import base_model_ref, show
        from hybridops.tasks.behaviour.llm import generation_dtype

        identity: dict = {"format": FORMAT, "base": base_model_ref(settings).model_dump(),
                          "tokenizer": tokenizer_digest(settings), "max_new_tokens": settings.max_new_tokens,
                          "dtype": generation_dtype(settings), "adapter": None}
        if adapter_version:
            files = show(settings, adapter_version).files
            identity["adapter"] = {"version": adapter_version,
                                   "files": {name: digest.sha256 for name, digest in sorted(files.items())}}
        return cls(artifact_store(settings), identity)

    def get(self, messages: Sequence[dict]) -> str | None:
        raw = self.replies.get(_sha256(list(messages)))
        self.hits += raw is not None
        return raw

    def put(self, messages: Sequence[dict], raw: str) -> None:
        key = _sha256(list(messages))
        self.replies.pop(key, None)  # re-inserted last: the most recent survive the size cap
        self.replies[key] = raw
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        kept = dict(list(self.replies.items())[-MAX_ENTRIES:])
        body = json.dumps({"identity": self.identity, "replies": kept}, ensure_ascii=False).encode()
        try:
            self.store.put(self.key, body)
            self._dirty = False
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written costs time, never the eval
            log.warning("reply cache %s not saved: %s", self.key, exc)

    def _load(self) -> dict[str, str]:
        try:
            if not self.store.exists(self.key):
                return {}
            data = json.loads(self.store.get(self.key))
            if data.get("identity") != self.identity or not isinstance(data.get("replies"), dict):
                raise ValueError("identity or layout does not match")
            return {k: v for k, v in data["replies"].items() if isinstance(k, str) and isinstance(v, str)}
        except Exception as exc:  # noqa: BLE001 - unreadable or foreign: start empty, the next save replaces it
            log.warning("reply cache %s ignored: %s", self.key, exc)
            return {}


def tokenizer_digest(settings: Settings) -> str:
    """sha256 over the base model folder's small files (tokenizer, chat template, generation config): they
    decide how messages become tokens and where a reply stops, as much as the weights do."""
    from hybridops.tasks.behaviour.llm import prepare_base_model

    folder = Path(prepare_base_model(settings))
    digest = hashlib.sha256()
    if folder.is_dir():  # an HF hub id (not a folder) is pinned by base_model_ref's id alone
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.endswith(".safetensors") and path.stat().st_size < 64 * 2**20:
                digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _sha256(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
