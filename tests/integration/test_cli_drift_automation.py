"""The CLI path starts the behaviour loop too: a drifting `hybridops eval` -> drift event -> retrain-adapter run.

Only the retrain-adapter deployment (with its drift trigger) is registered for a fresh namespace, not served:
the automation creating its run is the proof; nobody needs to execute the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from hybridops.flows.orchestration.deployments import spec_for
from hybridops.flows.orchestration.events import BEHAVIOUR_DRIFT
from hybridops.flows.orchestration.run_control import prefect_client, wait_for_new_run
from hybridops.tasks.core.settings import Settings
from tests.integration.knowledge_support import cli_json
from tests.integration import test_behaviour

pytestmark = pytest.mark.slow

DOCS = test_behaviour.DOCS  # what the shared `indexed` fixture indexes

EXAMPLE_SUITE = Path(__file__).resolve().parents[2] / "examples" / "behaviour_suite.yaml"
CASES = ("refund-window", "shipping-canada", "refuse-revenue", "refuse-vacation-days")  # gold docs are indexed


def example_cases(path: Path, ids: tuple[str, ...]) -> Path:
    """A few cases of the example suite (its checks and limits unchanged), written to `path`."""
    suite = yaml.safe_load(EXAMPLE_SUITE.read_text())
    suite["cases"] = [case for case in suite["cases"] if case["id"] in ids]
    assert [case["id"] for case in suite["cases"]] == list(ids)
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.fixture
def retrain_deployment(indexed: Settings, prefect_api: str) -> Iterator[str]:  # noqa: F811
    """retrain-adapter registered with its drift trigger (as `serve` registers it, minus the runner)."""
    spec = spec_for(indexed, "retrain-adapter")
    deployment_id = spec.flow().to_deployment(**spec.options(indexed)).apply()
    try:
        yield spec.full_name(indexed)
    finally:
        with prefect_client(indexed) as client:
            for automation in client.read_resource_related_automations(f"prefect.deployment.{deployment_id}"):
                client.delete_automation(automation.id)
            client.delete_deployment(deployment_id)


def test_a_drifting_cli_eval_starts_retrain_adapter_through_the_automation(
    indexed: Settings, retrain_deployment: str, child_env, tmp_path: Path  # noqa: F811
) -> None:
    # the base model (no adapter) misses the house format; a floor of 1.0 makes any failing check drift
    cfg = indexed.model_copy(update={"drift_min_n": 2, "pass_rate_floor": 1.0, "max_new_tokens": 64})
    since = datetime.now(timezone.utc)
    out = cli_json(child_env(cfg), "eval", "--suite", str(example_cases(tmp_path / "suite.yaml", CASES)),
                   "--sample", "0")
    assert out["n"] == len(CASES) and out["adapter"] is None
    if not out["drift"]:
        pytest.skip(f"the base model passed every check here; nothing drifted: {out['checks']}")
    assert BEHAVIOUR_DRIFT in out["events"]  # the CLI sent the flow's event to the server

    run = wait_for_new_run(cfg, retrain_deployment, since, timeout=120, final=False, created_by="AUTOMATION")
    assert run.automation == f"{cfg.namespace}-retrain-adapter: on {BEHAVIOUR_DRIFT}"
    assert run.parameters["params"]["drifted_checks"] == out["drifted"]
