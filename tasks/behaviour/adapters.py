"""Adapter registry in the artifact store: verified versions and a champion pointer with history.

Layout: adapters/<version>/{adapter_model.safetensors, adapter_config.json, manifest.json} and
adapters/CHAMPION.json. The manifest is written last, so a version without one is an unfinished upload that
`list_versions` ignores and the next `register` cleans up. Turning a verified version into a model is
adapter_loading.py's job (it needs torch/peft; the registry itself does not).
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hybridops.tasks.behaviour.llm import prepare_base_model
from hybridops.tasks.behaviour.training import ADAPTER_FILES, TrainConfig, TrainResult
from hybridops.tasks.core.errors import HybridopsError, IntegrityError
from hybridops.tasks.core.object_store import ObjectStore, artifact_store
from hybridops.tasks.core.settings import Settings

PREFIX = "adapters/"
CHAMPION_KEY = "adapters/CHAMPION.json"
MANIFEST = "manifest.json"
# Formats that unpickle on load (arbitrary code execution); the registry never loads them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class AdapterError(HybridopsError):
    """A registry operation could not be done (unknown version, nothing to roll back to...)."""


class AdapterIntegrityError(AdapterError, IntegrityError):
    """An adapter's files do not match its manifest or are in a refused format: it is never loaded."""


class FileDigest(BaseModel):
    sha256: str
    size: int


class BaseModelRef(BaseModel):
    """Which base model the adapter was trained on (id + sha256 of its weights)."""

    id: str
    sha256: str


class TrainingSummary(BaseModel):
    steps: int
    seconds: float
    tokens_per_s: float
    final_loss: float | None
    validation_loss: float | None
    loss_curve: list[float]


class AdapterManifest(BaseModel):
    """Everything needed to trust, reproduce and judge one adapter version."""

    model_config = ConfigDict(extra="ignore")

    version: str
    created_at: datetime
    files: dict[str, FileDigest]
    base_model: BaseModelRef
    dataset_fingerprint: str
    dataset: dict[str, int] = Field(default_factory=dict, description="example counts: train, validation")
    training: TrainConfig
    train: TrainingSummary
    parent: str | None = Field(None, description="champion when this version was trained")
    eval_scores: dict[str, float] = Field(default_factory=dict, description="check -> pass rate")
    eval_n: int | None = None
    decision: dict[str, Any] | None = None


class ChampionEntry(BaseModel):
    version: str | None  # None = the bare base model
    at: datetime
    reason: str
    scores: dict[str, float] = Field(default_factory=dict, description="baseline pass rates at promotion")


class ChampionPointer(BaseModel):
    """The current champion plus the champions it replaced (newest last) for rollback."""

    current: ChampionEntry
    history: list[ChampionEntry] = Field(default_factory=list)

    @property
    def version(self) -> str | None:
        return self.current.version


# Hashing ---------------------------------------------------------------------------------------------------

def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_BASE_HASHES: dict[tuple[str, int, int], str] = {}


def base_model_ref(settings: Settings) -> BaseModelRef:
    """Identity of the base model: its configured id and the sha256 of its weight files (cached per file)."""
    folder = Path(prepare_base_model(settings))
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in _BASE_HASHES:
            _BASE_HASHES[key] = sha256_file(path)
        digest.update(f"{path.name}:{_BASE_HASHES[key]}\n".encode())
    return BaseModelRef(id=settings.llm_model, sha256=digest.hexdigest())


# Registry -------------------------------------------------------------------------------------------------

def version_key(version: str, name: str) -> str:
    """The store key of one file of a version (the version id is checked: no path tricks)."""
    if not version or "/" in version or version.startswith("."):
        raise AdapterError(f"invalid adapter version {version!r}")
    return f"{PREFIX}{version}/{name}"


