"""Adapter registry in the artifact store: verified versions and a champion pointer with history.

Layout: adapters/<version>/{adapter_model.safetensors, adapter_config.json, manifest.json} and
adapters/CHAMPION.json. The manifest is written last, so a version without one is an unfinished upload that
`list_versions` ignores and the next `register` cleans up. Turning a verified version into a model is
adapter_loading.py's job (it needs torch/peft; the registry itself does not).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hybridops.tasks.behaviour.llm import prepare_base_model
from hybridops.tasks.behaviour.training import ADAPTER_FILES, TrainConfig, TrainResult
from hybridops.tasks.core.errors import ConflictError, HybridopsError, IntegrityError
from hybridops.tasks.core.object_store import ObjectStore, artifact_store
from hybridops.tasks.core.settings import Settings

PREFIX = "adapters/"
CHAMPION_KEY = "adapters/CHAMPION.json"
MANIFEST = "manifest.json"
# Formats that unpickle on load (arbitrary code execution); the registry never loads them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

log = logging.getLogger(__name__)


class AdapterError(HybridopsError):
    """A registry operation could not be done (unknown version, nothing to roll back to...)."""


class AdapterIntegrityError(AdapterError, IntegrityError):
    """An adapter's files do not match its manifest or are in a refused format: it is never loaded."""


class ChampionPointerError(AdapterIntegrityError):
    """adapters/CHAMPION.json is empty or unreadable: `ask` may fall back to the base model; `adapters promote`
    and `adapters rollback` repair it (a corrupt pointer counts as one without history)."""


class ChampionMovedError(AdapterError, ConflictError):
    """Compare-and-swap lost: the champion is no longer the one the challenger was judged against."""


def check_file_name(name: str) -> str:
    """A manifest's file name must be a plain name: no path separators, no '..', not absolute, not empty."""
    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or Path(name).is_absolute() or Path(name).name != name):
        raise ValueError(f"invalid file name {name!r} in manifest (plain names only)")
    return name


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
    stopped_early: bool = False
    probes: list[dict] = Field(default_factory=list, description="held-out agreement per probe (early stopping)")
    peak_memory_gb: float | None = None


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
    decision: dict[str, Any] | None = Field(
        None, description="promotion decision; None = registered but not decided yet (a retrain that died "
        "between registering and deciding; the next retrain on the same data decides it)")

    @field_validator("files")
    @classmethod
    def _plain_file_names(cls, files: dict[str, FileDigest]) -> dict[str, FileDigest]:
        for name in files:
            check_file_name(name)
        return files


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
            stopped_early=result.stopped_early, probes=[p.model_dump() for p in result.probes],
            peak_memory_gb=result.peak_memory_gb,
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
    return parse_manifest(version, raw)


def parse_manifest(version: str, raw: bytes) -> AdapterManifest:
    """A stored manifest, checked: valid JSON of the schema, plain file names, its own version id."""
    try:
        manifest = AdapterManifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "manifest"
        raise AdapterIntegrityError(
            f"adapter {version}: manifest is corrupt ({where}: {first.get('msg', exc)})") from None
    if manifest.version != version:
        raise AdapterIntegrityError(f"adapter {version}: manifest names version {manifest.version!r}")
    return manifest


class InvalidVersion(BaseModel):
    """A version whose manifest cannot be used (corrupt JSON, unsafe file names...): listed, never loaded."""

    version: str
    reason: str


def scan_versions(settings: Settings, store: ObjectStore | None = None
                  ) -> tuple[list[AdapterManifest], list[InvalidVersion]]:
    """All complete versions (oldest first) and the ones whose manifest does not verify (by version id)."""
    store = store or artifact_store(settings)
    manifests: list[AdapterManifest] = []
    invalid: list[InvalidVersion] = []
    for info in store.list(PREFIX):
        parts = info.key[len(PREFIX):].split("/")
        if len(parts) != 2 or parts[1] != MANIFEST:
            continue
        try:
            manifests.append(parse_manifest(parts[0], store.get(info.key)))
        except KeyError:  # deleted while listing
            continue
        except HybridopsError as exc:
            invalid.append(InvalidVersion(version=parts[0], reason=str(exc)))
    manifests.sort(key=lambda m: (m.created_at, m.version))
    invalid.sort(key=lambda v: v.version)
    return manifests, invalid


def list_versions(settings: Settings, store: ObjectStore | None = None) -> list[AdapterManifest]:
    """All complete versions with a valid manifest, oldest first (invalid ones: see scan_versions)."""
    manifests, invalid = scan_versions(settings, store)
    for bad in invalid:
        log.warning("skipping adapter %s: %s", bad.version, bad.reason)
    return manifests


