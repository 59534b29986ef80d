"""`prefect server start`, with the server's own API calls retried quickly (it matters on SQLite).

Measured (bench/freshness_benchmark.py, `event_to_created`): an automation-created flow run appeared 0.3 s
after its event in some landings and 2.3 s after it in most others. The server log
(PREFECT_SERVER_LOG_RETRYABLE_ERRORS) showed why: 9 of 11 `create_flow_run` calls the actions service made
failed with SQLite "database is locked". The automation's trigger commits its own transaction while the
action, started from inside it, already reads in a deferred transaction; SQLite's WAL then refuses that
read's upgrade to a write (SQLITE_BUSY_SNAPSHOT, which busy_timeout does not wait for). Prefect answers 503,
and its in-process client retries after its fixed 2 s backoff. The retried call succeeds.

This launcher gives that in-process client (prefect.server.api.clients, used by the server's services, never
by flows or the CLI) a transport that retries a 503 after 20, 40, 80... ms first; Prefect's own retry stays
behind it. Nothing else about the server changes. Both topologies start the server through this launcher;
PostgreSQL (the production one) has no such race.

Usage: python -m hybridops.infra.prefect_server --host 127.0.0.1 --port 4200
"""

from __future__ import annotations

import asyncio
import sys

import httpx

QUICK_RETRIES = 6
FIRST_DELAY_S = 0.02


class QuickRetryTransport(httpx.AsyncBaseTransport):
    """Retries a 503 answer a few times with a short doubling delay, then hands back the last answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport, retries: int = QUICK_RETRIES,
                 first_delay_s: float = FIRST_DELAY_S):
        self.inner, self.retries, self.first_delay_s = inner, retries, first_delay_s

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.retries):
            response = await self.inner.handle_async_request(request)
            if response.status_code != 503:
                return response
            await response.aclose()
            await asyncio.sleep(self.first_delay_s * 2**attempt)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def install() -> None:
    """Wrap the transport of every in-process server client (BaseClient) made from now on."""
    from prefect.server.api import clients

    original_init = clients.BaseClient.__init__
    if getattr(original_init, "quick_retry", False):
        return

    def init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        self._http_client._transport = QuickRetryTransport(self._http_client._transport)

    init.quick_retry = True
    clients.BaseClient.__init__ = init


def main(argv: list[str]) -> None:
    install()
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *argv]  # the CLI entry point reads its arguments from sys.argv
    app()


if __name__ == "__main__":
    main(sys.argv[1:])