def new_version(now: datetime | None = None) -> str:
    """Sortable, collision-free version ids: 20261121-234501-3fa2."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def register(
    settings: Settings,
    adapter_dir: Path,
    *,
    base: BaseModelRef,
    dataset_fingerprint: str,
    dataset_counts: dict[str, int],
    config: TrainConfig,
    result: TrainResult,
    parent: str | None,
    store: ObjectStore | None = None,
) -> AdapterManifest:
    """Upload the adapter files, then the manifest with their sha256 (the manifest makes the version exist)."""
    store = store or artifact_store(settings)
    names = sorted(p.name for p in adapter_dir.iterdir() if p.is_file())
    refused = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if refused:
        raise AdapterIntegrityError(f"refusing to register pickle weights {refused}; save with safetensors")
    missing = [n for n in ADAPTER_FILES if n not in names]
    if missing:
        raise AdapterError(f"{adapter_dir} lacks {missing}")
    clean_unfinished(store)
    version = new_version()
    files: dict[str, FileDigest] = {}
    for name in ADAPTER_FILES:
        data = (adapter_dir / name).read_bytes()
        store.put(version_key(version, name), data)
        files[name] = FileDigest(sha256=sha256_bytes(data), size=len(data))
    manifest = AdapterManifest(
        version=version, created_at=datetime.now(UTC), files=files, base_model=base,
        dataset_fingerprint=dataset_fingerprint, dataset=dataset_counts, training=config,
        train=TrainingSummary(
            steps=result.steps, seconds=result.seconds, tokens_per_s=result.tokens_per_s,
            final_loss=result.loss_curve[-1] if result.loss_curve else None,
            validation_loss=result.validation_loss, loss_curve=result.loss_curve,
        ),
        parent=parent,
    )
    _put_manifest(store, manifest)
    return manifest


def _put_manifest(store: ObjectStore, manifest: AdapterManifest) -> None:
    store.put(version_key(manifest.version, MANIFEST), manifest.model_dump_json(indent=2).encode())


def clean_unfinished(store: ObjectStore, older_than: timedelta = timedelta(hours=1)) -> list[str]:
    """Delete version folders whose upload died before the manifest was written (crash repair). Only versions
    older than `older_than` (their id starts with the creation time) go: a concurrent upload is left alone."""
    by_version: dict[str, list[str]] = {}
    for info in store.list(PREFIX):
        parts = info.key[len(PREFIX):].split("/", 1)
        if len(parts) == 2:
            by_version.setdefault(parts[0], []).append(info.key)
    removed = []
    cutoff = datetime.now(UTC) - older_than
    for version, keys in by_version.items():
        try:
            created = datetime.strptime(version[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            created = datetime.min.replace(tzinfo=UTC)  # not one of ours: unfinished for good
        if created < cutoff and not any(k.endswith("/" + MANIFEST) for k in keys):
            for key in keys:
                store.delete(key)
            removed.append(version)
    return removed


def show(settings: Settings, version: str, store: ObjectStore | None = None) -> AdapterManifest:
    store = store or artifact_store(settings)
    try:
        raw = store.get(version_key(version, MANIFEST))
    except KeyError:
        raise AdapterError(f"no adapter version {version!r} in {store.uri}") from None
    return AdapterManifest.model_validate_json(raw)


def list_versions(settings: Settings, store: ObjectStore | None = None) -> list[AdapterManifest]:
    """All complete versions, oldest first."""
    store = store or artifact_store(settings)
    manifests = [
        AdapterManifest.model_validate_json(store.get(info.key))
        for info in store.list(PREFIX)
        if info.key.endswith("/" + MANIFEST)
    ]
    return sorted(manifests, key=lambda m: (m.created_at, m.version))


def record_evaluation(
    settings: Settings, version: str, scores: dict[str, float], n: int, decision: dict[str, Any] | None,
    store: ObjectStore | None = None,
) -> AdapterManifest:
    """Attach eval scores and the promotion decision to a version's manifest (file hashes are unchanged)."""
    store = store or artifact_store(settings)
    manifest = show(settings, version, store).model_copy(update={"eval_scores": scores, "eval_n": n,
                                                               "decision": decision})
    _put_manifest(store, manifest)
    return manifest


# Champion pointer -----------------------------------------------------------------------------------------

def champion(settings: Settings, store: ObjectStore | None = None) -> ChampionPointer | None:
    """The champion pointer, or None when no adapter was ever promoted (answers use the base model)."""
    store = store or artifact_store(settings)
    try:
        return ChampionPointer.model_validate_json(store.get(CHAMPION_KEY))
    except KeyError:
        return None


def champion_version(settings: Settings, store: ObjectStore | None = None) -> str | None:
    pointer = champion(settings, store)
    return pointer.version if pointer else None


