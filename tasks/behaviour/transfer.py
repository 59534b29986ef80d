"""The out-of-domain side of the promotion gate: a shipped corpus indexed in a side namespace, and its suite.

An adapter must keep the house behaviour on documents it never saw, so retrain also judges challenger and
champion on settings.transfer_suite, answered from settings.transfer_corpus (a logistics company's knowledge
base by default, never used for training). That corpus lives in its own namespace `<namespace>_transfer`
with folder landing and store under `$HOME/transfer/<namespace>/` (always folders, even when the user's
landing zone is on S3: it is a fixed corpus from the checkout), so it never mixes with the user's index or
store.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from hybridops.tasks.behaviour.suite import Suite, in_checkout, load_suite
from hybridops.tasks.core.errors import BadInputError
from hybridops.tasks.core.object_store import landing_zone
from hybridops.tasks.core.settings import Settings
from hybridops.tasks.knowledge.landing import land, landed_doc_ids, remove
from hybridops.tasks.knowledge.refresh import run_refresh

SIDE_SUFFIX = "_transfer"


def transfer_settings(settings: Settings) -> Settings | None:
    """Settings of the side namespace holding the transfer corpus, or None when the transfer gate is off.

    Everything but namespace, landing and store stays the user's (same servers, models, search knobs), so
    the transfer passages are retrieved exactly as the user's would be."""
    if settings.transfer_suite is None or settings.transfer_corpus is None:
        return None
    side = settings.home / "transfer" / settings.namespace  # namespaces sharing a home never share a mirror
    values = settings.model_dump() | {"namespace": settings.namespace + SIDE_SUFFIX,
                                      "landing": str(side / "landing"), "store": str(side / "store")}
    try:
        return Settings.model_validate(values)  # validated (namespace rules), no env re-read
    except ValidationError as exc:
        raise BadInputError(
            f"namespace {settings.namespace!r} leaves no room for its transfer side namespace "
            f"({settings.namespace + SIDE_SUFFIX!r}): use a namespace of at most {40 - len(SIDE_SUFFIX)} "
            f"characters, or set HYBRIDOPS_TRANSFER_SUITE= (empty) to switch the transfer gate off "
            f"({exc.errors()[0]['msg']})") from None


def load_transfer_suite(settings: Settings) -> Suite | None:
    """The transfer suite (None when the gate is off); a missing corpus or suite fails here, before training."""
    if transfer_settings(settings) is None:
        return None
    corpus = in_checkout(settings.transfer_corpus)
    if not corpus.is_dir():
        raise BadInputError(f"transfer corpus not found: {corpus} (set HYBRIDOPS_TRANSFER_CORPUS, or set "
                            f"HYBRIDOPS_TRANSFER_SUITE= empty to switch the transfer gate off)")
    return load_suite(in_checkout(settings.transfer_suite))


def prepare_transfer_index(settings: Settings) -> Settings:
    """Mirror the transfer corpus into the side landing folder and refresh the side index; returns the side
    settings. Idempotent and incremental: after the first run nothing changed, so nothing is embedded."""
    side = transfer_settings(settings)
    if side is None:
        raise BadInputError("the transfer gate is off (transfer_suite or transfer_corpus is not set)")
    landing = Path(side.landing_uri)
    landing.mkdir(parents=True, exist_ok=True)
    Path(side.store_uri).mkdir(parents=True, exist_ok=True)
    zone = landing_zone(side)
    shipped = {f.doc_id for f in land(zone, [in_checkout(settings.transfer_corpus)])}
    for stale in sorted(landed_doc_ids(zone) - shipped):  # a document the corpus no longer ships
        remove(zone, stale)
    run_refresh(side, allow_mass_delete=True)  # a mirror of a shipped folder: a new corpus replaces the old
    return side

