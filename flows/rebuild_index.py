"""Flow `rebuild_index` (manual): a full rebuild into a new index generation.

The same story as refresh-index (tasks/knowledge/refresh.py) with full=True, run as its subflow, under the
same index lock: every landed document is indexed into a fresh collection
(embeddings come from the cache where the text is unchanged) -> the golden-set retrieval eval gates it ->
the alias flips only if recall@k holds up; the previous generation is kept for `hybridops index rollback`.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from hybridops.flows.refresh_index import RefreshParams, refresh_index
from hybridops.tasks.knowledge.refresh_report import RefreshReport


class RebuildParams(BaseModel):
    """What the UI's run form shows for rebuild-index."""

    verify: bool = Field(False, description="Also deep-check every indexed object against the landing zone.")
    allow_mass_delete: bool = Field(False, description="Confirm a rebuild that drops more than "
                                    "settings.refresh_max_delete_share of the live index's documents.")


@flow(name="rebuild_index")
def rebuild_index(params: RebuildParams = RebuildParams()) -> RefreshReport:
    """Build a new index generation from the landing zone and flip the alias if it passes the gate."""
    return refresh_index(RefreshParams(full=True, verify=params.verify, allow_mass_delete=params.allow_mass_delete))


if __name__ == "__main__":
    rebuild_index()
