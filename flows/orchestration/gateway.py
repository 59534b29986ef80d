"""The production topology's edge process: the landing webhook and the answering service, without a runner.

In the embedded topology `hybridops serve` hosts both beside its runner. With a work pool the flow runs happen on
the workers, and `serve` must not run (it would take the deployments back from the pool), so this process hosts
only the two HTTP servers: MinIO's bucket notifications become `hybridops.landing.changed` events (whose
deployment triggers start refresh runs on the workers), and `hybridops ask` finds the models loaded. `hybridops up
--topology production` starts it as `gateway`; its health is the answering service's.

Usage: python -m hybridops.flows.orchestration.gateway   (settings from HYBRIDOPS_* as usual)
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from hybridops.tasks.core.settings import Settings, load_settings

log = logging.getLogger("hybridops.gateway")


def run_gateway(settings: Settings, stop: threading.Event) -> int:
    """Host the webhook (S3 landing zones) and the answering service until `stop` is set; 1 if neither could."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridops.flows.orchestration.serving import export_settings, hosted_servers

    export_settings(settings)
    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):  # the webhook's events go there
        with hosted_servers(settings, log.info) as servers:
            if not servers:
                log.error("gateway: neither the landing webhook nor the answering service could start")
                return 1
            stop.wait()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    return run_gateway(load_settings(), stop)


if __name__ == "__main__":
    sys.exit(main())
