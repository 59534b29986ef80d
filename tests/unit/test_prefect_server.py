"""The Prefect server launcher: its in-process API client retries a SQLite lock conflict (503) in milliseconds."""

from __future__ import annotations

import asyncio
import time

import httpx

from hybridops.infra.prefect_server import QuickRetryTransport, install


class Answers(httpx.AsyncBaseTransport):
    """Answers with the given status codes in order (the last one repeats) and records every request body."""

    def __init__(self, *codes: int):
        self.codes, self.bodies = list(codes), []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(await request.aread())
        code = self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]
        return httpx.Response(code, json={"code": code})


def post(transport: httpx.AsyncBaseTransport) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
            return await client.post("/deployments/x/create_flow_run", json={"parameters": {"targeted": True}})

    return asyncio.run(go())


def test_a_lock_conflict_is_retried_at_once_with_the_same_request() -> None:
    inner = Answers(503, 503, 201)
    started = time.perf_counter()
    response = post(QuickRetryTransport(inner))
    assert response.status_code == 201
    assert len(inner.bodies) == 3 and len(set(inner.bodies)) == 1  # the same body each time
    assert time.perf_counter() - started < 1.0  # not Prefect's 2 s backoff


def test_other_answers_are_not_retried_and_a_lasting_503_is_handed_back() -> None:
    for code in (200, 404, 500):
        inner = Answers(code)
        assert post(QuickRetryTransport(inner)).status_code == code and len(inner.bodies) == 1
    inner = Answers(503)
    assert post(QuickRetryTransport(inner, retries=3, first_delay_s=0.001)).status_code == 503
    assert len(inner.bodies) == 4  # then Prefect's own client retry takes over


def test_install_wraps_the_servers_in_process_client_once() -> None:
    from prefect.server.api.clients import OrchestrationClient

    install()
    install()
    transport = OrchestrationClient()._http_client._transport
    assert isinstance(transport, QuickRetryTransport)
    assert not isinstance(transport.inner, QuickRetryTransport)
