"""Warm start of served flow runs: fork them from a prepared *forkserver* instead of spawning cold processes.

Prefect's runner starts every flow run in a fresh `spawn` process that imports torch, transformers, Great
Expectations and weaviate and loads the embedding model before any work: ~5-9 s on a 2-core box, most of a
landing's way to search. With warm start, `serve` starts a multiprocessing forkserver once, which imports
those modules, loads the embedding model and runs one contract validation; each flow run is then forked
from it and starts with all of that done (the run itself is unchanged: same flow, same engine, same state
reporting; only how its process comes to life differs).

Fork safety: the forkserver is single-threaded, never opens a Weaviate/S3/Prefect connection, and runs
torch with ONE intra-op thread, so no OpenMP pool exists to be broken by fork (forking after torch ran a
multi-threaded op hangs the child; measured). Children set their own torch threads as usual.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable

from hybridops.tasks.core.settings import Settings

log = logging.getLogger(__name__)

PRELOAD = (
    "__main__",
    "prefect.flow_engine",
    "torch",
    "transformers",
    "great_expectations",
    "weaviate",
    "peft",
    "hybridops.tasks.knowledge.refresh",
    "hybridops.tasks.knowledge.search",
    "hybridops.flows.refresh_index",
    "hybridops.flows.watch_landing",
    "hybridops.flows.evaluate_behaviour",
    "hybridops.flows.retrain_adapter",
    "hybridops.flows.orchestration.warm_start_preload",  # last: warms up with everything imported
)
"""Imported once by the forkserver; a module that fails to import is skipped (runs import what they need)."""


def warm_up(settings: Settings) -> None:
    """Load the embedding model (one torch thread), run one contract validation and, with an S3 store, make one
    S3 client (no request), for every forked run."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no rayon pool across fork
    try:
        import tqdm

        tqdm.tqdm.monitor_interval = 0  # no tqdm monitor thread in a process that forks
        from hybridops.tasks.knowledge.document_contract import make_candidate, validate_documents
        from hybridops.tasks.knowledge.embeddings import load_embedder

        load_embedder(settings.model_copy(update={"torch_threads": 1})).embed(["warm up"])
        validate_documents([make_candidate("warm-up.md", b"# Warm up\n\nA document.", "0", settings)], settings)
        if settings.s3_credentials():  # explicit keys: making a client resolves nothing over the network
            from hybridops.tasks.core.object_store import s3_client

            s3_client(settings)  # boto3 imported, the S3 service model parsed: ~0.25 s less for every S3 run
    except Exception as exc:  # noqa: BLE001 - warming is an optimisation; runs load what they need themselves
        log.warning("warm start: preparing the forkserver failed, runs will load models themselves: %s", exc)


class _ForkserverMultiprocessing:
    """Stands in for `multiprocessing` inside prefect.flow_engine: every context it asks for is the forkserver."""

    def __init__(self, context: multiprocessing.context.BaseContext):
        self._context = context

    def get_context(self, method: str | None = None) -> multiprocessing.context.BaseContext:
        return self._context

    def __getattr__(self, name: str):
        return getattr(multiprocessing, name)


def import_flow(module: str, attr: str, task_runner=None):
    """A flow by its import path (runs in the child), optionally with another task runner."""
    flow = getattr(importlib.import_module(module), attr)
    return flow.with_options(task_runner=task_runner) if task_runner is not None else flow


def _reduce_flow(flow) -> tuple:
    """Pickle a module-level flow as "import it".

    cloudpickle would copy the flow's function by value with only the globals its body names, so types used
    only in annotations (pydantic parameter models under `from __future__ import annotations`) could not be
    resolved when the child validates parameters.
    """
    module = sys.modules.get(getattr(flow.fn, "__module__", ""))
    for attr, value in (vars(module).items() if module else ()):
        if value is flow:
            return import_flow, (module.__name__, attr)
        if type(value) is type(flow) and getattr(value, "fn", None) is flow.fn:
            return import_flow, (module.__name__, attr, flow.task_runner)
    return flow.__reduce_ex__(2)


def enable(modules: Iterable[str] = PRELOAD) -> None:
    """Start the forkserver now (it warms up from the settings in os.environ) and make the runner fork from it."""
    import copyreg
    from multiprocessing import forkserver

    import prefect.flow_engine
    from prefect.flows import Flow

    copyreg.pickle(Flow, _reduce_flow)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(modules))
    forkserver.ensure_running()  # pay imports and model loading at startup, not on the first event
    prefect.flow_engine.multiprocessing = _ForkserverMultiprocessing(context)  # type: ignore[assignment]