def promote(settings: Settings, version: str, reason: str, scores: dict[str, float] | None = None,
            store: ObjectStore | None = None) -> ChampionPointer:
    """Make `version` the champion; it must verify first. The pointer is replaced atomically."""
    store = store or artifact_store(settings)
    manifest = verify(settings, version, store)
    pointer = champion(settings, store)
    if pointer and pointer.version == version:
        raise AdapterError(f"{version} is already the champion")
    history = (pointer.history + [pointer.current]) if pointer else [
        ChampionEntry(version=None, at=datetime.now(UTC), reason="base model (no adapter)")
    ]
    entry = ChampionEntry(version=version, at=datetime.now(UTC), reason=reason,
                          scores=scores if scores is not None else manifest.eval_scores)
    new = ChampionPointer(current=entry, history=history)
    store.put(CHAMPION_KEY, new.model_dump_json(indent=2).encode())
    return new


def rollback(settings: Settings, reason: str = "manual rollback", store: ObjectStore | None = None) -> ChampionPointer:
    """Restore the previous champion from the pointer history (it may be the bare base model)."""
    store = store or artifact_store(settings)
    pointer = champion(settings, store)
    if not pointer or not pointer.history:
        raise AdapterError("nothing to roll back to: no previous champion")
    previous = pointer.history[-1]
    if previous.version is not None:
        verify(settings, previous.version, store)
    entry = previous.model_copy(update={"at": datetime.now(UTC),
                                        "reason": f"{reason} (from {pointer.version})"})
    new = ChampionPointer(current=entry, history=pointer.history[:-1])
    store.put(CHAMPION_KEY, new.model_dump_json(indent=2).encode())
    return new


# Verification -------------------------------------------------------------------------------------------

def fetch_verified(store: ObjectStore, manifest: AdapterManifest, dest: Path) -> Path:
    """Download a version into `dest` and check every file against the manifest; refuse pickles and extras."""
    version = manifest.version
    listed = set(manifest.files)
    present = {info.key.rsplit("/", 1)[-1] for info in store.list(f"{PREFIX}{version}/")} - {MANIFEST}
    pickles = sorted(n for n in listed | present if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise AdapterIntegrityError(f"adapter {version}: refusing pickle weights {pickles} (only safetensors load)")
    if "adapter_model.safetensors" not in listed:
        raise AdapterIntegrityError(f"adapter {version}: manifest lists no adapter_model.safetensors")
    extra = sorted(present - listed)
    if extra:
        raise AdapterIntegrityError(f"adapter {version}: files not in the manifest: {extra}")
    dest.mkdir(parents=True, exist_ok=True)
    for name, expected in sorted(manifest.files.items()):
        try:
            data = store.get(version_key(version, name))
        except KeyError:
            raise AdapterIntegrityError(f"adapter {version}: {name} is missing from the store") from None
        actual = sha256_bytes(data)
        if actual != expected.sha256 or len(data) != expected.size:
            raise AdapterIntegrityError(
                f"adapter {version}: {name} fails verification (sha256 {actual[:12]}… != manifest "
                f"{expected.sha256[:12]}…); refusing to load a tampered adapter"
            )
        (dest / name).write_bytes(data)
    return dest


def verify(settings: Settings, version: str, store: ObjectStore | None = None) -> AdapterManifest:
    """Check every file of a version against its manifest without loading it (raises AdapterIntegrityError)."""
    store = store or artifact_store(settings)
    manifest = show(settings, version, store)
    with tempfile.TemporaryDirectory(prefix="hybridops-adapter-") as tmp:
        fetch_verified(store, manifest, Path(tmp))
    return manifest


def manifest_summary(manifest: AdapterManifest, champion: str | None) -> dict[str, Any]:
    """One row of `adapters list`."""
    return {
        "version": manifest.version,
        "created_at": manifest.created_at.isoformat(),
        "champion": manifest.version == champion,
        "parent": manifest.parent,
        "dataset_fingerprint": manifest.dataset_fingerprint[:16],
        "steps": manifest.train.steps,
        "final_loss": manifest.train.final_loss,
        "eval_scores": manifest.eval_scores,
        "promoted": (manifest.decision or {}).get("promote"),
    }