def undecided_challenger(settings: Settings, dataset_fingerprint: str,
                         store: ObjectStore | None = None) -> AdapterManifest | None:
    """The newest version trained on this data that no run decided on (its retrain died after registering it).

    A version without a decision that is (or was) the champion was promoted by hand, so it is not pending."""
    store = store or artifact_store(settings)
    try:
        pointer = champion(settings, store)
    except ChampionPointerError:
        pointer = None
    known = {e.version for e in ([pointer.current, *pointer.history] if pointer else [])}
    pending = [m for m in list_versions(settings, store)
               if m.decision is None and m.dataset_fingerprint == dataset_fingerprint and m.version not in known]
    return pending[-1] if pending else None


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
    """The champion pointer, or None when no adapter was ever promoted (answers use the base model).

    Raises ChampionPointerError when the pointer exists but is empty or unreadable."""
    store = store or artifact_store(settings)
    try:
        raw = store.get(CHAMPION_KEY)
    except KeyError:
        return None
    try:
        return ChampionPointer.model_validate_json(raw)
    except ValidationError as exc:
        what = "empty" if not raw.strip() else f"corrupt ({exc.errors()[0].get('msg') if exc.errors() else exc})"
        raise ChampionPointerError(
            f"the champion pointer {CHAMPION_KEY} is {what}; repair it with `hybridops adapters promote VERSION` "
            "or `hybridops adapters rollback` (back to the base model)") from None


def _champion_or_none(settings: Settings, store: ObjectStore) -> ChampionPointer | None:
    """The pointer for moving it: a corrupt one counts as no pointer (no history), with a warning."""
    try:
        return champion(settings, store)
    except ChampionPointerError as exc:
        log.warning("%s; replacing it", exc)
        return None


def champion_version(settings: Settings, store: ObjectStore | None = None) -> str | None:
    pointer = champion(settings, store)
    return pointer.version if pointer else None


_ANY: Any = object()  # promote(expected_champion=...) default: no compare-and-swap


def promote(settings: Settings, version: str, reason: str, scores: dict[str, float] | None = None,
            store: ObjectStore | None = None, *, expected_champion: str | None = _ANY) -> ChampionPointer:
    """Make `version` the champion; it must verify first. The pointer is replaced atomically.

    With `expected_champion` (a version, or None for the base model) this is a compare-and-swap: when the
    pointer no longer names that champion (moved by hand, or by a run that took over a stale lock) it raises
    ChampionMovedError and nothing changes. A corrupt pointer is replaced (as if there was none) only
    without `expected_champion`."""
    store = store or artifact_store(settings)
    manifest = verify(settings, version, store)
    if expected_champion is _ANY:
        pointer = _champion_or_none(settings, store)
    else:
        try:
            pointer = champion(settings, store)
        except ChampionPointerError as exc:
            raise ChampionMovedError(f"champion changed during the run: {exc}") from None
        current = pointer.version if pointer else None
        if current != expected_champion:
            raise ChampionMovedError(
                f"champion changed during the run: it is {current or 'the base model'}, the challenger was "
                f"judged against {expected_champion or 'the base model'}")
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
    """Restore the previous champion from the pointer history (it may be the bare base model).

    A corrupt pointer has no usable history: it is reset to the base model (a valid pointer again)."""
    store = store or artifact_store(settings)
    try:
        pointer = champion(settings, store)
    except ChampionPointerError as exc:
        log.warning("%s; resetting it to the base model", exc)
        new = ChampionPointer(current=ChampionEntry(
            version=None, at=datetime.now(UTC), reason=f"{reason} (champion pointer was corrupt: reset to the base model)"))
        store.put(CHAMPION_KEY, new.model_dump_json(indent=2).encode())
        return new
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
    try:  # manifest objects built in code skip the model's validator: check names again
        for name in listed:
            check_file_name(name)
    except ValueError as exc:
        raise AdapterIntegrityError(f"adapter {version}: {exc}") from None
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for name, expected in sorted(manifest.files.items()):
        target = (dest / name).resolve()
        if target.parent != root:  # never write outside dest (symlinks included)
            raise AdapterIntegrityError(f"adapter {version}: file {name!r} would be written outside {dest}")
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
        target.write_bytes(data)
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
        "valid": True,
        "reason": None,
        "created_at": manifest.created_at.isoformat(),
        "champion": manifest.version == champion,
        "parent": manifest.parent,
        "dataset_fingerprint": manifest.dataset_fingerprint[:16],
        "steps": manifest.train.steps,
        "final_loss": manifest.train.final_loss,
        "eval_scores": manifest.eval_scores,
        "promoted": (manifest.decision or {}).get("promote"),
        "decided": manifest.decision is not None,
    }


def invalid_summary(bad: InvalidVersion, champion: str | None) -> dict[str, Any]:
    """The `adapters list` row of a version whose manifest does not verify."""
    return {
        "version": bad.version, "valid": False, "reason": bad.reason, "created_at": None,
        "champion": bad.version == champion, "parent": None, "dataset_fingerprint": None, "steps": None,
        "final_loss": None, "eval_scores": {}, "promoted": None, "decided": None,
    }
