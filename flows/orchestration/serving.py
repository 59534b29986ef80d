"""Serving the deployments from one long-running process (`hybridops serve`), tuned for event latency.

`serve` exports the settings to the environment (flow runs rebuild them from it), optionally enables warm
start (flows/orchestration/warm_start.py), registers every deployment with a runner polling every `runner_poll_seconds`, queues a watch-landing run, and runs until SIGTERM.
Beside the runner it hosts the landing webhook (flows/orchestration/landing_webhook.py) when the landing
zone is on S3, so bucket notifications reach the change feed while `serve` runs (MinIO queues them otherwise),
and the answering service (flows/orchestration/answer_service.py), so `hybridops ask` finds the models loaded.
`pause_on_shutdown=False`: stopping `serve` never pauses schedules or triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

from hybridops.tasks.core.settings import Settings, PROJECT_ROOT


def export_settings(settings: Settings) -> None:
    """Flow runs rebuild their settings from the environment: make this process's settings theirs."""
    os.environ.update(settings.as_env())
    os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def serve(settings: Settings, limit: int = 8, on_ready=lambda names: None, on_event=lambda message: None) -> None:
    """Register every deployment of this namespace and run their flow runs until SIGTERM / Ctrl-C."""
    export_settings(settings)
    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hybridops.flows.orchestration.deployments import deployment_specs, start_watcher

    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):
        specs = deployment_specs(settings)
        if settings.warm_start:
            from hybridops.flows.orchestration import warm_start

            warm_start.enable()
        runner = Runner(name=f"{settings.namespace}-serve", pause_on_shutdown=False,
                        query_seconds=settings.runner_poll_seconds, limit=limit)
        runner.handle_sigterm = lambda signum, frame: _stop_soon(runner)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, lambda signum, frame: _stop_soon(runner))
        for spec in specs:
            runner.add_flow(spec.flow(), **spec.options(settings))
        with hosted_servers(settings, on_event):  # inside temporary_settings: the webhook's events reach this server
            start_watcher(settings)
            on_ready([spec.name(settings) for spec in specs])
            try:
                asyncio.run(runner.start())
            except KeyboardInterrupt:
                pass


@contextlib.contextmanager
def hosted_servers(settings: Settings, on_event=lambda message: None) -> Iterator[list]:
    """The HTTP servers hosted beside the flow runs (`serve`, the production topology's gateway): the landing
    webhook (S3 landing zones) and the answering service, each when it could start; stopped on the way out."""
    from hybridops.flows.orchestration.answer_service import start_answer_service
    from hybridops.flows.orchestration.landing_webhook import start_landing_webhook

    servers = [server for server in (start_landing_webhook(settings, on_event), start_answer_service(settings, on_event))
               if server is not None]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def _stop_soon(runner) -> None:
    """SIGTERM / Ctrl-C: cancel the runs in flight (Cancelled in the UI) and stop polling; a second Ctrl-C quits.

    Prefect 3.8.8's own SIGTERM handler calls the async `stop` without awaiting it, leaving runs running.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not serving yet
        raise KeyboardInterrupt from None
    loop.create_task(runner.astop())


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit in this (main) thread, so `finally` blocks stop a child `serve`."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class ServeProcess:
    """`hybridops serve` as a child process (demo, benchmarks, tests): started, awaited until ready, stopped."""

    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None):
        self.settings = settings
        self.extra_env = extra_env or {}
        self.log_path = settings.home / "logs" / f"serve-{settings.namespace}.log"
        self.process: subprocess.Popen | None = None
        self.deployments: list[str] = []

    def start(self, timeout: float = 240) -> ServeProcess:
        """Start serving and return once every deployment is registered (the ready line on stdout)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDOPS_")}
        env |= self.settings.as_env() | {"PREFECT_API_URL": self.settings.prefect_api_url,
                                         "PYTHONUNBUFFERED": "1"} | self.extra_env
        command = [sys.executable, "-m", "hybridops.flows.cli", "serve", "--json"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True,
                                            cwd=PROJECT_ROOT)
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = ready[0].strip() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"`hybridops serve` did not become ready in {timeout:.0f} s; see {self.log_path}")
        self.deployments = json.loads(line)["serving"]
        threading.Thread(target=self._drain_stdout, daemon=True).start()  # a full pipe would block `serve`
        return self

    def _drain_stdout(self) -> None:
        with open(self.log_path, "ab") as log:
            for line in self.process.stdout:
                log.write(line)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to `serve` (its runner cancels the runs in flight), then SIGKILL whatever is left of its group."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group is ours alone (start_new_session)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
