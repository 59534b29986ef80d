"""What a refresh did, as typed data (for the CLI's JSON) and as markdown (for the flow's artifact)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Mode = Literal["incremental", "rebuild", "targeted"]
"""incremental: the whole landing zone against the live generation; rebuild: into a new generation;
targeted: only the keys the landing change feed (or the request) named, against the live generation."""

KEYS_SHOWN = 20
"""At most this many planned keys are listed in the markdown artifact (the report holds all of them)."""


class Quarantined(BaseModel):
    doc_id: str
    reasons: list[str]
    kept_previous: bool = Field(description="An earlier good version stays indexed and searchable.")


class VerifyFindings(BaseModel):
    """Differences between index and landing zone found by a deep check (all repaired by the same run)."""

    missing: int = 0
    extra: int = 0
    stale: int = 0

    def __add__(self, other: VerifyFindings) -> VerifyFindings:
        return VerifyFindings(missing=self.missing + other.missing, extra=self.extra + other.extra,
                              stale=self.stale + other.stale)


class GateResult(BaseModel):
    """Whether a rebuilt generation may go live, from the golden-set retrieval eval."""

    status: Literal["passed", "failed", "not_applicable"]
    recall_at_k: float | None = None
    mrr: float | None = None
    live_recall_at_k: float | None = None
    floor: float
    tolerance: float
    applicable: int = 0
    reason: str = ""


class DocumentCounts(BaseModel):
    added: int = 0
    updated: int = 0
    metadata_only: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0


class ChunkCounts(BaseModel):
    embedded: int = 0
    reused: int = 0
    deleted: int = 0
    total: int = 0


class RefreshReport(BaseModel):
    """The run summary the CLI prints and the flow turns into an artifact."""

    documents: DocumentCounts
    chunks: ChunkCounts
    collection: str
    duration_s: float
    generation: int
    mode: Mode
    reason: str
    alias_flipped: bool = False
    live_collection: str | None = None
    gate: GateResult | None = None
    quarantined: list[Quarantined] = Field(default_factory=list)
    verify: VerifyFindings | None = None
    pruned_generations: list[str] = Field(default_factory=list)
    planned_keys: list[str] = Field(default_factory=list, description="The landing keys a targeted run planned "
                                    "(empty for a full reconcile or rebuild: it planned the whole landing zone).")
    feed_consumed: list[str] = Field(default_factory=list, description="Change-feed entries this run applied and "
                                     "deleted: a targeted run's planned ones; a full reconcile every one there "
                                     "when it started (a rebuild only once it went live).")


def report_markdown(report: RefreshReport, namespace: str) -> str:
    """Counts, quarantined documents with reasons, embeddings computed vs reused, duration."""
    docs, chunks = report.documents, report.chunks
    lines = [
        f"# Index refresh ({namespace})",
        "",
        f"**{report.collection}** ({report.mode}, {report.reason}) in **{report.duration_s:.1f} s**"
        + (f"; alias now points at `{report.live_collection}`" if report.alias_flipped else ""),
        "",
        "| documents | count |",
        "|---|---:|",
        *[f"| {name} | {value} |" for name, value in docs.model_dump().items()],
        "",
        "| chunks | count |",
        "|---|---:|",
        f"| embeddings computed | {chunks.embedded} |",
        f"| embeddings reused (cache or index) | {chunks.reused} |",
        f"| chunk objects deleted | {chunks.deleted} |",
        f"| chunk objects in the collection | {chunks.total} |",
    ]
    lines += ["", _feed_line(report)]
    if report.gate is not None:
        lines += ["", f"**Rebuild gate: {report.gate.status}** - {report.gate.reason}"]
    if report.verify is not None:
        v = report.verify
        lines += ["", f"**Verify:** missing {v.missing}, extra {v.extra}, stale {v.stale} (all repaired)"]
    if report.quarantined:
        lines += ["", "## Quarantined", "", "| document | reasons | previous version kept |", "|---|---|---|"]
        lines += [
            f"| `{_cell(q.doc_id)}` | {'<br>'.join(_cell(r) for r in q.reasons)} | "
            f"{'yes' if q.kept_previous else 'no'} |"
            for q in report.quarantined
        ]
    return "\n".join(lines) + "\n"


def _feed_line(report: RefreshReport) -> str:
    """What the run took from the landing change feed (a targeted run plans nothing else)."""
    entries = len(report.feed_consumed)
    if report.mode != "targeted":
        return f"**Change feed:** {entries} entries consumed" + (" (covered by planning the whole landing zone)"
                                                                  if entries else "")
    if not report.planned_keys:
        return (f"**Targeted:** nothing pending ({entries} entries consumed); an earlier run applied it, or the "
                f"entries named no documents")
    shown = ", ".join(f"`{_cell(key)}`" for key in report.planned_keys[:KEYS_SHOWN])
    more = f" and {len(report.planned_keys) - KEYS_SHOWN} more" if len(report.planned_keys) > KEYS_SHOWN else ""
    return f"**Targeted:** {len(report.planned_keys)} keys planned ({shown}{more}); {entries} feed entries consumed"


def _cell(text: str) -> str:
    """Keep a value inside its markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
